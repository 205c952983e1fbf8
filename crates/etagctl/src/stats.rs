//! `etagctl stats`: per Memcached server, whether it answers and how full and useful it is, from the store's
//! `stats()` (or a sidecar's `GET /stats`, which adds the sidecar's own view of each server's health).
//! Exits 1 when any server is unreachable.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::table;
use crate::target::Target;

/// One server's statistics, as both the library and the admin API serialize them.
#[derive(Debug, Deserialize)]
struct ServerView {
    server: String,
    reachable: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    items: Option<u64>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    limit_bytes: Option<u64>,
    #[serde(default)]
    get_hits: Option<u64>,
    #[serde(default)]
    get_misses: Option<u64>,
    #[serde(default)]
    evictions: Option<u64>,
}

/// One server's health as a sidecar sees it.
#[derive(Debug, Deserialize)]
struct HealthView {
    server: String,
    up: bool,
    #[serde(default)]
    last_error: Option<String>,
}

/// The whole answer.
#[derive(Debug, Deserialize)]
struct StatsView {
    servers: Vec<ServerView>,
    #[serde(default)]
    health: Vec<HealthView>,
}

/// Runs `stats`.
pub(crate) async fn run(target: &Target, json: bool) -> Result<(), CliError> {
    let answer: Value = match target {
        // The store's health only reflects operations this process made, which is none yet: leave it out.
        Target::Direct(cache) => json!({ "servers": cache.store().stats().await }),
        Target::Admin(admin) => admin.stats().await?,
    };
    let stats: StatsView = serde_json::from_value(answer.clone()).map_err(|error| {
        CliError::Failed(format!("the admin API answered /stats with unexpected statistics ({error})"))
    })?;
    if json {
        table::print_json(&answer);
    } else {
        table::print(&render(&stats));
    }
    let down: Vec<&str> = stats.servers.iter().filter(|s| !s.reachable).map(|s| s.server.as_str()).collect();
    if down.is_empty() {
        return Ok(());
    }
    let verb = if down.len() == 1 { "is" } else { "are" };
    Err(CliError::Failed(format!(
        "{} of {} memcached servers {verb} unreachable ({}): check they are running and that the server list is right",
        down.len(),
        stats.servers.len(),
        down.join(", ")
    )))
}

/// Hits over reads, as a percentage with one decimal.
fn hit_ratio(hits: Option<u64>, misses: Option<u64>) -> String {
    match (hits, misses) {
        (Some(hits), Some(misses)) if hits + misses > 0 => {
            format!("{:.1}%", hits as f64 * 100.0 / (hits + misses) as f64)
        }
        _ => "-".to_owned(),
    }
}

fn render(stats: &StatsView) -> String {
    let rows: Vec<Vec<String>> = stats
        .servers
        .iter()
        .map(|s| {
            let bytes = match (s.bytes, s.limit_bytes) {
                (Some(used), Some(limit)) => {
                    format!("{} / {}", table::bytes(used), table::bytes(limit))
                }
                (used, _) => table::or_dash(used.map(table::bytes)),
            };
            vec![
                s.server.clone(),
                table::yes_no(s.reachable),
                table::or_dash(s.version.clone()),
                table::or_dash(s.items),
                bytes,
                hit_ratio(s.get_hits, s.get_misses),
                table::or_dash(s.evictions),
            ]
        })
        .collect();
    let mut out =
        table::columns(&["SERVER", "REACHABLE", "VERSION", "ITEMS", "BYTES", "HIT RATIO", "EVICTIONS"], &rows);
    for server in stats.servers.iter().filter(|s| !s.reachable) {
        out.push_str(&format!("{}: {}\n", server.server, server.error.as_deref().unwrap_or("unreachable")));
    }
    if !stats.health.is_empty() {
        let rows: Vec<Vec<String>> = stats
            .health
            .iter()
            .map(|h| {
                vec![
                    h.server.clone(),
                    if h.up { "up" } else { "down" }.to_owned(),
                    table::or_dash(h.last_error.clone()),
                ]
            })
            .collect();
        out.push_str("\nas the sidecar sees them:\n");
        out.push_str(&table::columns(&["SERVER", "STATE", "LAST ERROR"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratios() {
        let check = |hits: Option<u64>, misses: Option<u64>, expected: &str| {
            assert_eq!(hit_ratio(hits, misses), expected);
        };
        check(Some(93), Some(7), "93.0%");
        check(Some(1), Some(2), "33.3%");
        check(Some(0), Some(0), "-");
        check(None, Some(1), "-");
    }

    #[test]
    fn renders_reachable_and_unreachable_servers() {
        let stats: StatsView = serde_json::from_value(json!({
            "servers": [
                {"server": "m:1", "reachable": true, "error": null, "version": "1.6.21", "items": 3, "bytes": 2048,
                 "limit_bytes": 67108864, "get_hits": 9, "get_misses": 1, "cmd_get": 10, "evictions": 0},
                {"server": "m:2", "reachable": false, "error": "connect failed: Connection refused"},
            ],
            "health": [{"server": "m:2", "up": false, "last_error": "refused"}],
        }))
        .expect("stats");
        let text = render(&stats);
        assert!(text.contains("m:1     yes        1.6.21   3      2.0 KiB / 64.0 MiB  90.0%      0\n"), "{text}");
        assert!(text.contains("m:2     no         -"), "{text}");
        assert!(text.contains("m:2: connect failed: Connection refused\n"), "{text}");
        assert!(text.contains("m:2     down   refused\n"), "{text}");
    }
}
