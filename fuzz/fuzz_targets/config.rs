//! Fuzz target: arbitrary text as a config file. Any panic is a bug: a bad config must get an
//! error that names the key, whatever it holds.
#![no_main]

use floodwatch::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml");
    }
});
