//! Tidy checks that keep docs and code from drifting: every `ETAGD_*` variable the sidecar reads is documented in
//! the README, and every metric it exports is listed in `metrics.rs`'s module docs.

use std::path::Path;

fn read(relative: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn every_environment_variable_is_documented_in_the_readme() {
    let config = read("crates/etagd/src/config/args.rs");
    let readme = read("README.md");
    let variables: Vec<&str> = config
        .split("env = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| name.starts_with("ETAGD_"))
        .collect();
    assert!(variables.len() > 10, "found the flags' variables: {variables:?}");
    let missing: Vec<&&str> = variables.iter().filter(|name| !readme.contains(&format!("`{name}`"))).collect();
    assert!(missing.is_empty(), "README.md does not document {missing:?}");
}

#[test]
fn every_metric_is_listed_in_the_metrics_module_docs() {
    let metrics = read("crates/etagd/src/metrics.rs");
    let docs: String = metrics.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    let code: String = metrics.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    // Names registered in code: `registry.register("name", ...)` and the collector's `counter(e, "name", ...)`.
    let mut names: Vec<String> = Vec::new();
    for marker in ["register(\n            \"", "register(\"", "(e, \""] {
        for rest in code.split(marker).skip(1) {
            if let Some(name) = rest.split('"').next() {
                names.push(format!("etagd_{name}"));
            }
        }
    }
    assert!(names.len() > 10, "found the registered metrics: {names:?}");
    let missing: Vec<&String> =
        names.iter().filter(|name| !docs.contains(name.as_str()) && !docs.contains(&format!("{name}_total"))).collect();
    assert!(missing.is_empty(), "metrics.rs module docs do not list {missing:?}");
}
