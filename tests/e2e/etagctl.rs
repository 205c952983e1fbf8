//! `etagctl` against a real sidecar's admin API and the same Memcached (issue 4): what one replica stored is
//! inspected and flushed by the CLI, and the next request misses.

use std::process::Command;

use etagd_testkit::Memcached;

use crate::support::{Fleet, Origin, Route, guard, url};

pub(crate) fn etagctl(args: &[&str]) -> (i32, String, String) {
    let binary = crate::compose::binary("etagctl");
    let output = Command::new(binary).env_clear().args(args).output().expect("etagctl runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etagctl_inspects_and_flushes_what_the_sidecar_stored() {
    guard(async {
        let origin = Origin::start().await;
        origin.route("/listing", Route::cacheable().header("surrogate-key", "listing"));
        origin.route("/other", Route::cacheable());
        let memcached = Memcached::start();
        let fleet = Fleet::new(&origin, &[&memcached]);
        let replica = fleet.replica(&["--admin-token", "secret"]).await;
        let stored = replica.get_ok("/listing").await;
        replica.get_ok("/other").await;
        let admin = replica.admin_url();

        // Through the admin API: inspect shows the sidecar's validator; a wrong token is refused.
        let (code, out, err) =
            etagctl(&["--admin", &admin, "--admin-token", "secret", "--json", "inspect", "--url", &url("/listing")]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&stored.etag().replace('"', "\\\"")), "inspect shows the stored ETag: {out}");
        let (code, _, err) =
            etagctl(&["--admin", &admin, "--admin-token", "wrong", "inspect", "--url", &url("/listing")]);
        assert_eq!(code, 1);
        assert!(err.contains("refused the token"), "{err}");

        // Flush by tag through the admin API: the next GET misses, the untagged entry stays.
        let (code, _, err) = etagctl(&["--admin", &admin, "--admin-token", "secret", "flush", "--tag", "listing"]);
        assert_eq!(code, 0, "{err}");
        assert!(!replica.get_ok("/listing").await.is_hit());
        assert!(replica.get_ok("/other").await.is_hit());

        // Directly against Memcached, in the sidecar's namespace: flush by URL, as the client sees it.
        let namespace = fleet.namespace().to_owned();
        let (code, _, err) =
            etagctl(&["--memcached", &memcached.addr(), "--namespace", &namespace, "flush", "--url", &url("/other")]);
        assert_eq!(code, 0, "{err}");
        assert!(!replica.get_ok("/other").await.is_hit(), "the CLI's key schema is the sidecar's");
        replica.shutdown().await;
    })
    .await;
}
