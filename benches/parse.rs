//! Parser throughput on real logs from `testdata/peers/` (lines per second, one thread).
//!
//! Each log is replicated in memory to about 4 MB and split into lines beforehand, so the figure
//! is the parser's alone: `combined` (the hand-written fast path) on the lnav shop log and on
//! elastic/examples' apache_logs, and the same shop log through a custom nginx `log_format`
//! (the general field plan); and client addresses alone, as those logs give them.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use floodwatch::parse::{Format, TimeCache};

/// About this many bytes of log per benchmark input.
const TARGET_BYTES: usize = 4 << 20;

fn load(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/peers")
        .join(rel);
    let one = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut data = Vec::with_capacity(TARGET_BYTES + one.len());
    while data.len() < TARGET_BYTES {
        data.extend_from_slice(&one);
        if data.last() != Some(&b'\n') {
            data.push(b'\n');
        }
    }
    data
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

fn run(c: &mut Criterion, name: &str, format: &Format, lines: &[&[u8]]) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function(name, |b| {
        let mut times = TimeCache::new();
        b.iter(|| {
            let mut ok = 0u64;
            for line in lines {
                if let Ok(r) = format.parse(line, &mut times) {
                    ok += r.status as u64 + r.time_ms as u64 + r.client.len() as u64;
                }
            }
            black_box(ok)
        })
    });
    group.finish();
}

fn parse_benches(c: &mut Criterion) {
    let combined = Format::from_spec("combined").expect("combined");
    let shop = load("lnav/logfile_shop_access_log.0");
    let shop_lines = split(&shop);
    run(c, "combined/lnav-shop", &combined, &shop_lines);

    let apache = load("elastic-examples/apache_logs");
    let apache_lines = split(&apache);
    run(c, "combined/elastic-apache_logs", &combined, &apache_lines);

    // The shop log's real format: nginx combined plus the forwarded-for header.
    let nginx = Format::from_spec(
        r#"nginx:'$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"'"#,
    )
    .expect("nginx format");
    run(c, "nginx-custom/lnav-shop", &nginx, &shop_lines);

    // Client addresses alone, as the logs give them (the field before the first space).
    let clients: Vec<&[u8]> = apache_lines
        .iter()
        .chain(&shop_lines)
        .filter_map(|l| l.split(|&b| b == b' ').next())
        .collect();
    let mut group = c.benchmark_group("addr");
    group.throughput(Throughput::Elements(clients.len() as u64));
    group.bench_function("parse/real-clients", |b| {
        b.iter(|| {
            let mut sum = 0u128;
            for a in &clients {
                if let Some(addr) = floodwatch::addr::Addr::parse(a) {
                    sum ^= addr.0;
                }
            }
            black_box(sum)
        })
    });
    group.finish();
}

criterion_group!(benches, parse_benches);
criterion_main!(benches);
