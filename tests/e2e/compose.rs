//! The compose fleet's promise (issue 6), without Docker: the demo app, two etagd processes and two Memcached
//! servers, started with the settings `docker-compose.yml` and `deploy/compose/etagd.toml` give them, share one
//! validator across replicas. Only what cannot work outside containers is replaced: addresses (loopback ports
//! instead of service names and fixed ports).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etagd_testkit::Memcached;

use crate::support::guard;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository root").to_path_buf()
}

/// The `KEY: value` lines of one mapping in the compose file, found by the line that opens it. The compose file
/// keeps each service's environment as a flat block, so a line reader is enough; `${VAR:-default}` takes its
/// default, as compose does when VAR is unset.
fn compose_block(opening: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut lines = text.lines().skip_while(|line| line.trim_end() != opening).skip(1);
    let indent = |line: &str| line.len() - line.trim_start().len();
    let first = lines.clone().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).expect("block");
    let depth = indent(first);
    let mut block = HashMap::new();
    for line in lines.by_ref() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent(line) < depth {
            break;
        }
        if let Some((key, value)) = trimmed.split_once(": ") {
            let mut value = value.trim().trim_matches('"').to_owned();
            if let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                value = inner.split_once(":-").map_or(String::new(), |(_, default)| default.to_owned());
            }
            block.insert(key.to_owned(), value);
        }
    }
    block
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A workspace binary, built if this test run did not build it already.
pub(crate) fn binary(name: &str) -> PathBuf {
    let dir =
        std::env::current_exe().expect("test exe").parent().and_then(Path::parent).expect("target dir").to_owned();
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "etagd", "-p", "etagd-demo-origin", "-p", "etagctl"])
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the binaries failed");
    }
    path
}

/// A child process killed when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &str, env: &HashMap<String, String>) -> Process {
    let child = Command::new(binary(name))
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    Process(child)
}

async fn wait_until_up(client: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_fleet_shares_validators_across_replicas() {
    guard(async {
        let memcached = [Memcached::start(), Memcached::start()];
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");

        // The app, with app-1's settings; its listen address moves to a free loopback port.
        let mut app_env = compose_block("  app-1:");
        let app_env_vars = app_env.keys().filter(|k| k.starts_with("DEMO_ORIGIN_")).cloned().collect::<Vec<_>>();
        app_env.retain(|k, _| app_env_vars.contains(k));
        assert_eq!(app_env.get("DEMO_ORIGIN_LISTEN").map(String::as_str), Some("127.0.0.1:8000"));
        let app_port = free_port();
        app_env.insert("DEMO_ORIGIN_LISTEN".into(), format!("127.0.0.1:{app_port}"));
        let _app = spawn("demo-origin", &app_env);
        wait_until_up(&client, &format!("http://127.0.0.1:{app_port}/healthz")).await;

        // Two sidecars with the shared etagd environment and the mounted etagd.toml.
        let etagd_env = compose_block("x-etagd-env: &etagd-env");
        assert_eq!(etagd_env["ETAGD_UPSTREAM"], "http://127.0.0.1:8000", "etagd reaches its app on loopback");
        assert_eq!(etagd_env["ETAGD_MEMCACHED"].split(',').count(), memcached.len());
        let token = etagd_env["ETAGD_ADMIN_TOKEN"].clone();
        let mut replicas = Vec::new();
        let mut sidecars = Vec::new();
        for _ in 0..2 {
            let (port, admin) = (free_port(), free_port());
            let mut env = etagd_env.clone();
            env.insert("ETAGD_LISTEN".into(), format!("127.0.0.1:{port}"));
            env.insert("ETAGD_ADMIN_LISTEN".into(), format!("127.0.0.1:{admin}"));
            env.insert("ETAGD_UPSTREAM".into(), format!("http://127.0.0.1:{app_port}"));
            env.insert("ETAGD_MEMCACHED".into(), memcached.iter().map(Memcached::addr).collect::<Vec<_>>().join(","));
            let config = repo_root().join("deploy/compose/etagd.toml");
            env.insert("ETAGD_CONFIG".into(), config.display().to_string());
            sidecars.push(spawn("etagd", &env));
            wait_until_up(&client, &format!("http://127.0.0.1:{admin}/readyz")).await;
            replicas.push((format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{admin}")));
        }

        // nginx forwards Host: localhost to both; the docs' curl commands do the same.
        let get = |base: &str, etag: Option<&str>| {
            let mut request = client.get(format!("{base}/api/servers")).header("host", "localhost");
            if let Some(etag) = etag {
                request = request.header("if-none-match", etag);
            }
            request.send()
        };
        let first = get(&replicas[0].0, None).await.expect("replica 1 answers");
        assert_eq!(first.status(), 200);
        let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
        let second = get(&replicas[1].0, None).await.expect("replica 2 answers");
        assert_eq!(second.status(), 200);
        assert_eq!(second.headers()["etag"], etag.as_str(), "both replicas serve the same validator");
        assert!(second.headers()["cache-status"].to_str().expect("ascii").contains("hit"));
        assert_eq!(second.headers()["x-served-by"], first.headers()["x-served-by"], "one origin render for both");
        let revalidated = get(&replicas[1].0, Some(&etag)).await.expect("replica 2 answers");
        assert_eq!(revalidated.status(), 304, "a validator minted through replica 1 earns a 304 from replica 2");

        // The route rule tags /api/servers "servers": invalidating it through replica 2's admin port (with the
        // compose token) makes replica 1 render again.
        let invalidated = client
            .post(format!("{}/invalidate", replicas[1].1))
            .bearer_auth(&token)
            .body(r#"{"tags":["servers"]}"#)
            .send()
            .await
            .expect("admin answers");
        assert_eq!(invalidated.status(), 200);
        let after = get(&replicas[0].0, Some(&etag)).await.expect("replica 1 answers");
        assert_eq!(after.status(), 200, "the old validator no longer matches");
        assert_ne!(after.headers()["etag"], etag.as_str());
        drop(sidecars);
    })
    .await;
}
