//! Issue 14, rolling upgrades: the landed release (key schema `etagd1`, built by
//! `scripts/build-landed-release.sh`) and this one with `--bridge-schema etagd1`, side by side against one
//! Memcached, never serve an entry that an invalidation through either of them removed: URLs (RFC 9111 section
//! 4.4, an unsafe method through either), tags and the whole namespace (the admin API of either).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etagd_testkit::Memcached;

use crate::support::{Fleet, HOST, Origin, Replica, Reply, Route, guard, http_client, send};

/// Where `scripts/build-landed-release.sh` (run by `make test`) leaves the landed release's binary.
fn landed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETAGD_LANDED_BIN") {
        return path.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"), PathBuf::from);
    let path = cache.join("etagd/landed-43b85aa688ac4c4658953cad91d150dec4c86b23/target/debug/etagd");
    assert!(path.exists(), "{} is missing: run scripts/build-landed-release.sh (make test does)", path.display());
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The landed release as a process, killed when dropped.
struct Landed {
    child: Child,
    proxy: String,
    admin: String,
    client: reqwest::Client,
}

impl Landed {
    async fn start(origin: &Origin, memcached: &Memcached, namespace: &str) -> Landed {
        // A port picked free can be taken by a parallel test before the process binds it; the process then
        // exits at once, and is started again on other ports.
        for _attempt in 0..3 {
            let (port, admin) = (free_port(), free_port());
            let child = Command::new(landed_binary())
                .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
                .args(["--upstream", &origin.url, "--memcached", &memcached.addr(), "--namespace", namespace])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the landed release starts");
            let mut landed = Landed {
                child,
                proxy: format!("http://127.0.0.1:{port}"),
                admin: format!("http://127.0.0.1:{admin}"),
                client: http_client(),
            };
            for _ in 0..200 {
                if landed
                    .client
                    .get(format!("{}/readyz", landed.admin))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return landed;
                }
                if landed.child.try_wait().expect("the landed release can be waited for").is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("the landed release did not become ready");
    }

    async fn request(&self, method: &str, path: &str) -> Reply {
        send(&self.client, method, &format!("{}{path}", self.proxy), &[("host", HOST)], None).await
    }

    async fn invalidate(&self, json: &str) {
        let url = format!("{}/invalidate", self.admin);
        let reply = send(&self.client, "POST", &url, &[("content-type", "application/json")], Some(json.into())).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

impl Drop for Landed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both releases answer `path` with `version`, and a second GET through each is a hit of it.
async fn both_serve(old: &Landed, new: &Replica, path: &str, version: usize) {
    let expected = format!("{path} v{version}");
    for _ in 0..2 {
        let reply = old.request("GET", path).await;
        assert_eq!(reply.text(), expected, "landed release: {}", reply.cache_status());
        let reply = new.get_ok(path).await;
        assert_eq!(reply.text(), expected, "this release: {}", reply.cache_status());
    }
    assert!(old.request("GET", path).await.is_hit(), "the landed release stores {path}");
    assert!(new.get_ok(path).await.is_fresh_hit(), "this release stores {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_through_either_release_reaches_both() {
    guard(async {
        let memcached = Memcached::start();
        let origin = Origin::start().await;
        origin.route("/page", Route::cacheable());
        origin.route("/tagged", Route::cacheable().header("surrogate-key", "catalogue"));
        let fleet = Fleet::new(&origin, &[&memcached]);
        let new = fleet.replica(&["--bridge-schema", "etagd1"]).await;
        let old = Landed::start(&origin, &memcached, fleet.namespace()).await;
        both_serve(&old, &new, "/page", 1).await;
        both_serve(&old, &new, "/tagged", 1).await;

        // A POST through the landed release invalidates the URL (RFC 9111 section 4.4) for this release too.
        let v = origin.bump_version();
        assert_eq!(old.request("POST", "/page").await.status, 200);
        both_serve(&old, &new, "/page", v).await;
        // And one through this release for the landed one.
        let v = origin.bump_version();
        assert_eq!(new.request("POST", "/page", &[]).await.status, 200);
        both_serve(&old, &new, "/page", v).await;

        // A tag invalidated through either admin API.
        let v = origin.bump_version();
        old.invalidate(r#"{"tags": ["catalogue"]}"#).await;
        both_serve(&old, &new, "/tagged", v).await;
        let v = origin.bump_version();
        new.invalidate(r#"{"tags": ["catalogue"]}"#).await;
        both_serve(&old, &new, "/tagged", v).await;

        // The whole namespace through either.
        let v = origin.bump_version();
        old.invalidate(r#"{"all": true}"#).await;
        both_serve(&old, &new, "/page", v).await;
        let v = origin.bump_version();
        new.invalidate(r#"{"all": true}"#).await;
        both_serve(&old, &new, "/tagged", v).await;
        new.shutdown().await;
    })
    .await;
}
