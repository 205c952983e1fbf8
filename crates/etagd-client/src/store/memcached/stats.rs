//! Statistics: the text-protocol `stats` command over a short-lived connection (the meta protocol has no
//! statistics verb), parsed into [`ServerStats`]; and `stats settings`, for the server's item size limit.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::routing::ServerNode;
use crate::store::ServerStats;

impl ServerNode {
    /// `stats` over a short-lived connection: the meta protocol has no statistics verb.
    pub(super) async fn stats(&self) -> ServerStats {
        let raw = tokio::time::timeout(self.deadline(), raw_stats(&self.addr, self.connect_timeout, "stats")).await;
        let raw = match raw {
            Ok(Ok(raw)) => raw,
            Ok(Err(error)) => return unreachable_stats(&self.addr, error),
            Err(_elapsed) => {
                return unreachable_stats(&self.addr, format!("no answer to stats within {:?}", self.deadline()));
            }
        };
        let number = |name: &str| raw.get(name).and_then(|value| value.parse::<u64>().ok());
        ServerStats {
            server: self.addr.clone(),
            reachable: true,
            error: None,
            version: raw.get("version").cloned(),
            items: number("curr_items"),
            bytes: number("bytes"),
            limit_bytes: number("limit_maxbytes"),
            get_hits: number("get_hits"),
            get_misses: number("get_misses"),
            cmd_get: number("cmd_get"),
            evictions: number("evictions"),
        }
    }
}

/// What `stats settings` tells about a server's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// The largest value it stores: `item_size_max` less headroom for the key and the item header, which
    /// memcached counts against the same limit.
    pub(super) item: usize,
    /// Its memory for items (`maxbytes`, memcached's `-m`), when reported.
    pub(super) memory: Option<u64>,
}

/// A server's limits, from `stats settings`.
pub(super) async fn read_limits(addr: &str, connect_timeout: Duration, deadline: Duration) -> Result<Limits, String> {
    let raw = tokio::time::timeout(deadline, raw_stats(addr, connect_timeout, "stats settings"))
        .await
        .map_err(|_elapsed| format!("no answer to stats settings within {deadline:?}"))??;
    limits_from(&raw)
}

fn limits_from(raw: &HashMap<String, String>) -> Result<Limits, String> {
    let item_size_max = raw
        .get("item_size_max")
        .and_then(|value| value.parse::<usize>().ok())
        .ok_or_else(|| "stats settings names no item_size_max".to_owned())?;
    let memory = raw.get("maxbytes").and_then(|value| value.parse::<u64>().ok()).filter(|bytes| *bytes > 0);
    Ok(Limits { item: item_size_max.saturating_sub(ITEM_HEADROOM), memory })
}

/// What memcached counts against `item_size_max` besides the value: the key (at most 250 bytes), the item
/// header with its CAS, and the value's trailing CRLF; rounded up.
pub(super) const ITEM_HEADROOM: usize = 512;

fn unreachable_stats(addr: &str, error: String) -> ServerStats {
    ServerStats { server: addr.to_owned(), reachable: false, error: Some(error), ..ServerStats::default() }
}

/// Sends a `stats` command and reads `STAT <name> <value>` lines up to `END`.
async fn raw_stats(addr: &str, connect_timeout: Duration, command: &str) -> Result<HashMap<String, String>, String> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_elapsed| format!("connect timed out after {connect_timeout:?}"))?
        .map_err(|error| format!("connect failed: {error}"))?;
    let mut reader = BufReader::new(stream);
    let request = format!("{command}\r\n");
    reader.get_mut().write_all(request.as_bytes()).await.map_err(|error| format!("write failed: {error}"))?;
    let mut stats = HashMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).await.map_err(|error| format!("read failed: {error}"))?;
        if read == 0 {
            return Err("connection closed before END".to_owned());
        }
        match parse_stat_line(&line) {
            StatLine::End => return Ok(stats),
            StatLine::Stat(name, value) => {
                stats.insert(name.to_owned(), value.to_owned());
            }
            StatLine::Error(message) => return Err(format!("server answered {message:?}")),
            StatLine::Other => {}
        }
    }
}

/// One line of a `stats` answer.
#[derive(Debug, PartialEq, Eq)]
enum StatLine<'a> {
    Stat(&'a str, &'a str),
    End,
    Error(&'a str),
    Other,
}

fn parse_stat_line(line: &str) -> StatLine<'_> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line == "END" {
        return StatLine::End;
    }
    if line == "ERROR" || line.starts_with("SERVER_ERROR") || line.starts_with("CLIENT_ERROR") {
        return StatLine::Error(line);
    }
    let mut fields = line.splitn(3, ' ');
    match (fields.next(), fields.next(), fields.next()) {
        (Some("STAT"), Some(name), Some(value)) => StatLine::Stat(name, value),
        _ => StatLine::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse() {
        fn check(line: &str, expected: StatLine<'_>) {
            assert_eq!(parse_stat_line(line), expected, "{line:?}");
        }
        check("STAT curr_items 3\r\n", StatLine::Stat("curr_items", "3"));
        check("STAT version 1.6.18\r\n", StatLine::Stat("version", "1.6.18"));
        check("STAT rusage_user 0.1 0.2\r\n", StatLine::Stat("rusage_user", "0.1 0.2"));
        check("END\r\n", StatLine::End);
        check("ERROR\r\n", StatLine::Error("ERROR"));
        check("SERVER_ERROR busy\r\n", StatLine::Error("SERVER_ERROR busy"));
        check("garbage\r\n", StatLine::Other);
    }

    #[test]
    fn settings_give_the_item_and_memory_limits() {
        let raw = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
        let both = raw(&[("item_size_max", "1048576"), ("maxbytes", "67108864")]);
        assert_eq!(limits_from(&both), Ok(Limits { item: (1 << 20) - ITEM_HEADROOM, memory: Some(64 << 20) }));
        let no_memory = raw(&[("item_size_max", "2097152")]);
        assert_eq!(limits_from(&no_memory).map(|limits| limits.memory), Ok(None));
        assert!(limits_from(&raw(&[("maxbytes", "1")])).is_err(), "no item limit: an error");
    }
}
