//! [`ResourceKey`]: the one normaliser that names a resource, whether it comes from a request, an operator's URL
//! or a `Location` header, and the one place where a forwarded header decides the scheme or host.

use http::HeaderMap;
use http::header::HOST;
use http::request::Parts;

use super::{Digest, KeyError};

/// Set by a TLS-terminating proxy: the scheme the client used.
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
/// Set by a proxy that rewrites `Host`: the host the client asked for.
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Whether the peer's forwarding headers (`X-Forwarded-Proto`, `X-Forwarded-Host`) are believed.
///
/// A client can write any header. Only a proxy the operator trusts (the ingress in front) may decide the scheme
/// and host a resource is keyed under; from anyone else those headers are ignored here and replaced before the
/// request reaches the origin, so the origin renders from exactly what the key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// The peer is a trusted proxy: its forwarding headers name the scheme and host, and are keyed.
    Trusted,
    /// The peer is a client: its forwarding headers are ignored.
    Untrusted,
}

/// A resource named by a request: its canonical form and digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceKey {
    canonical: String,
    digest: Digest,
}

impl ResourceKey {
    /// Names a resource from its parts. `host` may carry a port; `path_and_query` is the request target in origin
    /// form (`/path?query`).
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Self {
        let scheme = scheme.to_ascii_lowercase();
        let host = normalise_host(&scheme, host);
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        let path = if path.is_empty() { "/".to_owned() } else { normalise_percent(path) };
        let query = normalise_query(query);
        // Built by hand rather than with `format!`: this runs on every request.
        let mut canonical = String::with_capacity(8 + scheme.len() + host.len() + path.len() + query.len());
        for part in ["GET", &scheme, &host, &path] {
            canonical.push_str(part);
            canonical.push('\n');
        }
        canonical.push_str(&query);
        let digest = Digest::of(canonical.as_bytes());
        Self { canonical, digest }
    }

    /// Names the resource of a request: the scheme and host its client used, and its target.
    ///
    /// The scheme is `X-Forwarded-Proto` (first value, `http` or `https` in any case) from a trusted proxy, else
    /// the target's own (absolute form, HTTP/2), else `http`. The host is `X-Forwarded-Host` (first value) from a
    /// trusted proxy, else `Host`, else the target's authority. [`KeyError::NoHost`] when none names one.
    pub fn from_request(parts: &Parts, forwarding: Forwarding) -> Result<Self, KeyError> {
        let trusted = |name: &str| match forwarding {
            Forwarding::Trusted => first_value(&parts.headers, name),
            Forwarding::Untrusted => None,
        };
        let scheme = trusted(X_FORWARDED_PROTO)
            .or(parts.uri.scheme_str())
            .filter(|scheme| scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
            .unwrap_or("http");
        let host = trusted(X_FORWARDED_HOST)
            .or_else(|| parts.headers.get(HOST).and_then(|value| value.to_str().ok()))
            .or_else(|| parts.uri.authority().map(|authority| authority.as_str()))
            .filter(|host| !host.trim().is_empty())
            .ok_or(KeyError::NoHost)?;
        let target = parts.uri.path_and_query().map_or("/", |target| target.as_str());
        Ok(Self::new(scheme, host, target))
    }

    /// Names the resource of an absolute URL as a client sees it (`http://host/path?q`), as operators type it.
    /// The fragment is dropped; dot segments are kept, as in a request.
    pub fn from_url(url: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("it has no scheme"))?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(bad("the scheme must be http or https"));
        }
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.is_empty() {
            return Err(bad("it has no host"));
        }
        if authority.contains('@') {
            return Err(bad("it has user information; write only the host"));
        }
        if authority.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad("the host has spaces or control characters"));
        }
        let target = if target.starts_with('?') { format!("/{target}") } else { target.to_owned() };
        Ok(Self::new(scheme, authority, &target))
    }

    /// Resolves a reference found in a response to this resource's request (`Location`, `Content-Location`)
    /// against it (RFC 3986 section 5.2), and names the result when it is on the same host and port (RFC 9111
    /// section 4.4 invalidates only those). `None` for another host or an unusable reference.
    pub fn resolve(&self, reference: &str) -> Option<Self> {
        let reference = reference.trim();
        let reference = reference.split_once('#').map_or(reference, |(before, _)| before);
        let resolved = if reference.contains("://") {
            let target = Self::from_url(reference).ok()?;
            Self::new(target.scheme(), target.host(), &remove_dot_segments_in(&target.target()))
        } else if let Some(network_path) = reference.strip_prefix("//") {
            Self::from_url(&format!("{}://{network_path}", self.scheme())).ok()?
        } else if reference.starts_with('/') {
            Self::new(self.scheme(), self.host(), &remove_dot_segments_in(reference))
        } else if reference.is_empty() {
            self.clone()
        } else if let Some(query) = reference.strip_prefix('?') {
            Self::new(self.scheme(), self.host(), &format!("{}?{query}", self.path()))
        } else {
            let base = &self.path()[..=self.path().rfind('/').unwrap_or(0)];
            Self::new(self.scheme(), self.host(), &remove_dot_segments_in(&format!("{base}{reference}")))
        };
        (endpoint(resolved.scheme(), resolved.host()) == endpoint(self.scheme(), self.host())).then_some(resolved)
    }

    /// The canonical text form (documented in the module docs).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The digest that names the head record.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        self.line(1)
    }

    /// The host, lowercase, with its port unless it is the scheme's default.
    pub fn host(&self) -> &str {
        self.line(2)
    }

    /// The normalised path: what route rules match.
    pub fn path(&self) -> &str {
        self.line(3)
    }

    /// The normalised query, without `?` (empty when none).
    pub fn query(&self) -> &str {
        self.line(4)
    }

    /// The normalised request target, `path[?query]`.
    pub fn target(&self) -> String {
        match self.query() {
            "" => self.path().to_owned(),
            query => format!("{}?{query}", self.path()),
        }
    }

    /// The resource as an absolute URL; [`from_url`](Self::from_url) names the same resource from it.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.host(), self.target())
    }

    fn line(&self, index: usize) -> &str {
        // Percent normalisation writes control characters as %XX, so no line holds a newline of its own.
        self.canonical.split('\n').nth(index).unwrap_or("")
    }

    /// The digest of one variant of this resource, given the names the stored response varies on (lowercase)
    /// and the request's headers.
    pub fn variant(&self, vary: &[String], headers: &HeaderMap) -> Digest {
        let mut names: Vec<&str> = vary.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut text = self.canonical.clone();
        for name in names {
            text.push('\n');
            text.push_str(name);
            text.push(':');
            // RFC 9111 section 4.1: values with identical semantics select the same variant. Every line joins
            // one list (RFC 9110 section 5.3); for the Accept family, whose values are case-insensitive lists,
            // members are trimmed and lowercased.
            let list = LIST_FIELDS.contains(&name);
            let mut first = true;
            for value in headers.get_all(name) {
                // A non-UTF-8 value still names its own variant: hash its bytes lossily but consistently.
                let value = String::from_utf8_lossy(value.as_bytes());
                let members: Vec<&str> = if list { value.split(',').collect() } else { vec![&value] };
                for member in members {
                    if !first {
                        text.push(',');
                    }
                    first = false;
                    let member = member.trim_matches([' ', '\t']);
                    if list {
                        text.push_str(&member.to_ascii_lowercase());
                    } else {
                        text.push_str(member);
                    }
                }
            }
        }
        Digest::of(text.as_bytes())
    }
}

/// Request fields whose values are case-insensitive comma-separated lists (RFC 9110 sections 12.5.1-12.5.4).
const LIST_FIELDS: [&str; 4] = ["accept", "accept-charset", "accept-encoding", "accept-language"];

/// The first comma-separated value of a header, trimmed; `None` when absent or empty.
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim_matches([' ', '\t']);
    (!first.is_empty()).then_some(first)
}

/// The host without its port, and the port (the scheme's default when none is written).
fn endpoint<'a>(scheme: &str, host: &'a str) -> (&'a str, u16) {
    let default = if scheme == "https" { 443 } else { 80 };
    // An IPv6 literal holds colons of its own: a port follows only its closing bracket.
    let colon = host.rfind(':').filter(|&at| !host[at..].contains(']'));
    match colon.and_then(|at| host[at + 1..].parse::<u16>().ok().map(|port| (&host[..at], port))) {
        Some((name, port)) => (name, port),
        None => (host, default),
    }
}

fn normalise_host(scheme: &str, host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let default_port = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    match host.strip_suffix(default_port) {
        Some(bare) if !bare.is_empty() => bare.to_owned(),
        _ => host,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether a byte may stand for itself in a path or query (RFC 3986 sections 3.3 and 3.4: unreserved,
/// sub-delims, `:`, `@`, `/`, `?`).
fn is_allowed(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/?".contains(&b)
}

/// Decodes `%xx` of unreserved characters, uppercases the hex of the rest, and writes every other byte that may
/// not appear in a URI as `%XX` (RFC 3986 section 6.2.2). Applying it twice changes nothing.
fn normalise_percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() {
            let hex = &text[i + 1..i + 3];
            let value = u8::from_str_radix(hex, 16).expect("two hex digits");
            if is_unreserved(value) {
                out.push(value as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else if is_allowed(b) {
            out.push(b as char);
            i += 1;
        } else {
            // A lone `%`, a space, a quote, a non-ASCII byte: the form a client would have sent on the wire.
            out.push_str(&format!("%{b:02X}"));
            i += 1;
        }
    }
    out
}

fn normalise_query(query: &str) -> String {
    let mut params: Vec<String> = query.split('&').filter(|p| !p.is_empty()).map(normalise_percent).collect();
    // Stable sort by name only: repeated names keep their order, since `a=1&a=2` and `a=2&a=1` may differ.
    params.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    params.join("&")
}

fn name_of(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// Removes `.` and `..` segments from the path of a target (RFC 3986 section 5.2.4), keeping its query.
fn remove_dot_segments_in(target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    output.push("");
                }
            }
            ".." => {
                if output.len() > 1 {
                    output.pop();
                }
                if last {
                    output.push("");
                }
            }
            other => output.push(other),
        }
    }
    let mut path = output.join("/");
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

#[cfg(test)]
mod tests;
