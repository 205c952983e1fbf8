//! The `Cache-Status` header (RFC 9211) the layer adds to every response it handles: whether the cache answered
//! (`hit`), or why it forwarded the request to the inner service (`fwd=...`) and whether it stored the answer.

use http::HeaderValue;

/// The cache name in `Cache-Status` (RFC 9211 section 2: each cache identifies itself).
const CACHE_NAME: &str = "etagd";

/// Why a request went to the inner service (RFC 9211 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The layer does not handle this request: its headers ask for something a shared cache cannot give, or
    /// the URL answered something unstorable recently (hit-for-pass).
    Bypass,
    /// The method is not GET or HEAD.
    Method,
    /// Nothing usable was stored for the URL.
    UriMiss,
    /// The cache could not use what it has (the store failed, a fill elsewhere took too long, a body is gone).
    Miss,
    /// Something was stored, but the request's own directives (`no-cache`) forbid using it.
    Request,
    /// The stored response was stale and had to be refreshed first.
    Stale,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

/// One `Cache-Status` list member for this layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    fwd: Option<Fwd>,
    ttl: Option<i64>,
    fwd_status: Option<u16>,
    stored: bool,
    detail: Option<String>,
}

impl CacheStatus {
    /// Answered from the cache. `ttl` is the freshness left (negative when stale), `None` for entries kept
    /// until invalidated.
    pub(crate) fn hit(ttl: Option<i64>) -> Self {
        Self { fwd: None, ttl, fwd_status: None, stored: false, detail: None }
    }

    /// Forwarded to the inner service.
    pub(crate) fn forward(fwd: Fwd) -> Self {
        Self { fwd: Some(fwd), ttl: None, fwd_status: None, stored: false, detail: None }
    }

    /// The inner service's status code.
    pub(crate) fn fwd_status(mut self, status: u16) -> Self {
        self.fwd_status = Some(status);
        self
    }

    /// The answer was stored, with this much freshness left.
    pub(crate) fn stored(mut self, ttl: Option<i64>) -> Self {
        self.stored = true;
        self.ttl = ttl;
        self
    }

    /// Free text for operators (a no-store reason, `stale`, `store-unavailable`).
    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The header value: `etagd; hit; ttl=42`, `etagd; fwd=uri-miss; fwd-status=200; stored`.
    pub(crate) fn to_header_value(&self) -> HeaderValue {
        let mut text = String::from(CACHE_NAME);
        match self.fwd {
            None => text.push_str("; hit"),
            Some(fwd) => {
                text.push_str("; fwd=");
                text.push_str(fwd.as_str());
            }
        }
        if let Some(status) = self.fwd_status {
            text.push_str(&format!("; fwd-status={status}"));
        }
        if self.stored {
            text.push_str("; stored");
        }
        if let Some(ttl) = self.ttl {
            text.push_str(&format!("; ttl={ttl}"));
        }
        if let Some(detail) = &self.detail {
            text.push_str("; detail=");
            push_sf_item(&mut text, detail);
        }
        HeaderValue::from_str(&text).expect("built from visible ASCII only")
    }
}

/// Writes `value` as a structured-field token when it is one, else as a string (RFC 8941 sections 3.3.3-4).
/// Characters a string cannot hold are dropped: the detail is for humans.
fn push_sf_item(out: &mut String, value: &str) {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c);
    let mut chars = value.chars();
    let token = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '*') && chars.all(is_tchar);
    if token {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        let check = |status: CacheStatus, expected: &str| {
            assert_eq!(status.to_header_value(), expected, "{status:?}");
        };
        check(CacheStatus::hit(None), "etagd; hit");
        check(CacheStatus::hit(Some(42)), "etagd; hit; ttl=42");
        check(CacheStatus::hit(Some(-3)).detail("stale"), "etagd; hit; ttl=-3; detail=stale");
        check(
            CacheStatus::forward(Fwd::UriMiss).fwd_status(200).stored(None),
            "etagd; fwd=uri-miss; fwd-status=200; stored",
        );
        check(
            CacheStatus::forward(Fwd::Stale).fwd_status(200).stored(Some(60)),
            "etagd; fwd=stale; fwd-status=200; stored; ttl=60",
        );
        check(
            CacheStatus::forward(Fwd::UriMiss).fwd_status(200).detail("set_cookie"),
            "etagd; fwd=uri-miss; fwd-status=200; detail=set_cookie",
        );
        check(CacheStatus::forward(Fwd::Method), "etagd; fwd=method");
        check(CacheStatus::forward(Fwd::Request), "etagd; fwd=request");
        check(CacheStatus::forward(Fwd::Miss).detail("fill-wait-timeout"), "etagd; fwd=miss; detail=fill-wait-timeout");
        check(
            CacheStatus::forward(Fwd::Bypass).detail("store-unavailable"),
            "etagd; fwd=bypass; detail=store-unavailable",
        );
        check(CacheStatus::forward(Fwd::Bypass).detail("two words"), "etagd; fwd=bypass; detail=\"two words\"");
        check(CacheStatus::forward(Fwd::Bypass).detail("9lives"), "etagd; fwd=bypass; detail=\"9lives\"");
        check(CacheStatus::forward(Fwd::Bypass).detail(""), "etagd; fwd=bypass; detail=\"\"");
        check(CacheStatus::forward(Fwd::Bypass).detail("a\"b\\c\u{e9}\n"), "etagd; fwd=bypass; detail=\"a\\\"b\\\\c\"");
    }
}
