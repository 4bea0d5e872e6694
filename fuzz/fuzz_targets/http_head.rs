//! Fuzz target: arbitrary bytes as what a client sends the metrics endpoint, cut into reads of
//! sizes the input chooses, through the request-head buffer and parser. Any panic is a bug: the
//! endpoint answers whoever connects.
#![no_main]

use floodwatch::watch::http::{parse_head, HeadBuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut % 64) + 1;
    let mut head = HeadBuf::default();
    for read in rest.chunks(step) {
        if head.push(read).is_some() {
            break;
        }
    }
    let _ = parse_head(rest);
});
