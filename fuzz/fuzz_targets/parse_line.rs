//! Fuzz target: arbitrary bytes through every built-in log format and a custom nginx and Apache
//! one, and the input's first line as a format spec of its own. Any panic is a bug: hostile log
//! lines and config text are normal input.
#![no_main]

use std::sync::OnceLock;

use floodwatch::parse::{Format, TimeCache};
use libfuzzer_sys::fuzz_target;

fn formats() -> &'static [Format] {
    static FORMATS: OnceLock<Vec<Format>> = OnceLock::new();
    FORMATS.get_or_init(|| {
        [
            "combined",
            "common",
            "vhost_combined",
            r#"nginx:'$host $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time $msec "$http_cf_connecting_ip"'"#,
            r#"apache:%v:%p %a %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\" %D %{msec}t %{CF-Connecting-IP}i"#,
            r#"apache:%{%Y-%m-%dT%H:%M:%S}t.%{usec_frac}t%{%z}t %h \"%m %U%q %H\" %s %O"#,
        ]
        .into_iter()
        .map(|s| {
            let mut f = Format::from_spec(s).expect("built-in spec");
            let _ = f.set_client_ip_field("http_cf_connecting_ip");
            f
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut times = TimeCache::new();
    for f in formats() {
        let _ = f.parse(data, &mut times);
    }
    // The first line as a spec, the rest as a log line for it.
    if let Some(nl) = data.iter().position(|&b| b == b'\n') {
        let spec = String::from_utf8_lossy(&data[..nl]);
        if let Ok(mut f) = Format::from_spec(&spec) {
            let _ = f.set_client_ip_field("http_x_forwarded_for");
            let _ = f.has_vhost();
            let _ = f.parse(&data[nl + 1..], &mut times);
        }
    }
});
