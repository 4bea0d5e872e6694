//! Fuzz target: arbitrary bytes as what a client sends watch's control socket, cut into reads
//! of sizes the input chooses, through the request framer and the JSON request parser. Any
//! panic is a bug: the socket reads whatever a local process writes before its peer is judged.
#![no_main]

use floodwatch::conns::Framer;
use floodwatch::control::server::Line;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut % 64) + 1;
    let mut line = Line::default();
    for read in rest.chunks(step) {
        if line.push(read).is_some() {
            break;
        }
    }
});
