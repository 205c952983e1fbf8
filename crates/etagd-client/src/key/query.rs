//! Which query parameters name a resource: operators drop the ones that never change a response (marketing
//! tags such as `utm_*`, `gclid`, `fbclid`) so that they do not split one page into thousands of entries, or keep
//! only the ones that matter. The origin still gets the full URL.

use super::ResourceKey;

/// A query filter: parameters to ignore (names, or prefixes ending in `*`), or only those to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFilter {
    /// Parameters that are dropped from the key.
    pub ignore: Vec<String>,
    /// When set, only these parameters stay in the key (`ignore` still applies to them).
    pub keep: Option<Vec<String>>,
}

/// Marketing parameters that a response almost never depends on, for `ignore_query` (documented in the README;
/// not applied unless configured).
pub const MARKETING_PARAMETERS: [&str; 9] =
    ["utm_*", "gclid", "gclsrc", "dclid", "fbclid", "msclkid", "mc_cid", "mc_eid", "_hsenc"];

impl QueryFilter {
    /// Whether the filter changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ignore.is_empty() && self.keep.is_none()
    }

    fn keeps(&self, name: &str) -> bool {
        let listed = |patterns: &[String]| {
            patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
        };
        !listed(&self.ignore) && self.keep.as_deref().is_none_or(listed)
    }
}

impl ResourceKey {
    /// The same resource named without the query parameters `filter` drops.
    pub fn filtered(&self, filter: &QueryFilter) -> ResourceKey {
        if filter.is_empty() || self.query().is_empty() {
            return self.clone();
        }
        let kept: Vec<&str> = self
            .query()
            .split('&')
            .filter(|param| filter.keeps(param.split_once('=').map_or(*param, |(name, _)| name)))
            .collect();
        let target =
            if kept.is_empty() { self.path().to_owned() } else { format!("{}?{}", self.path(), kept.join("&")) };
        ResourceKey::new(self.scheme(), self.host(), &target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn filters_drop_what_does_not_name_the_resource() {
        let marketing = QueryFilter { ignore: strings(&MARKETING_PARAMETERS), keep: None };
        let only_page = QueryFilter { ignore: Vec::new(), keep: Some(strings(&["page"])) };
        let cases = [
            (&marketing, "/p?utm_source=x&page=2&gclid=abc", "/p?page=2"),
            (&marketing, "/p?utm_source=x", "/p"),
            (&marketing, "/p?%75tm_medium=y&q=1", "/p?q=1"),
            (&marketing, "/p?utmost=1", "/p?utmost=1"),
            (&only_page, "/p?page=2&sort=asc&q", "/p?page=2"),
            (&QueryFilter::default(), "/p?utm_source=x", "/p?utm_source=x"),
        ];
        for (filter, target, expected) in cases {
            let key = ResourceKey::new("http", "h", target).filtered(filter);
            assert_eq!(key, ResourceKey::new("http", "h", expected), "{target} {filter:?}");
        }
    }
}
