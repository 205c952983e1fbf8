//! An origin that writes HTTP/1.1 by hand from a script, for what an axum origin cannot send: interim (1xx)
//! responses before the final one (hyper's server has no API for them, hyperium/hyper#2426) and answers without
//! a `Date` field. It reads request heads (no request bodies), counts requests per path and keeps connections
//! alive; the final answer always carries `Content-Length`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::Serve;

type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// A running raw origin; stops when dropped.
pub(crate) struct RawOrigin {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    counts: Counts,
    task: tokio::task::JoinHandle<()>,
}

impl RawOrigin {
    /// Serves `routes` on a free loopback port; any other path answers 404.
    pub(crate) async fn start(routes: &'static [Serve]) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the raw origin on loopback");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let counts = Counts::default();
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, routes, shared.clone()));
            }
        });
        RawOrigin { url, counts, task }
    }

    /// Requests `path` has received.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.counts.lock().expect("no test panics while holding the lock").get(path).copied().unwrap_or(0)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(stream: TcpStream, routes: &'static [Serve], counts: Counts) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        // The rest of the head; the requests etagd sends here carry no body.
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let mut words = request_line.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/").to_owned());
        *counts.lock().expect("no test panics while holding the lock").entry(path.clone()).or_default() += 1;
        let answer = match routes.iter().find(|serve| serve.path == path) {
            Some(serve) => script(serve, method == "HEAD"),
            None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned(),
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The bytes answering one request: each interim response, then the final one.
fn script(serve: &Serve, head: bool) -> String {
    let mut out = String::new();
    for code in serve.interim {
        match code {
            103 => out.push_str("HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n"),
            102 => out.push_str("HTTP/1.1 102 Processing\r\n\r\n"),
            other => out.push_str(&format!("HTTP/1.1 {other} Interim\r\n\r\n")),
        }
    }
    let body = serve.body.map_or_else(|| format!("{} v1", serve.path), str::to_owned);
    out.push_str(&format!("HTTP/1.1 {} Final\r\n", serve.status));
    for (name, value) in serve.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    if !head {
        out.push_str(&body);
    }
    out
}
