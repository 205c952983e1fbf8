//! `[[route]]` tables of the TOML file, validated into the library's [`Route`]s (longest prefix first).

use etagd_client::exchange::Route;
use etagd_client::key::QueryFilter;
use serde::Deserialize;

use super::{ConfigError, cookie_names, invalid, seconds, seconds_u32};

/// One `[[route]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRoute {
    prefix: String,
    ttl: Option<String>,
    negative_ttl: Option<String>,
    ttl_override: Option<String>,
    ttl_max: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    stale_while_revalidate: Option<String>,
    stale_if_error: Option<String>,
    #[serde(default)]
    ignore_cookies: Vec<String>,
    #[serde(default)]
    ignore_query: Vec<String>,
    key_query: Option<Vec<String>>,
}

/// Validates every route, naming the first bad key (`route[1].ttl_max`).
pub(super) fn routes(file: Vec<FileRoute>) -> Result<Vec<Route>, ConfigError> {
    let mut routes = Vec::with_capacity(file.len());
    for (i, route) in file.into_iter().enumerate() {
        let name = format!("route[{i}]");
        if !route.prefix.starts_with('/') {
            return Err(invalid(&format!("{name}.prefix"), "must start with '/'"));
        }
        let tags = route.tags;
        if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(&format!("{name}.tags"), format!("{bad:?}: tags are non-empty words without spaces")));
        }
        let lifetime = |key: &str, text: &Option<String>| {
            text.as_deref().map(|text| seconds(&format!("{name}.{key}"), text)).transpose()
        };
        let window = |key: &str, text: &Option<String>| {
            text.as_deref().map(|text| seconds_u32(&format!("{name}.{key}"), text)).transpose()
        };
        let parsed = Route {
            prefix: route.prefix,
            ttl_s: lifetime("ttl", &route.ttl)?,
            negative_ttl_s: lifetime("negative_ttl", &route.negative_ttl)?,
            ttl_override_s: lifetime("ttl_override", &route.ttl_override)?,
            ttl_max_s: lifetime("ttl_max", &route.ttl_max)?,
            tags,
            stale_while_revalidate_s: window("stale_while_revalidate", &route.stale_while_revalidate)?,
            stale_if_error_s: window("stale_if_error", &route.stale_if_error)?,
            ignore_cookies: cookie_names(&format!("{name}.ignore_cookies"), route.ignore_cookies)?,
            query: QueryFilter { ignore: route.ignore_query, keep: route.key_query },
        };
        parsed.check().map_err(|error| invalid(&name, error.to_string()))?;
        routes.push(parsed);
    }
    routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Route>, String> {
        #[derive(Deserialize)]
        struct File {
            route: Vec<FileRoute>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        routes(file.route).map_err(|e| e.to_string())
    }

    #[test]
    fn lifetimes_are_read() {
        let routes = parse(
            r#"
            [[route]]
            prefix = "/static"
            ttl_override = "1d"
            negative_ttl = "30s"
            [[route]]
            prefix = "/api"
            ttl = "1m"
            ttl_max = "5m"
            "#,
        )
        .unwrap();
        let by_prefix = |prefix: &str| routes.iter().find(|route| route.prefix == prefix).unwrap().clone();
        let fixed = by_prefix("/static");
        assert_eq!((fixed.ttl_override_s, fixed.negative_ttl_s, fixed.ttl_s), (Some(86_400), Some(30), None));
        let capped = by_prefix("/api");
        assert_eq!((capped.ttl_s, capped.ttl_max_s), (Some(60), Some(300)));
    }

    #[test]
    fn contradicting_lifetimes_name_the_route() {
        let cases = [
            ("ttl = \"1h\"\nttl_override = \"1h\"", "route[0]: ttl_override replaces every lifetime"),
            ("ttl_override = \"1h\"\nttl_max = \"1m\"", "route[0]: ttl_override sets the lifetime"),
            ("ttl = \"forever\"\nttl_max = \"1m\"", "route[0]: ttl (forever) is above ttl_max (60s)"),
            ("negative_ttl = \"2m\"\nttl_max = \"1m\"", "route[0]: negative_ttl (120s) is above ttl_max"),
            ("ttl_max = \"forever\"", "route[0]: ttl_max = forever caps nothing"),
            ("ttl_max = \"soon\"", "route[0].ttl_max"),
            ("ttl_overide = \"1h\"", "unknown field `ttl_overide`"),
        ];
        for (keys, needle) in cases {
            let error = parse(&format!("[[route]]\nprefix = \"/x\"\n{keys}\n")).unwrap_err();
            assert!(error.contains(needle), "{keys}: {error}");
        }
    }
}
