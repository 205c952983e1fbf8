//! One real `nginx` process per test, on a free loopback port, with a generated configuration in a private
//! temporary directory, killed (and the directory removed) when the handle drops.
//!
//! Tests run a real nginx rather than a fake because what they prove is how etagd's validators survive the
//! proxy people actually put in front of it: nginx's gzip filter weakens strong ETags (`W/`) on responses it
//! compresses and passes already-encoded ones through. `make test` installs the binary
//! (`scripts/install-test-deps.sh`).
//!
//! The process runs in the foreground (`daemon off`) as a single process (`master_process off`): no worker
//! changes user, so it behaves the same as root and non-root, and killing the one child leaves nothing behind.
//! Every path nginx writes (pid, logs, temp files) lives in the temporary directory, so nothing under `/etc` or
//! `/var` is read or written.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a freshly spawned nginx may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How many times to pick another port when the chosen one was taken between picking and binding.
const PORT_ATTEMPTS: usize = 5;
/// Where Debian installs nginx; `/usr/sbin` is often missing from a non-root user's PATH.
const SBIN_NGINX: &str = "/usr/sbin/nginx";

/// A running `nginx` on `127.0.0.1:PORT`.
///
/// The process is killed and its temporary directory removed when the handle drops, so each test owns its
/// server for exactly its own lifetime.
#[derive(Debug)]
pub struct Nginx {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx with `http_body(listen)` as the contents of its `http { }` block, where `listen` is the
    /// `127.0.0.1:PORT` the body's `server` must `listen` on. The block already sets the temp paths and the
    /// access log; the body adds `upstream` and `server` blocks. The function may be called more than once
    /// (once per port tried).
    ///
    /// # Panics
    ///
    /// When the `nginx` binary is missing (run `make test`, which installs it), the configuration is invalid,
    /// or the server does not start within 10 seconds.
    pub fn start(http_body: impl Fn(&str) -> String) -> Nginx {
        let binary = binary();
        let dir = private_dir();
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let config = main_config(&dir, &http_body(&listen));
            let config_path = dir.join("nginx.conf");
            std::fs::write(&config_path, config)
                .unwrap_or_else(|error| panic!("write {}: {error}", config_path.display()));
            match spawn_ready(&binary, &dir, port) {
                Ok(child) => {
                    return Nginx { port, dir, child: Some(child) };
                }
                Err(failure) => last_failure = failure,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("nginx did not start after {PORT_ATTEMPTS} attempts: {last_failure}");
    }

    /// Starts nginx as a gzipping reverse proxy in front of `upstream` (`127.0.0.1:PORT`), configured the way
    /// deployments commonly are: `gzip on` for JSON (`gzip_proxied any`, `gzip_min_length 20`, no
    /// `gzip_vary`), HTTP/1.1 with keep-alive to the upstream, and the client's `Host` passed on.
    ///
    /// # Panics
    ///
    /// As [`Nginx::start`].
    pub fn gzip_proxy(upstream: &str) -> Nginx {
        let upstream = upstream.to_owned();
        Nginx::start(move |listen| gzip_proxy_config(&upstream, listen))
    }

    /// The address to point a client at: `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The base URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The error log so far (for failure messages); empty when unreadable.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `http` block body of [`Nginx::gzip_proxy`].
fn gzip_proxy_config(upstream: &str, listen: &str) -> String {
    format!(
        r#"
    upstream etagd {{
        server {upstream};
        keepalive 8;
    }}
    server {{
        listen {listen};
        gzip on;
        gzip_types application/json;
        gzip_proxied any;
        gzip_min_length 20;
        location / {{
            proxy_pass http://etagd;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
"#
    )
}

/// The whole configuration file: foreground, one process, every written path inside `dir`.
fn main_config(dir: &Path, http_body: &str) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http_body}
}}
"#
    )
}

/// The nginx binary: `nginx` on PATH, else Debian's `/usr/sbin/nginx`.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join("nginx")).find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            let sbin = PathBuf::from(SBIN_NGINX);
            sbin.is_file().then_some(sbin)
        })
        .unwrap_or_else(|| {
            panic!(
                "the nginx binary is neither on PATH nor at {SBIN_NGINX}; run `make test`, which installs test \
                 dependencies (scripts/install-test-deps.sh)"
            )
        })
}

/// A fresh directory under the system temp dir, unique to this process and call.
fn private_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "etagd-nginx-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // A directory left by a crashed run with a recycled pid would hold a stale pid file.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
    dir
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// Spawns nginx with the configuration in `dir` and waits until it is ours and accepting on `port`. Returns
/// why it failed (port clash, bad config, deadline) so the caller can retry on another port.
fn spawn_ready(binary: &Path, dir: &Path, port: u16) -> Result<Child, String> {
    let pid_file = dir.join("nginx.pid");
    let error_log = dir.join("error.log");
    let _ = std::fs::remove_file(&pid_file);
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        // Before reading the configuration nginx opens its compiled-in error log under /var: point it here.
        .arg("-e")
        .arg(&error_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot spawn {}: {error}", binary.display()));
    let deadline = Instant::now() + START_DEADLINE;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&error_log).unwrap_or_default();
            return Err(format!("nginx on port {port} exited with {status}: {}", log.trim()));
        }
        // nginx writes its pid file after binding its listeners: only our child's pid counts, so a port taken
        // by another process in the meantime never looks ready.
        let ours = std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.trim() == child.id().to_string());
        if ours && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&error_log).unwrap_or_default();
            return Err(format!(
                "nginx on port {port} did not accept connections within {START_DEADLINE:?}: {}",
                log.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Sends one HTTP/1.0 request over a fresh connection and returns the whole raw answer.
    fn raw_get(addr: &str, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: app.test\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    fn answering(listen: &str) -> String {
        format!("server {{ listen {listen}; location / {{ return 200 \"host=$http_host\\n\"; }} }}")
    }

    #[test]
    fn serves_its_config_and_cleans_up_on_drop() {
        let nginx = Nginx::start(answering);
        assert_eq!(nginx.addr(), format!("127.0.0.1:{}", nginx.port()));
        assert_eq!(nginx.url(), format!("http://{}", nginx.addr()));
        let answer = raw_get(&nginx.addr(), "/").expect("nginx answers");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("host=app.test\n"), "{answer}");
        assert!(nginx.error_log().contains("nginx/"), "{}", nginx.error_log());
        let (addr, dir) = (nginx.addr(), nginx.dir.clone());
        drop(nginx);
        assert!(!dir.exists(), "the temp dir is removed");
        assert!(raw_get(&addr, "/").is_err(), "a dropped nginx refuses connections");
    }

    #[test]
    fn two_servers_get_two_ports_and_two_dirs() {
        let (a, b) = (Nginx::start(answering), Nginx::start(answering));
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir, b.dir);
    }

    #[test]
    fn gzip_proxy_passes_host_and_gzips_json() {
        let config = gzip_proxy_config("127.0.0.1:1", "127.0.0.1:2");
        for line in [
            "server 127.0.0.1:1;",
            "keepalive 8;",
            "listen 127.0.0.1:2;",
            "gzip on;",
            "gzip_types application/json;",
            "gzip_proxied any;",
            "gzip_min_length 20;",
            "proxy_pass http://etagd;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_set_header Host $http_host;",
        ] {
            assert!(config.contains(line), "{line} missing from {config}");
        }
        // Nothing answers on the upstream port: nginx starts anyway and reports the gateway error.
        let nginx = Nginx::gzip_proxy("127.0.0.1:1");
        let answer = raw_get(&nginx.addr(), "/").expect("nginx answers");
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    }
}
