//! The real sidecar's access log: one line per request on stdout, written from the request's report, in the
//! text and JSON shapes, and silenced by `ETAGD_LOG=...,etagd::access=off` (README, "Observability").

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::compose::binary;
use crate::support::{self, Origin, Route, guard};

struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs the sidecar (embedded store, a cacheable `/page` behind it) with `args` and `env`, makes a miss and a
/// hit of `/page`, and returns its stdout lines once it has stopped.
async fn log_of(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let origin = Origin::start().await;
    origin.route("/page", Route::cacheable());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(binary("etagd"))
        .args(["--listen", &listen, "--admin-listen", "127.0.0.1:0", "--upstream", &origin.url])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sidecar starts");
    let stdout = child.stdout.take().expect("piped");
    let sidecar = Sidecar(child);
    let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let url = format!("http://{listen}/page");
    let mut up = false;
    for _ in 0..200 {
        if client.get(&url).header("host", support::HOST).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the sidecar comes up");
    let hit = client.get(&url).header("host", support::HOST).send().await.expect("a response");
    assert!(hit.headers()["cache-status"].to_str().unwrap().contains("hit"));
    // Lines are written at least every 100 ms; then stop the sidecar, which closes its stdout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(sidecar);
    lines.join().expect("the reader thread")
}

fn access_lines(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|line| line.contains("etagd::access")).collect()
}

#[tokio::test]
async fn each_request_writes_one_text_line_with_its_outcome() {
    guard(async {
        let lines = log_of(&[], &[]).await;
        let access = access_lines(&lines);
        assert_eq!(access.len(), 2, "a miss and a hit: {lines:#?}");
        let expected_host = format!("host=\"{}\"", support::HOST);
        for (line, outcome) in access.iter().zip(["outcome=\"miss\"", "outcome=\"hit\""]) {
            assert!(line.contains(" INFO etagd::access: request method=GET "), "{line}");
            assert!(line.contains(&expected_host) && line.contains(" path=/page status=200 "), "{line}");
            assert!(line.contains(outcome) && line.contains(" ms="), "{line}");
        }
        assert!(access[0].contains(" origin_ms="), "the miss asked the origin: {}", access[0]);
        assert!(!access[1].contains(" origin_ms="), "the hit did not: {}", access[1]);
    })
    .await;
}

#[tokio::test]
async fn json_lines_carry_the_same_fields() {
    guard(async {
        let lines = log_of(&["--log-format", "json"], &[]).await;
        let access = access_lines(&lines);
        assert_eq!(access.len(), 2, "{lines:#?}");
        let hit: serde_json::Value = serde_json::from_str(access[1]).expect("one JSON object per line");
        assert_eq!(hit["target"], "etagd::access");
        assert_eq!(hit["level"], "INFO");
        assert_eq!(hit["fields"]["message"], "request");
        assert_eq!(hit["fields"]["path"], "/page");
        assert_eq!(hit["fields"]["status"], 200);
        assert_eq!(hit["fields"]["outcome"], "hit");
    })
    .await;
}

#[tokio::test]
async fn the_filter_can_silence_the_access_log_alone() {
    guard(async {
        let lines = log_of(&[], &[("ETAGD_LOG", "info,etagd::access=off")]).await;
        assert!(access_lines(&lines).is_empty(), "{lines:#?}");
        assert!(lines.iter().any(|line| line.contains("INFO")), "other info lines still written: {lines:#?}");
    })
    .await;
}
