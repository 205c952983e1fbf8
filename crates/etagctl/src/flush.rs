//! `etagctl flush`: invalidate URLs, tags, path prefixes or the whole namespace through the library's
//! `Cache::invalidate` (or a sidecar's `POST /invalidate`), print what was invalidated, and exit 1 when the
//! report is not complete.

use etagd_client::cache::{Cache, Invalidation};
use etagd_client::key::{MAX_PREFIX_DEPTH, PathPrefix, ResourceKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::FlushArgs;
use crate::error::CliError;
use crate::table;
use crate::target::Target;

/// One row of an invalidation report, as both the library and the admin API serialize it.
#[derive(Debug, Deserialize)]
struct TargetView {
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    server: String,
    ok: bool,
    #[serde(default)]
    existed: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

/// An invalidation report, as both the library and the admin API serialize it.
#[derive(Debug, Deserialize)]
struct ReportView {
    targets: Vec<TargetView>,
    #[serde(default)]
    grace_s: Option<u64>,
    #[serde(default)]
    escalated_to_all: bool,
    complete: bool,
    #[serde(default)]
    fenced: Vec<String>,
}

/// One write a dry run would make.
#[derive(Debug, Serialize)]
struct PlannedWrite {
    kind: &'static str,
    name: String,
    key: String,
    server: String,
    action: String,
}

/// Validates the flags into the library's request, before anything is dialled.
pub(crate) fn invalidation(args: &FlushArgs) -> Result<Invalidation, CliError> {
    if args.urls.is_empty() && args.tags.is_empty() && args.prefixes.is_empty() && !args.all {
        return Err(CliError::Usage(
            "flush needs something to invalidate: pass --url URL, --tag TAG, --prefix URL or --all (see etagctl \
             flush --help)"
                .to_owned(),
        ));
    }
    let mut urls: Vec<String> = Vec::new();
    for url in &args.urls {
        ResourceKey::from_url(url)?;
        if !urls.contains(url) {
            urls.push(url.clone());
        }
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in &args.tags {
        if tag.is_empty() {
            return Err(CliError::Usage("--tag needs a tag name, e.g. --tag products".to_owned()));
        }
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    let mut prefixes: Vec<String> = Vec::new();
    for prefix in &args.prefixes {
        // The form is checked here; the depth by whoever writes (this process with --memcached, else the sidecar).
        PathPrefix::parse(prefix, MAX_PREFIX_DEPTH)?;
        if !prefixes.contains(prefix) {
            prefixes.push(prefix.clone());
        }
    }
    Ok(Invalidation { urls, tags, prefixes, all: args.all, grace_s: args.grace })
}

/// Runs `flush`.
pub(crate) async fn run(target: &Target, args: &FlushArgs, json: bool) -> Result<(), CliError> {
    let invalidation = invalidation(args)?;
    if args.dry_run {
        return match target {
            Target::Direct(cache) => dry_run_direct(cache, &invalidation, json),
            Target::Admin(admin) => {
                let request = json!({
                    "dry_run": true,
                    "request": {"method": "POST", "url": admin.route("invalidate").as_str(), "body": invalidation},
                });
                if json {
                    table::print_json(&request);
                } else {
                    let body = serde_json::to_string(&invalidation).expect("an invalidation serializes");
                    table::print(&format!(
                        "would send POST {}\n{body}\ndry run: nothing was sent\n",
                        admin.route("invalidate")
                    ));
                }
                Ok(())
            }
        };
    }
    let answer: Value = match target {
        Target::Direct(cache) => {
            let report = cache.invalidate(&invalidation).await?;
            serde_json::to_value(&report).expect("an invalidation report serializes")
        }
        Target::Admin(admin) => admin.invalidate(&invalidation).await?,
    };
    let report: ReportView = serde_json::from_value(answer.clone()).map_err(|error| {
        CliError::Failed(format!("the admin API answered /invalidate with an unexpected report ({error})"))
    })?;
    if json {
        table::print_json(&answer);
    } else {
        table::print(&render(&report));
    }
    if report.complete { Ok(()) } else { Err(incomplete(&report)) }
}

fn incomplete(report: &ReportView) -> CliError {
    let failed: Vec<&TargetView> = report.targets.iter().filter(|t| !t.ok).collect();
    let first = failed.first().and_then(|t| t.error.clone()).unwrap_or_else(|| "no reason given".to_owned());
    CliError::Failed(format!(
        "the invalidation is incomplete: {} of {} writes failed ({first}), so some old entries may still be served; \
         check the memcached servers (etagctl stats) and run the flush again",
        failed.len(),
        report.targets.len()
    ))
}

fn render(report: &ReportView) -> String {
    let any_error = report.targets.iter().any(|t| t.error.is_some());
    let mut headers = vec!["KIND", "NAME", "SERVER", "OK", "EXISTED"];
    if any_error {
        headers.push("ERROR");
    }
    let rows: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|t| {
            let name = if t.kind == "all" && t.name.is_empty() { "(namespace)".to_owned() } else { t.name.clone() };
            let mut row = vec![
                t.kind.clone(),
                name,
                t.server.clone(),
                table::yes_no(t.ok),
                table::or_dash(t.existed.map(table::yes_no)),
            ];
            if any_error {
                row.push(table::or_dash(t.error.clone()));
            }
            row
        })
        .collect();
    let mut out = table::columns(&headers, &rows);
    let landed = report.targets.iter().filter(|t| t.ok).count();
    let mode = match report.grace_s {
        Some(grace) => {
            format!("soft: old entries may be served stale for up to {grace}s while one replica refreshes each")
        }
        None => "hard".to_owned(),
    };
    out.push_str(&format!("invalidated {landed} of {} targets ({mode})\n", report.targets.len()));
    if !report.fenced.is_empty() {
        out.push_str(&format!(
            "fenced {}: every replica treats it as down until one reaches it and invalidates its share\n",
            report.fenced.join(", ")
        ));
    }
    if report.escalated_to_all {
        out.push_str("some targets failed, so the whole namespace was invalidated instead: every entry misses once\n");
    }
    out
}

fn dry_run_direct(cache: &Cache, invalidation: &Invalidation, json: bool) -> Result<(), CliError> {
    let namespace = &cache.config().namespace;
    let store = cache.store();
    // A URL's head lives on one server; a counter has a copy on every server, each written.
    let every_server = (0..store.server_count()).map(|server| store.server_name(server)).collect::<Vec<_>>().join(",");
    let plan = |kind: &'static str, name: &str, key: String, action: String| PlannedWrite {
        kind,
        name: name.to_owned(),
        server: if kind == "url" { store.server_of(&key) } else { every_server.clone() },
        key,
        action,
    };
    let (delete, bump) = match invalidation.grace_s {
        Some(grace) => {
            (format!("soft-delete (stale for {grace}s)"), format!("new generation (old one stale for {grace}s)"))
        }
        None => ("delete".to_owned(), "new generation".to_owned()),
    };
    let mut writes = Vec::new();
    for url in &invalidation.urls {
        let key = namespace.head_key(&ResourceKey::from_url(url)?);
        writes.push(plan("url", url, key, delete.clone()));
    }
    for tag in &invalidation.tags {
        writes.push(plan("tag", tag, namespace.tag_generation_key(tag), bump.clone()));
    }
    for prefix in &invalidation.prefixes {
        let prefix = PathPrefix::parse(prefix, cache.config().prefix_depth)?;
        writes.push(plan("prefix", &prefix.url(), namespace.tag_generation_key(&prefix.tag()), bump.clone()));
    }
    if invalidation.all {
        writes.push(plan("all", "", namespace.all_generation_key(), bump.clone()));
    }
    let fallback = plan("all", "", namespace.all_generation_key(), "new generation".to_owned());
    if json {
        table::print_json(&json!({
            "dry_run": true,
            "namespace": namespace.as_str(),
            "grace_s": invalidation.grace_s,
            "writes": writes,
            "fallback": fallback,
        }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = writes
        .iter()
        .map(|w| {
            let name = if w.kind == "all" { "(namespace)".to_owned() } else { w.name.clone() };
            vec![w.kind.to_owned(), name, w.key.clone(), w.server.clone(), w.action.clone()]
        })
        .collect();
    let mut out = table::columns(&["KIND", "NAME", "KEY", "SERVER", "WRITE"], &rows);
    if !invalidation.all {
        out.push_str(&format!(
            "if a write fails, the namespace generation {} on {} gets a new value instead\n",
            fallback.key, fallback.server
        ));
    }
    out.push_str("dry run: nothing was written\n");
    table::print(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(urls: &[&str], tags: &[&str], all: bool) -> FlushArgs {
        FlushArgs {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            prefixes: Vec::new(),
            all,
            grace: None,
            dry_run: false,
        }
    }

    #[test]
    fn validates_what_to_flush() {
        let check = |a: FlushArgs, expected: Result<(usize, usize), u8>| {
            let got = invalidation(&a).map(|i| (i.urls.len(), i.tags.len())).map_err(|e| e.exit_code());
            assert_eq!(got, expected, "{a:?}");
        };
        check(args(&[], &[], false), Err(2));
        check(args(&["http://h/a"], &[], false), Ok((1, 0)));
        check(args(&["http://h/a", "http://h/a"], &["t", "t", "u"], false), Ok((1, 2)));
        check(args(&[], &[], true), Ok((0, 0)));
        check(args(&["not a url"], &[], false), Err(2));
        check(args(&["ftp://h/a"], &["t"], false), Err(2));
        check(args(&[], &[""], false), Err(2));
        let prefixes = |prefixes: &[&str]| FlushArgs {
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            ..args(&[], &[], false)
        };
        let count = |a: FlushArgs| invalidation(&a).map(|i| i.prefixes.len()).map_err(|e| e.exit_code());
        assert_eq!(count(prefixes(&["http://h/api/", "http://h/api/"])), Ok(1));
        for bad in ["/api/", "http://h/api", "http://h/", "http://h/api/?q=1"] {
            assert_eq!(count(prefixes(&[bad])), Err(2), "{bad}");
        }
    }

    #[test]
    fn renders_reports() {
        let report: ReportView = serde_json::from_value(json!({
            "targets": [
                {"kind": "url", "name": "http://h/a", "server": "m:1", "ok": true, "existed": true, "error": null},
                {"kind": "tag", "name": "t", "server": "m:2", "ok": false, "existed": null, "error": "down"},
                {"kind": "all", "name": "", "server": "m:1", "ok": true, "existed": null, "error": null},
            ],
            "grace_s": null, "escalated_to_all": true, "complete": true,
        }))
        .expect("a report");
        let text = render(&report);
        assert!(text.starts_with("KIND  NAME         SERVER  OK   EXISTED  ERROR\n"), "{text}");
        assert!(text.contains("tag   t            m:2     no   -        down\n"), "{text}");
        assert!(text.contains("(namespace)"), "{text}");
        assert!(text.contains("invalidated 2 of 3 targets (hard)"), "{text}");
        assert!(text.contains("whole namespace was invalidated instead"), "{text}");
        assert_eq!(incomplete(&report).exit_code(), 1);
    }
}
