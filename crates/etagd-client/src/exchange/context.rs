//! What the exchange knows about a request besides the request itself: who sent it, whether its forwarding
//! headers are believed, and where the origin's informational (1xx) answers go.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use ipnet::IpNet;

use crate::key::Forwarding;

/// The peers whose forwarding headers etagd believes: CIDR blocks, e.g. the ingress's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A trusted-proxy entry that is not an address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trusted proxy {0:?} is not an IP address or CIDR block (write e.g. 10.0.0.0/8 or 127.0.0.1)")]
pub struct BadTrustedProxy(pub String);

impl TrustedProxies {
    /// Parses CIDR blocks or single addresses (`10.0.0.0/8`, `127.0.0.1`, `::1`).
    pub fn parse<I, S>(entries: I) -> Result<Self, BadTrustedProxy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadTrustedProxy(entry.to_owned()))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Every peer: for an in-process service whose only callers are proxies the operator runs.
    pub fn everyone() -> Self {
        Self(vec!["0.0.0.0/0".parse().expect("valid"), "::/0".parse().expect("valid")])
    }

    /// Whether the list is empty (nobody is trusted).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trust decision for a peer. An unknown peer (the layer without connection info) is trusted only when
    /// every address is.
    pub fn decide(&self, peer: Option<SocketAddr>) -> Forwarding {
        let ip = peer.map(|peer| peer.ip());
        let trusted = match ip {
            Some(ip) => {
                // An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                self.0.iter().any(|net| net.contains(&ip))
            }
            None => *self == Self::everyone(),
        };
        if trusted { Forwarding::Trusted } else { Forwarding::Untrusted }
    }
}

/// Receives the informational (1xx) responses the origin sends before its final answer, e.g. `103 Early Hints`
/// (RFC 8297). An upstream that can see them finds the hook in the request's extensions.
#[derive(Clone)]
pub struct InformationalHook(Arc<InformationalFn>);

type InformationalFn = dyn Fn(StatusCode, &HeaderMap) + Send + Sync;

impl InformationalHook {
    /// A hook calling `f` for each informational response.
    pub fn new(f: impl Fn(StatusCode, &HeaderMap) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Hands one informational response to the hook.
    pub fn call(&self, status: StatusCode, headers: &HeaderMap) {
        (self.0)(status, headers);
    }
}

impl fmt::Debug for InformationalHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InformationalHook")
    }
}

/// One request's context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The connection's peer, when the front knows it.
    pub peer: Option<SocketAddr>,
    /// Whether the peer's forwarding headers are believed (see [`TrustedProxies::decide`]).
    pub forwarding: Forwarding,
    /// Where the origin's 1xx answers go, if anywhere.
    pub informational: Option<InformationalHook>,
}

impl RequestContext {
    /// The context of a request from `peer`, judged against `trusted`.
    pub fn new(peer: Option<SocketAddr>, trusted: &TrustedProxies) -> Self {
        Self { peer, forwarding: trusted.decide(peer), informational: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_judged_by_their_address() {
        let trusted = TrustedProxies::parse(["10.0.0.0/8", "127.0.0.1", " ", "::1"]).unwrap();
        let peer = |text: &str| Some(text.parse::<SocketAddr>().unwrap());
        assert_eq!(trusted.decide(peer("10.1.2.3:5000")), Forwarding::Trusted);
        assert_eq!(trusted.decide(peer("127.0.0.1:5000")), Forwarding::Trusted);
        assert_eq!(trusted.decide(peer("[::ffff:10.0.0.9]:5000")), Forwarding::Trusted);
        assert_eq!(trusted.decide(peer("[::1]:5000")), Forwarding::Trusted);
        assert_eq!(trusted.decide(peer("127.0.0.2:5000")), Forwarding::Untrusted);
        assert_eq!(trusted.decide(None), Forwarding::Untrusted);
        assert_eq!(TrustedProxies::default().decide(peer("10.1.2.3:1")), Forwarding::Untrusted);
        assert_eq!(TrustedProxies::everyone().decide(None), Forwarding::Trusted);
        assert_eq!(TrustedProxies::parse(["10.0.0.0/33"]), Err(BadTrustedProxy("10.0.0.0/33".into())));
        assert_eq!(TrustedProxies::parse(["ingress"]), Err(BadTrustedProxy("ingress".into())));
    }
}
