//! What producing each stored coding costs per fill, by body size and level: the figures behind the default
//! `--compress-max-bytes` and the per-size levels (`CompressionPolicy::level_for`). Run with
//! `cargo run --release -p etagd-client --example coding_cost -- FILE...` on sample bodies (e.g. the demo
//! origin's `/json/{n}`); prints microseconds per encode and the encoded size.

use std::time::Instant;

use etagd_client::encoding::{Coding, CompressionPolicy};

fn main() {
    for path in std::env::args().skip(1) {
        let body = std::fs::read(&path).expect("a readable sample body");
        let rounds = (4_000_000 / body.len().max(1)).clamp(1, 2_000);
        // What one fill costs making every coding (levels by size); by default a fill makes only gzip.
        let policy = CompressionPolicy { on_demand: false, ..CompressionPolicy::default() };
        let started = Instant::now();
        let mut bytes = 0;
        for _ in 0..rounds {
            bytes = policy.encode_at_fill(&body).iter().map(|(_, encoded)| encoded.len()).sum::<usize>();
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        println!("{:>9} B all codings, levels by size: {micros:>10.1} us, {bytes:>9} B in all", body.len());
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            for level in [1, 3, 4, 5, 6] {
                let started = Instant::now();
                let mut len = 0;
                for _ in 0..rounds {
                    len = coding.encode(&body, level).expect("encodes").len();
                }
                let micros = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;
                println!(
                    "{:>9} B {:>4} level {level}: {micros:>10.1} us, {len:>9} B ({:.1}x)",
                    body.len(),
                    coding.as_str(),
                    body.len() as f64 / len as f64
                );
            }
        }
    }
}
