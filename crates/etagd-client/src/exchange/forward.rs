//! The headers of requests the exchange sends upstream: the forwarding headers etagd owns, and the client's
//! conditionals replaced when the cache asks for a response to store or revalidate.

use std::net::IpAddr;

use http::header::{ACCEPT_ENCODING, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::RequestContext;
use crate::entry::EntryMeta;
use crate::key::{Forwarding, ResourceKey};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Request headers that frameworks honour to decide the scheme, host, port, path, client address or method
/// they render for, and that no cache key covers. From a peer that is not a trusted proxy they are dropped
/// before the origin sees them, so a client cannot make the origin render a page for another host and have it
/// stored for everyone (`ExchangeConfig::untrusted_headers` holds the list in force).
pub const UNTRUSTED_FORWARDING_HEADERS: [&str; 18] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-server",
    "x-original-url",
    "x-original-host",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "x-url-scheme",
    "front-end-https",
];

/// The client's headers as the origin gets them: untrusted forwarding headers dropped, then
/// `X-Forwarded-For` (the peer appended), `X-Forwarded-Proto` and `X-Forwarded-Host` set from what the request
/// is keyed under, so the origin renders for exactly the resource the cache stores.
pub(crate) fn outbound(
    client: &HeaderMap,
    key: Option<&ResourceKey>,
    context: &RequestContext,
    untrusted: &[HeaderName],
) -> HeaderMap {
    let mut headers = client.clone();
    let trusted = context.forwarding == Forwarding::Trusted;
    if !trusted {
        for name in untrusted {
            headers.remove(name);
        }
    }
    if let Some(peer) = context.peer {
        append_forwarded_for(&mut headers, peer.ip());
    }
    if let Some(key) = key {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if key.scheme() == "https" { "https" } else { "http" }),
        );
        if let Ok(host) = HeaderValue::from_str(key.host()) {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    headers
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    let chain = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
    let value = if chain.is_empty() { ip.to_string() } else { format!("{chain}, {ip}") };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Turns outbound headers into those of a request for a response to store: without the client's conditionals
/// (the cache answers them itself from what it stores), and without `Accept-Encoding` when etagd compresses
/// (one identity fill serves every client; an origin that compressed per client would split the entry).
pub(crate) fn for_fill(headers: &mut HeaderMap, compressing: bool) {
    headers.remove(IF_NONE_MATCH);
    headers.remove(IF_MODIFIED_SINCE);
    // The cache stores whole representations and answers ranges from them.
    headers.remove(http::header::RANGE);
    headers.remove(http::header::IF_RANGE);
    if compressing {
        headers.remove(ACCEPT_ENCODING);
    }
}

/// Turns outbound headers into those of a conditional request about a stored entry (RFC 9111 section 4.3.1):
/// the entry's own validators replace the client's. A tag etagd minted means nothing to the origin, so only
/// the origin's own is sent.
pub(crate) fn for_revalidation(headers: &mut HeaderMap, meta: &EntryMeta, compressing: bool) {
    for_fill(headers, compressing);
    if !meta.minted {
        if let Ok(value) = HeaderValue::from_str(&meta.etag) {
            headers.insert(IF_NONE_MATCH, value);
        }
    }
    if let Some(value) = meta.last_modified().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(IF_MODIFIED_SINCE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::context::TrustedProxies;

    fn names() -> Vec<HeaderName> {
        UNTRUSTED_FORWARDING_HEADERS.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        lines.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    /// RFC 7239 section 8.3 and RFC 9110 section 7.6.3: forwarding fields are only as trustworthy as the proxy
    /// that wrote them, so those from an untrusted peer never reach the origin.
    #[test]
    fn untrusted_forwarding_headers_never_reach_the_origin() {
        let client = map(&[
            ("host", "shop.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-original-url", "/admin"),
            ("forwarded", "host=evil.example"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ]);
        let key = ResourceKey::new("http", "shop.example", "/");
        let peer = Some("192.0.2.7:4000".parse().unwrap());
        let untrusted = RequestContext::new(peer, &TrustedProxies::default());
        let out = outbound(&client, Some(&key), &untrusted, &names());
        assert_eq!(out["x-forwarded-host"], "shop.example");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-for"], "192.0.2.7");
        assert!(!out.contains_key("x-original-url") && !out.contains_key("forwarded"));
        assert_eq!(out["traceparent"], client["traceparent"], "trace context passes through");

        let trusted = RequestContext::new(peer, &TrustedProxies::parse(["192.0.2.0/24"]).unwrap());
        let key = ResourceKey::new("https", "shop.example", "/");
        let out = outbound(&client, Some(&key), &trusted, &names());
        assert_eq!(out["x-forwarded-for"], "6.6.6.6, 192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["forwarded"], "host=evil.example", "a trusted proxy's fields are its own");
    }
}
