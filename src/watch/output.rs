//! Where watch's events go: the configured sinks, or stdout as JSON lines flushed one by one.

use std::io::{self, Write};

use crate::decide::event::write_json_line;
use crate::decide::Event;
use crate::sink::{SinkCounters, Sinks};

pub(crate) enum Output<'a> {
    Sinks(Sinks),
    Stream {
        out: &'a mut dyn Write,
        line: Vec<u8>,
        /// The first write error; later events are dropped and the loop stops.
        error: Option<io::Error>,
    },
}

impl Output<'_> {
    pub(crate) fn emit(&mut self, ev: &Event) {
        match self {
            Output::Sinks(s) => s.emit(ev),
            Output::Stream { out, line, error } => {
                if error.is_some() {
                    return;
                }
                line.clear();
                write_json_line(ev, line);
                if let Err(e) = out.write_all(line).and_then(|()| out.flush()) {
                    *error = Some(e);
                }
            }
        }
    }

    /// Each sink's counters so far (none when events go to a stream).
    pub(crate) fn sink_counters(&self) -> Vec<(String, SinkCounters)> {
        match self {
            Output::Sinks(s) => s.counters(),
            Output::Stream { .. } => Vec::new(),
        }
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self, Output::Stream { error: Some(_), .. })
    }
}
