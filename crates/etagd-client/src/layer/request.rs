//! The request side of the layer: which requests it may answer from the cache, and the cache key of those it
//! may, built with the same schema (`key`) as the sidecar so both name a resource alike.

use http::header::{AUTHORIZATION, HOST, IF_MODIFIED_SINCE, IF_NONE_MATCH, RANGE};
use http::{HeaderMap, Request, Uri};

use crate::cacheability;
use crate::conditional;
use crate::key::ResourceKey;
use crate::reply::Fwd;

/// The de facto header a TLS-terminating proxy in front of the service uses to say how the client connected.
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Why a GET or HEAD request goes to the inner service without the cache being consulted or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bypass {
    /// `Cache-Control: no-cache` or `Pragma: no-cache`: a stored response may not be used without
    /// validation (RFC 9111 section 5.2.1.4).
    NoCache,
    /// Credentials: the answer may depend on who asks (RFC 9111 section 3.5), and a refusal to store it
    /// must not turn the URL into a pass for anonymous callers.
    Authorization,
    /// A range request: the cache stores whole representations only, and a 206 is never stored.
    Range,
    /// `If-Match`, `If-Unmodified-Since` or `If-Range`: preconditions on the current state of the resource,
    /// which only the service can evaluate (RFC 9110 section 13.2.1).
    Preconditions,
}

impl Bypass {
    /// The `Cache-Status` forward reason.
    pub(crate) fn fwd(self) -> Fwd {
        match self {
            Bypass::NoCache => Fwd::Request,
            Bypass::Authorization | Bypass::Range | Bypass::Preconditions => Fwd::Bypass,
        }
    }

    /// The `Cache-Status` detail.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Bypass::NoCache => "no-cache",
            Bypass::Authorization => "authorization",
            Bypass::Range => "range",
            Bypass::Preconditions => "preconditions",
        }
    }
}

/// Whether a GET or HEAD request must bypass the cache, and why.
pub(crate) fn bypass(headers: &HeaderMap) -> Option<Bypass> {
    if cacheability::request_bypasses(headers) {
        Some(Bypass::NoCache)
    } else if headers.contains_key(AUTHORIZATION) {
        Some(Bypass::Authorization)
    } else if headers.contains_key(RANGE) {
        Some(Bypass::Range)
    } else if conditional::has_origin_preconditions(headers) {
        Some(Bypass::Preconditions)
    } else {
        None
    }
}

/// The cache key of a request: the scheme the client used, the host it asked for, and the request target.
pub(crate) fn resource_key<B>(request: &Request<B>) -> ResourceKey {
    let uri = request.uri();
    let headers = request.headers();
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    ResourceKey::new(scheme(headers, uri), &host(headers, uri), target)
}

/// `X-Forwarded-Proto` when a proxy in front set it, else the URI's own scheme (absolute-form or HTTP/2), else
/// `http`: an in-process service usually sits behind the proxy that terminates TLS.
fn scheme<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> &'a str {
    let forwarded = headers
        .get(X_FORWARDED_PROTO)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(|value| value.trim_matches([' ', '\t']))
        .filter(|value| value.eq_ignore_ascii_case("http") || value.eq_ignore_ascii_case("https"));
    forwarded.or(uri.scheme_str()).unwrap_or("http")
}

/// The `Host` header (HTTP/1.1), else the URI authority (HTTP/2 `:authority`, absolute-form), else empty: every
/// host-less request names the same host, which is right for one service.
fn host(headers: &HeaderMap, uri: &Uri) -> String {
    headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()))
        .unwrap_or("")
        .to_owned()
}

/// Removes the client's own conditionals before asking the inner service for a response to store: the layer
/// answers them itself from the stored entry, and a 304 from the service could not be stored.
pub(crate) fn strip_conditionals(headers: &mut HeaderMap) {
    headers.remove(IF_NONE_MATCH);
    headers.remove(IF_MODIFIED_SINCE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn request(uri: &str, lines: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in lines {
            builder = builder.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn keys() {
        let check = |uri: &str, lines: &[(&str, &str)], expected: &str| {
            let key = resource_key(&request(uri, lines));
            assert_eq!(key, ResourceKey::from_url(expected).unwrap(), "{uri} {lines:?}");
        };
        check("/api/servers", &[("host", "api.example.com")], "http://api.example.com/api/servers");
        check("/api/servers?b=2&a=1", &[("host", "API.example.com:80")], "http://api.example.com/api/servers?a=1&b=2");
        check("/x", &[("host", "h"), ("x-forwarded-proto", "https")], "https://h/x");
        check("/x", &[("host", "h"), ("x-forwarded-proto", "HTTPS, http")], "https://h/x");
        check("/x", &[("host", "h"), ("x-forwarded-proto", " https ")], "https://h/x");
        check("/x", &[("host", "h"), ("x-forwarded-proto", "gopher")], "http://h/x");
        check("https://h2.example/x", &[], "https://h2.example/x");
        check("https://h2.example/x", &[("x-forwarded-proto", "http")], "http://h2.example/x");
        check("http://absolute.example/x", &[("host", "header.example")], "http://header.example/x");
        check("/", &[("host", "h:8080")], "http://h:8080/");
        // Without a host every request names the same empty host.
        assert_eq!(resource_key(&request("/x", &[])), ResourceKey::new("http", "", "/x"));
        assert_ne!(resource_key(&request("/x", &[("host", "h")])), resource_key(&request("/y", &[("host", "h")])));
    }

    #[test]
    fn bypasses() {
        let check = |lines: &[(&str, &str)], expected: Option<Bypass>| {
            assert_eq!(bypass(request("/", lines).headers()), expected, "{lines:?}");
        };
        check(&[], None);
        check(&[("if-none-match", "\"a\"")], None);
        check(&[("if-modified-since", "Tue, 24 Nov 2026 10:00:00 GMT")], None);
        check(&[("cache-control", "max-age=0")], None);
        check(&[("cache-control", "no-store")], None);
        check(&[("cache-control", "no-cache")], Some(Bypass::NoCache));
        check(&[("pragma", "no-cache")], Some(Bypass::NoCache));
        check(&[("authorization", "Bearer t")], Some(Bypass::Authorization));
        check(&[("range", "bytes=0-9")], Some(Bypass::Range));
        check(&[("if-match", "\"a\"")], Some(Bypass::Preconditions));
        check(&[("if-unmodified-since", "Tue, 24 Nov 2026 10:00:00 GMT")], Some(Bypass::Preconditions));
        check(&[("if-range", "\"a\""), ("range", "bytes=0-9")], Some(Bypass::Range));
    }

    #[test]
    fn conditionals_are_stripped() {
        let mut headers =
            request("/", &[("if-none-match", "\"a\""), ("if-modified-since", "x"), ("accept", "text/html")])
                .into_parts()
                .0
                .headers;
        strip_conditionals(&mut headers);
        assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["accept"]);
    }
}
