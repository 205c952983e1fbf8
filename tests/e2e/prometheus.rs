//! A real Prometheus server scrapes a running etagd: the metrics the shipped rules (deploy/prometheus/) are written
//! against reach Prometheus's query API with their outcome labels, as a scrape job in production would see them.
//!
//! Prometheus comes from Debian's package, unpacked by scripts/install-test-deps.sh (`make test` runs it) under
//! ~/.cache/etagd/prometheus; a missing binary fails the test with that hint rather than skipping it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, shutdown_all};

/// Where scripts/install-test-deps.sh puts Prometheus, unless PROMETHEUS_DIR moves it; a `prometheus` on PATH
/// (or Debian's /usr/bin/prometheus) is taken first.
fn prometheus_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("prometheus")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cache = std::env::var_os("PROMETHEUS_DIR").map(PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("etagd").join("prometheus"))
    });
    on_path
        .into_iter()
        .chain(cache.map(|dir| dir.join("usr/bin/prometheus")))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("no prometheus binary on PATH or under ~/.cache/etagd/prometheus: run scripts/install-test-deps.sh")
        })
}

/// A Prometheus server on a loopback port, killed (and its data removed) when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second as job `etagd`.
    fn start(target: &str) -> Prometheus {
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos();
        let dir = std::env::temp_dir().join(format!("etagd-e2e-prometheus-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("create the Prometheus directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: etagd\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        // A free port found by binding and releasing it: Prometheus cannot be told to pick one and report it.
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, dir, url: format!("http://127.0.0.1:{port}") }
    }

    /// The last lines of Prometheus's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// One instant query; `None` while Prometheus is not answering yet.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Option<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_-.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let response = client.get(format!("{}/api/v1/query?query={encoded}", self.url)).send().await.ok()?;
        let json: serde_json::Value = response.json().await.ok()?;
        (json["status"] == "success").then_some(json)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `{outcome: value}` of a vector result.
fn by_outcome(json: &serde_json::Value) -> Vec<(String, f64)> {
    let mut pairs: Vec<(String, f64)> = json["data"]["result"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter_map(|r| {
                    let outcome = r["metric"]["outcome"].as_str()?.to_owned();
                    let value = r["value"][1].as_str()?.parse().ok()?;
                    Some((outcome, value))
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_requests_by_outcome() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        let fleet = Fleet::new(&origin, &[&memcached]);
        let a = fleet.replica(&[]).await;
        // One miss, two hits, one 304.
        let etag = a.get_ok("/page").await.etag();
        a.get_ok("/page").await;
        a.get_ok("/page").await;
        let revalidated = a.get("/page", &[("if-none-match", etag.as_str())]).await;
        assert_eq!(revalidated.status, 304, "{:?}", revalidated.headers);

        let admin = a.admin_url();
        let prometheus = Prometheus::start(admin.trim_start_matches("http://"));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("a client");
        let want = vec![("hit".to_owned(), 2.0), ("miss".to_owned(), 1.0), ("not_modified".to_owned(), 1.0)];
        // Prometheus needs a moment to start and a scrape or two; bounded well inside the test's guard.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let mut last = Vec::new();
        loop {
            if let Some(json) = prometheus.query(&client, "sum by (outcome) (etagd_requests_total)").await {
                last = by_outcome(&json);
                if want.iter().all(|pair| last.contains(pair)) {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus never returned {want:?} for etagd_requests_total by outcome; last {last:?}\n{}",
                prometheus.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let up = prometheus.query(&client, "up{job=\"etagd\"}").await.expect("Prometheus answers");
        assert_eq!(up["data"]["result"][0]["value"][1], "1", "the etagd target is up: {up}");
        shutdown_all([a]).await;
    })
    .await;
}
