//! `etagctl inspect`: what is stored for one URL, read through the library's `Cache::inspect` (no lease
//! taken, nothing written) or a sidecar's `GET /entries`.

use etagd_client::key::ResourceKey;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::cli::InspectArgs;
use crate::error::CliError;
use crate::table;
use crate::target::Target;

/// The stored entry, as both the library and the admin API serialize it.
#[derive(Debug, Deserialize)]
struct EntryView {
    etag: String,
    status: u16,
    state: String,
    age_s: u64,
    #[serde(default)]
    ttl_left_s: Option<u64>,
    body_bytes: u64,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    codings: Vec<String>,
}

/// An inspection, as both the library and the admin API serialize it.
#[derive(Debug, Deserialize)]
struct InspectionView {
    #[serde(default)]
    canonical: String,
    #[serde(default)]
    head_key: String,
    #[serde(default)]
    server: String,
    head: String,
    #[serde(default)]
    vary: Vec<String>,
    #[serde(default)]
    pass_reason: Option<String>,
    #[serde(default)]
    entry: Option<EntryView>,
}

/// Runs `inspect`.
pub(crate) async fn run(target: &Target, args: &InspectArgs, json: bool) -> Result<(), CliError> {
    let resource = ResourceKey::from_url(&args.url)?;
    let answer: Value = match target {
        Target::Direct(cache) => {
            // No request headers: for a varying resource this shows the variant of a request without them.
            let inspection = cache
                .inspect(&resource, &HeaderMap::new())
                .await
                .map_err(|error| CliError::Failed(error.to_string()))?;
            serde_json::to_value(&inspection).expect("an inspection serializes")
        }
        Target::Admin(admin) => admin.entries(&args.url).await?,
    };
    if json {
        table::print_json(&answer);
        return Ok(());
    }
    let inspection: InspectionView = serde_json::from_value(answer).map_err(|error| {
        CliError::Failed(format!("the admin API answered /entries with an unexpected inspection ({error})"))
    })?;
    table::print(&render(&args.url, &inspection));
    Ok(())
}

/// `GET\nhttp\nhost\n/path\nquery` as one readable line.
fn show_canonical(canonical: &str) -> String {
    let lines: Vec<&str> = canonical.split('\n').collect();
    match lines.as_slice() {
        [method, scheme, host, path, ""] => format!("{method} {scheme}://{host}{path}"),
        [method, scheme, host, path, query] => format!("{method} {scheme}://{host}{path}?{query}"),
        _ => canonical.replace('\n', " "),
    }
}

fn render(url: &str, inspection: &InspectionView) -> String {
    let stored = match (inspection.head.as_str(), &inspection.pass_reason) {
        ("missing", _) => "nothing (the next request fills it)".to_owned(),
        ("fill-in-progress", _) => "nothing yet: a fill is in progress".to_owned(),
        ("pass", Some(reason)) => {
            format!("a pass marker: sent to the origin without storing ({reason})")
        }
        ("pass", None) => "a pass marker: sent to the origin without storing".to_owned(),
        ("corrupt", _) => "an unreadable record (the next request replaces it)".to_owned(),
        ("variants", _) => "variants".to_owned(),
        (head, _) => head.to_owned(),
    };
    let mut rows = vec![
        ("url", url.to_owned()),
        ("canonical", show_canonical(&inspection.canonical)),
        ("key", inspection.head_key.clone()),
        ("server", inspection.server.clone()),
        ("stored", stored),
    ];
    if !inspection.vary.is_empty() {
        rows.push(("vary", format!("{} (showing the variant for a request without them)", inspection.vary.join(", "))));
    }
    match &inspection.entry {
        Some(entry) => {
            rows.push(("etag", entry.etag.clone()));
            rows.push(("status", entry.status.to_string()));
            rows.push(("state", entry.state.clone()));
            rows.push(("age", format!("{}s", entry.age_s)));
            rows.push((
                "ttl left",
                entry.ttl_left_s.map_or_else(|| "until invalidated".to_owned(), |s| format!("{s}s")),
            ));
            rows.push(("size", format!("{} ({} bytes)", table::bytes(entry.body_bytes), entry.body_bytes)));
            rows.push(("tags", if entry.tags.is_empty() { "-".to_owned() } else { entry.tags.join(", ") }));
            rows.push(("codings", if entry.codings.is_empty() { "-".to_owned() } else { entry.codings.join(", ") }));
        }
        None if inspection.head == "variants" => rows.push(("entry", "none for this variant".to_owned())),
        None => {}
    }
    table::pairs(&rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shows_canonical_forms() {
        let check = |canonical: &str, expected: &str| assert_eq!(show_canonical(canonical), expected);
        check("GET\nhttp\nh\n/a\n", "GET http://h/a");
        check("GET\nhttps\nh:8443\n/a\nb=1&c=2", "GET https://h:8443/a?b=1&c=2");
        check("odd\nform", "odd form");
    }

    #[test]
    fn renders_entries_and_absences() {
        let inspection: InspectionView = serde_json::from_value(json!({
            "canonical": "GET\nhttp\nh\n/a\n", "head_key": "etagd2:ns:u:00", "server": "m:1", "head": "entry",
            "vary": [], "pass_reason": null,
            "entry": {"etag": "\"abc\"", "status": 200, "state": "fresh", "age_s": 3, "ttl_left_s": null,
                      "body_bytes": 2048, "tags": ["a", "b"], "codings": [], "stored_at_ms": 1},
        }))
        .expect("an inspection");
        let text = render("http://h/a", &inspection);
        for line in ["etag       \"abc\"\n", "ttl left   until invalidated\n", "size       2.0 KiB (2048 bytes)\n"] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(text.contains("tags       a, b\n"), "{text}");
        let missing: InspectionView =
            serde_json::from_value(json!({"head": "missing", "entry": null})).expect("an inspection");
        let text = render("http://h/a", &missing);
        assert!(text.contains("stored     nothing"), "{text}");
        assert!(!text.contains("etag"), "{text}");
    }
}
