//! What resolving real clients behind a proxy costs per line (one thread, lines split
//! beforehand): `Ingest::line` (parse, client, rule mask) on `testdata/proxy/` logs with and
//! without the `[proxy]` table, and `ClientIp::resolve` alone.
//!
//! `ingest/combined` is the no-proxy hot path on the replay demo, to compare with the same
//! bench run on a tree without proxy support.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use floodwatch::addr::Addr;
use floodwatch::config::{default_rule, Config};
use floodwatch::engine::rule::CompiledRules;
use floodwatch::hit::NO_VHOST;
use floodwatch::parse::{Format, TimeCache};
use floodwatch::proxy;
use floodwatch::source::ingest::Ingest;
use floodwatch::vhost::Vhosts;

/// About this many bytes of log per benchmark input.
const TARGET_BYTES: usize = 4 << 20;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn load(rel: &str) -> Vec<u8> {
    let path = testdata(rel);
    let one = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut data = Vec::with_capacity(TARGET_BYTES + one.len());
    while data.len() < TARGET_BYTES {
        data.extend_from_slice(&one);
    }
    data
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// An ingest for `config_text` (`[input] format` and maybe `[proxy]`).
fn ingest(config_text: &str) -> Ingest {
    let config = Config::parse(config_text, "bench").expect("config");
    let mut format = Format::from_spec(&config.input.format).expect("format");
    let proxies = proxy::setup(&config, &mut format).expect("proxy");
    let rules = CompiledRules::new(&[default_rule()]).expect("rules");
    Ingest::new(Arc::new(format), Arc::new(rules), Vhosts::new())
        .with_client_ip(proxies.client_ip())
}

fn run(c: &mut Criterion, name: &str, mut ingest: Ingest, lines: &[&[u8]]) {
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for line in lines {
                if let Some(h) = ingest.line(line, NO_VHOST) {
                    sum = sum.wrapping_add(h.addr.0 as u64 ^ u64::from(h.flags));
                }
            }
            black_box(sum)
        })
    });
    group.finish();
}

fn with_format(format: &str, proxy: &str) -> String {
    format!("[input]\nformat = '{format}'\n{proxy}")
}

fn proxy_benches(c: &mut Criterion) {
    let demo = load("replay/vhosts/example.com/logs/access_log");
    run(c, "combined", ingest(""), &split(&demo));

    let cf_config = std::fs::read_to_string(testdata("proxy/cloudflare.toml")).expect("config");
    let cf_format = Config::parse(&cf_config, "bench")
        .expect("config")
        .input
        .format;
    let cf = load("proxy/cloudflare/access_log");
    let cf_lines = split(&cf);
    run(
        c,
        "cf-format/no-proxy",
        ingest(&with_format(&cf_format, "")),
        &cf_lines,
    );
    run(
        c,
        "cf-format/trusted-no-field",
        ingest(&with_format(
            &cf_format,
            "[proxy]\ntrusted = [\"cloudflare\"]\n",
        )),
        &cf_lines,
    );
    run(
        c,
        "cf-format/cf-connecting-ip",
        ingest(&cf_config),
        &cf_lines,
    );

    let xff_config = std::fs::read_to_string(testdata("proxy/xff.toml")).expect("config");
    let xff = load("proxy/xff/access_log");
    run(
        c,
        "xff-format/x-forwarded-for",
        ingest(&xff_config),
        &split(&xff),
    );

    // The resolver alone: (connecting address, field) pairs taken from the parsed CF log.
    let config = Config::parse(&cf_config, "bench").expect("config");
    let mut format = Format::from_spec(&config.input.format).expect("format");
    let proxies = proxy::setup(&config, &mut format).expect("proxy");
    let ip = proxies.client_ip().expect("client_ip");
    let mut times = TimeCache::new();
    let pairs: Vec<(Addr, &[u8])> = cf_lines
        .iter()
        .filter_map(|l| format.parse(l, &mut times).ok())
        .filter_map(|r| Some((Addr::parse(r.client)?, r.real_client)))
        .collect();
    let mut group = c.benchmark_group("resolve");
    group.throughput(Throughput::Elements(pairs.len() as u64));
    group.bench_function("cf-connecting-ip", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &(conn, field) in &pairs {
                n = n.wrapping_add(match ip.resolve(conn, field) {
                    proxy::Client::Direct => 1,
                    proxy::Client::Proxied(a) => a.0 as u64,
                    proxy::Client::Unusable => 3,
                });
            }
            black_box(n)
        })
    });
    // Its two parts: the trusted-range lookup of the connecting address, and parsing the field.
    group.bench_function("lookup-only", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &(conn, _) in &pairs {
                n += u64::from(ip.is_trusted(conn));
            }
            black_box(n)
        })
    });
    group.bench_function("field-parse-only", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &(_, field) in &pairs {
                n = n.wrapping_add(Addr::parse(field).map_or(0, |a| a.0 as u64));
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, proxy_benches);
criterion_main!(benches);
