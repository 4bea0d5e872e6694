//! Engine benchmarks: bucket steps on a 20k-key table, router + 2 shards end to end, the cost of
//! `request_mask` on realistic records, and the measured heap bytes per tracked key.
//!
//! The memory figure comes from a counting global allocator around the system one: the bytes
//! a [`KeyTable`] holds after tracking N keys, divided by N, so hashbrown's control bytes and
//! its growth slack are included. It is printed before the timed benchmarks run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use crossbeam_channel::unbounded;

use floodwatch::addr::Addr;
use floodwatch::engine::router::Router;
use floodwatch::engine::rule::CompiledRules;
use floodwatch::engine::shard::{spawn_shards, ShardConfig};
use floodwatch::engine::table::KeyTable;
use floodwatch::engine::{Rate, RuleSpec, ShardOut, StatusMatch};
use floodwatch::hit::{Hit, NO_VHOST};
use floodwatch::parse::Record;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: u32 = 20_000;

fn rule(name: &str, milli_per_sec: u64, burst: u32) -> RuleSpec {
    RuleSpec {
        name: name.to_string(),
        rate: Rate {
            milli_per_sec,
            text: String::new(),
        },
        burst,
        ..floodwatch::config::default_rule()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A typical config: the default rule, a GET/POST flood rule without static assets, a login
/// rule and an error rule.
fn realistic_rules() -> Vec<RuleSpec> {
    vec![
        rule("default", 20_000, 100),
        RuleSpec {
            methods: strings(&["GET", "POST"]),
            exclude_extensions: strings(&["css", "js", "png", "jpg", "gif", "svg", "woff2", "ico"]),
            ..rule("get-flood", 20_000, 100)
        },
        RuleSpec {
            methods: strings(&["POST"]),
            path_prefix: strings(&["/wp-login.php", "/xmlrpc.php", "/user/login"]),
            ..rule("login", 1_000, 5)
        },
        RuleSpec {
            statuses: vec![StatusMatch::Class(4)],
            path_contains: strings(&["/.env", "phpmyadmin", "/.git/"]),
            ..rule("probe", 2_000, 10)
        },
    ]
}

/// xorshift: a fixed, cheap sequence of client picks.
fn picks(n: usize) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(KEYS)) as u32
        })
        .collect()
}

fn client(i: u32) -> Addr {
    Addr::from_v4(0x0a00_0000 + i * 7)
}

/// Heap bytes per (key, rule) entry once `keys` keys are tracked under `rules`.
fn bytes_per_key(keys: u32, rules: &CompiledRules) -> f64 {
    let before = LIVE.load(Relaxed);
    let mut table = KeyTable::new(rules, usize::MAX, 0);
    let mask = (1u32 << rules.len()) - 1;
    for i in 0..keys {
        let h = Hit {
            addr: client(i),
            time_ms: 1_700_000_000_000,
            vhost: NO_VHOST,
            rules: mask,
            flags: 0,
        };
        table.hit(&h, &mut |_| {});
    }
    let bytes = LIVE.load(Relaxed) - before;
    let entries = table.len() as f64;
    drop(table);
    bytes as f64 / entries
}

fn report_memory() {
    let one = CompiledRules::new(&[rule("default", 20_000, 100)]).unwrap();
    let four = CompiledRules::new(&realistic_rules()).unwrap();
    println!("memory per tracked (key, rule) entry, measured by a counting allocator:");
    for keys in [1_000, 14_000, 15_000, 20_000, 28_000, 29_000, 100_000] {
        println!(
            "  {keys:>7} keys, 1 rule : {:6.1} bytes",
            bytes_per_key(keys, &one)
        );
    }
    println!(
        "    20000 keys, 4 rules: {:6.1} bytes per entry",
        bytes_per_key(KEYS, &four)
    );
}

/// Bucket steps on a table holding 20k keys: each key comes back about every 100 ms of log time
/// (so the table stays near 20k keys; a few are swept and re-inserted), one rule.
fn bench_step(c: &mut Criterion) {
    let rules = CompiledRules::new(&[rule("default", 20_000, 100)]).unwrap();
    let mut table = KeyTable::new(&rules, usize::MAX, 0);
    let order = picks(1 << 16);
    let mut n: i64 = 0;
    let mut next = |table: &mut KeyTable, i: u32| {
        let h = Hit {
            addr: client(i),
            time_ms: 1_700_000_000_000 + n / 200,
            vhost: NO_VHOST,
            rules: 1,
            flags: 0,
        };
        n += 1;
        // In order, as a shard settles a replay: idle keys may be swept.
        table.settle(h.time_ms);
        table.hit(&h, &mut |o| {
            black_box(o);
        });
    };
    for i in 0..KEYS {
        next(&mut table, i);
    }
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(order.len() as u64));
    g.bench_function("step_20k_keys", |b| {
        b.iter(|| {
            for &i in &order {
                next(&mut table, i);
            }
        })
    });
    g.finish();
    println!("table after the step bench: {} keys", table.len());
}

/// Router + 2 shards, one producer, 1M hits over 20k clients and one hour of log time, with the
/// realistic rules (each hit steps 2 buckets, every 16th client 4). Hits are made on the fly,
/// as a parser would, so reading a prepared 48 MB array does not dominate the producer.
fn bench_end_to_end(c: &mut Criterion, measuring: bool) {
    const N: i64 = 1 << 20;
    let rules = Arc::new(CompiledRules::new(&realistic_rules()).unwrap());
    let cfg = ShardConfig {
        shards: 2,
        producers: 1,
        lateness_ms: 5_000,
        max_keys: 1_000_000,
    };
    let run = || {
        let (out, rx) = unbounded();
        let (txs, handles) = spawn_shards(&cfg, rules.clone(), out).expect("shard threads");
        let mut router = Router::new(txs, 0, rules.route_prefixes());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for k in 0..N {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % u64::from(KEYS)) as u32;
            let time_ms = 1_700_000_000_000 + k * 3_600_000 / N;
            router.push(Hit {
                addr: client(i),
                time_ms,
                vhost: NO_VHOST,
                rules: if i.is_multiple_of(16) { 0b1111 } else { 0b0011 },
                flags: 0,
            });
            if k % 65_536 == 65_535 {
                router.flush(time_ms);
            }
        }
        router.finish();
        for h in handles {
            h.join().unwrap();
        }
        rx.try_iter()
            .filter(|m| matches!(m, ShardOut::Offense { .. }))
            .count()
    };
    if !measuring {
        // `cargo test --all-targets`: criterion runs each bench once; skip the extra runs.
        c.bench_function("engine/router_2_shards_1M_hits", |b| b.iter(run));
        return;
    }
    let allocs = ALLOCS.load(Relaxed);
    let offenses = run();
    println!(
        "end to end: {} allocations for {N} hits, {offenses} offenses",
        ALLOCS.load(Relaxed) - allocs
    );
    if let Some(before) = cpu_ticks() {
        const RUNS: i64 = 20;
        for _ in 0..RUNS {
            black_box(run());
        }
        if let Some(after) = cpu_ticks() {
            // Clock ticks are 10 ms on Linux.
            let ns = (after - before) as f64 * 1e7 / (RUNS * N) as f64;
            println!("end to end: {ns:.1} ns of CPU (all threads) per hit");
        }
    }
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("router_2_shards_1M_hits", |b| b.iter(|| black_box(run())));
    g.finish();
}

/// User + system CPU time of the whole process in clock ticks, from `/proc/self/stat`: on a
/// shared machine it moves less than wall time when other work competes for the cores.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn bench_request_mask(c: &mut Criterion) {
    let rules = CompiledRules::new(&realistic_rules()).unwrap();
    let rec = |method: &'static str, target: &'static str, status| Record {
        client: b"203.0.113.7",
        method: method.as_bytes(),
        target: target.as_bytes(),
        protocol: b"HTTP/1.1",
        status,
        ..Record::default()
    };
    let records = [
        rec("GET", "/index.php?p=123&replytocom=44", 200),
        rec(
            "GET",
            "/wp-content/themes/twentyten/style.css?ver=6.4.2",
            200,
        ),
        rec("POST", "/wp-login.php", 200),
        rec("GET", "/static/img/header-background-large.JPG", 304),
        rec("GET", "/phpmyadmin/index.php", 404),
        rec("HEAD", "/", 200),
        rec(
            "GET",
            "/blog/2024/05/a-rather-long-article-slug-about-rate-limits/",
            200,
        ),
        rec("GET", "/.env", 404),
    ];
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("request_mask_4_rules", |b| {
        b.iter(|| {
            for r in &records {
                black_box(rules.request_mask(black_box(r)));
            }
        })
    });
    g.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; without it criterion only checks that each bench runs.
    let measuring = std::env::args().any(|a| a == "--bench");
    if measuring {
        report_memory();
    }
    let mut c = Criterion::default().configure_from_args();
    bench_request_mask(&mut c);
    bench_step(&mut c);
    bench_end_to_end(&mut c, measuring);
    c.final_summary();
}
