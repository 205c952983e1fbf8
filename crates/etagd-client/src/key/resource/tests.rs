use super::*;

fn canonical(scheme: &str, host: &str, target: &str) -> String {
    ResourceKey::new(scheme, host, target).canonical().to_owned()
}

fn request(target: &str, lines: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().uri(target);
    for (name, value) in lines {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid test request").into_parts().0
}

/// RFC 3986 section 6.2.2: case, percent-encoding and (for the key) query order normalised.
#[test]
fn canonical_forms() {
    let cases = [
        (("http", "Example.COM", "/a?b=1&a=2"), "GET\nhttp\nexample.com\n/a\na=2&b=1"),
        (("http", "example.com:80", ""), "GET\nhttp\nexample.com\n/\n"),
        (("https", "example.com:443", "/"), "GET\nhttps\nexample.com\n/\n"),
        (("http", "example.com:8080", "/"), "GET\nhttp\nexample.com:8080\n/\n"),
        (("http", "h", "/%7euser/%2f?&&x=%7e&"), "GET\nhttp\nh\n/~user/%2F\nx=~"),
        (("http", "h", "/p?a=2&b=0&a=1"), "GET\nhttp\nh\n/p\na=2&a=1&b=0"),
        (("http", "h", "/%zz%4"), "GET\nhttp\nh\n/%25zz%254\n"),
        (("http", "h", "/é?q=ü"), "GET\nhttp\nh\n/%C3%A9\nq=%C3%BC"),
        (("http", "h", "/%c3%a9"), "GET\nhttp\nh\n/%C3%A9\n"),
        (("http", "h", "/a b\n\"c\""), "GET\nhttp\nh\n/a%20b%0A%22c%22\n"),
        (("http", "h", "/a/../b/./c"), "GET\nhttp\nh\n/a/../b/./c\n"),
        (("HTTPS", "h", "/"), "GET\nhttps\nh\n/\n"),
    ];
    for ((scheme, host, target), expected) in cases {
        assert_eq!(canonical(scheme, host, target), expected, "{scheme} {host} {target}");
    }
}

#[test]
fn normalising_twice_changes_nothing() {
    for target in ["/%7e%2f%zz/é?b=%41&a=1&&", "/a b?x=\"y\"", "/%", "/x?%", "/x?a=%2"] {
        let once = ResourceKey::new("http", "h", target);
        let twice = ResourceKey::new("http", "h", &once.target());
        assert_eq!(once, twice, "{target}");
        assert_eq!(ResourceKey::from_url(&once.url()).unwrap(), once, "{target}");
    }
}

/// The scheme and host come from forwarding headers only when the peer is trusted (RFC 7239 section 8.3:
/// forwarded values are only as good as the proxy that wrote them).
#[test]
fn requests_name_their_resource() {
    use Forwarding::{Trusted, Untrusted};
    type Case = (&'static str, &'static [(&'static str, &'static str)], Forwarding, &'static str);
    let cases: &[Case] = &[
        ("/api/servers", &[("host", "api.example.com")], Untrusted, "http://api.example.com/api/servers"),
        ("/a?b=2&a=1", &[("host", "API.example.com:80")], Untrusted, "http://api.example.com/a?a=1&b=2"),
        ("/x", &[("host", "h"), ("x-forwarded-proto", "https")], Trusted, "https://h/x"),
        ("/x", &[("host", "h"), ("x-forwarded-proto", "HTTPS")], Trusted, "https://h/x"),
        ("/x", &[("host", "h"), ("x-forwarded-proto", " HTTPS , http")], Trusted, "https://h/x"),
        ("/x", &[("host", "h"), ("x-forwarded-proto", "gopher")], Trusted, "http://h/x"),
        ("/x", &[("host", "h"), ("x-forwarded-proto", "https")], Untrusted, "http://h/x"),
        ("/x", &[("host", "h"), ("x-forwarded-host", "evil.example")], Untrusted, "http://h/x"),
        ("/x", &[("host", "h"), ("x-forwarded-host", "shop.example, h")], Trusted, "http://shop.example/x"),
        ("https://h2.example/x", &[], Untrusted, "https://h2.example/x"),
        ("https://h2.example/x", &[("x-forwarded-proto", "http")], Trusted, "http://h2.example/x"),
        ("http://absolute.example/x", &[("host", "header.example")], Untrusted, "http://header.example/x"),
        ("/%61pi/x", &[("host", "h")], Untrusted, "http://h/api/x"),
    ];
    for (target, lines, forwarding, url) in cases {
        let key = ResourceKey::from_request(&request(target, lines), *forwarding).unwrap();
        assert_eq!(key, ResourceKey::from_url(url).unwrap(), "{target} {lines:?} {forwarding:?}");
    }
    assert_eq!(ResourceKey::from_request(&request("/x", &[]), Untrusted), Err(KeyError::NoHost));
    assert_eq!(ResourceKey::from_request(&request("/x", &[("host", " ")]), Untrusted), Err(KeyError::NoHost));
}

#[test]
fn urls_name_the_same_resource_as_requests() {
    let a = ResourceKey::from_url("http://API.example.com:80/api/servers?page=2&a=1").unwrap();
    let b = ResourceKey::new("http", "api.example.com", "/api/servers?a=1&page=2");
    assert_eq!(a, b);
    assert_eq!(ResourceKey::from_url("HTTP://h/x#frag").unwrap(), ResourceKey::new("http", "h", "/x"));
    assert_eq!(ResourceKey::from_url("http://h?q=1").unwrap(), ResourceKey::new("http", "h", "/?q=1"));
    assert_eq!(ResourceKey::from_url("http://h/é").unwrap(), ResourceKey::new("http", "h", "/%C3%A9"));
    assert_eq!(ResourceKey::from_url("http://h/a/../b").unwrap(), ResourceKey::new("http", "h", "/a/../b"));
    for bad in ["ftp://x/", "not a url", "/relative", "http:///path", "http://user@h/", "http://h x/"] {
        assert!(ResourceKey::from_url(bad).is_err(), "{bad}");
    }
}

/// RFC 3986 section 5.2 (reference resolution, 5.4's examples in part) and RFC 9111 section 4.4 (same host only).
#[test]
fn references_resolve_against_the_request() {
    let base = ResourceKey::from_url("http://h/a/b/c?q").unwrap();
    let cases = [
        ("/x", Some("http://h/x")),
        ("x", Some("http://h/a/b/x")),
        ("./x", Some("http://h/a/b/x")),
        ("../x", Some("http://h/a/x")),
        ("../../../../x", Some("http://h/x")),
        ("?y", Some("http://h/a/b/c?y")),
        ("", Some("http://h/a/b/c?q")),
        ("#f", Some("http://h/a/b/c?q")),
        ("/a/./b/../x?z=1", Some("http://h/a/x?z=1")),
        ("http://H:80/x", Some("http://h/x")),
        ("//h/x", Some("http://h/x")),
        ("http://other/x", None),
        ("//other/x", None),
        ("https://h/x", None),
        ("http://h:8080/x", None),
        ("ftp://h/x", None),
    ];
    for (reference, expected) in cases {
        let got = base.resolve(reference).map(|key| key.url());
        assert_eq!(got.as_deref(), expected, "{reference:?}");
    }
    let v6 = ResourceKey::from_url("http://[::1]:8080/a").unwrap();
    assert_eq!(v6.resolve("/b").map(|k| k.url()).as_deref(), Some("http://[::1]:8080/b"));
    assert_eq!(v6.resolve("http://[::1]/b"), None);
}

#[test]
fn accessors_read_the_canonical_form() {
    let key = ResourceKey::from_url("https://Shop.example:8443/p%7e?b=1&a=2").unwrap();
    assert_eq!((key.scheme(), key.host(), key.path(), key.query()), ("https", "shop.example:8443", "/p~", "a=2&b=1"));
    assert_eq!(key.url(), "https://shop.example:8443/p~?a=2&b=1");
}

/// RFC 9110 section 12.5.5: each Vary variant is its own entry.
#[test]
fn variants_depend_on_varied_headers_only() {
    let r = ResourceKey::new("http", "h", "/");
    let mut gzip = HeaderMap::new();
    gzip.insert("accept-encoding", " gzip ".parse().unwrap());
    gzip.insert("user-agent", "x".parse().unwrap());
    let mut gzip2 = HeaderMap::new();
    gzip2.insert("accept-encoding", "gzip".parse().unwrap());
    let none = HeaderMap::new();
    let vary = vec!["accept-encoding".to_owned()];
    assert_eq!(r.variant(&vary, &gzip), r.variant(&vary, &gzip2));
    assert_ne!(r.variant(&vary, &gzip), r.variant(&vary, &none));
    assert_ne!(r.variant(&vary, &none), r.digest());

    // RFC 9111 section 4.1: whitespace around list commas and case in case-insensitive lists do not matter;
    // several lines are one list (RFC 9110 section 5.3).
    let languages = vec!["accept-language".to_owned()];
    let with = |values: &[&str]| {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("accept-language", value.parse().unwrap());
        }
        r.variant(&languages, &headers)
    };
    assert_eq!(with(&["eN, De"]), with(&["en,de"]));
    assert_eq!(with(&["en", "de"]), with(&["en, de"]));
    assert_ne!(with(&["en, de"]), with(&["de, en"]), "order is significant");
    let agents = vec!["user-agent".to_owned()];
    let agent = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", value.parse().unwrap());
        r.variant(&agents, &headers)
    };
    assert_ne!(agent("Bot/1"), agent("bot/1"), "other fields keep their case");
}
