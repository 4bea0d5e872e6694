//! The wall clock, in the unit log times use (UTC milliseconds since the Unix epoch).
//!
//! Log time decides; the wall clock only ends bans in watch, bounds how long idle files are
//! waited for, and refuses lines dated far in the future. A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in UTC milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
