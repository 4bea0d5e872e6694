//! The two marks watch hands the shards after a round of reads: how far they may process
//! (*low*) and how far back lines may still come (*settled*); see [`ShardMsg::Hits`].
//!
//! Replay can wait for its slowest file; watch cannot (a vhost may be quiet for hours), so its
//! low mark follows the newest line read, and the wall clock when the logs are idle. A line that
//! then comes older than what was processed (a buffered log, a lagging vhost, a skewed clock,
//! older lines appended) is late and counts at its own time against its key's state (see
//! `engine::shard`): exact as long as that state is still there. The settled mark is what keeps
//! it there: the oldest newest-time over the files that delivered lines within [`QUIET_MS`], so
//! that each file that is being written can still come with anything not older than what it
//! last gave. A file silent for longer is no longer waited for: if it then delivers lines older
//! than what others gave since, their keys may find their state forgotten and count as new —
//! fewer bans, never more. Neither mark ever moves a line's time.
//!
//! [`ShardMsg::Hits`]: crate::engine::ShardMsg::Hits

/// How far the low mark may trail the wall clock when nothing newer was read, and how far it
/// may run ahead of it (a clock ahead would otherwise make every later line late).
pub const WALL_SLACK_MS: i64 = 1000;
/// How long a file that delivered nothing is still waited for by the settled mark.
pub const QUIET_MS: i64 = 5 * 60 * 1000;
/// A file being written whose lines trail the newest by more than this is reported (once): its
/// clock is off, or it is being filled with old lines. It is still waited for, so the engine
/// keeps every key's state that long (memory, bounded by `[engine] max_keys`).
pub const BEHIND_WARN_MS: i64 = 10 * 60 * 1000;

/// What the marks need to know of one followed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMark {
    /// The newest log time read from it (`i64::MIN` before any).
    pub newest_ms: i64,
    /// When (wall clock, ms) lines were last read from it (`i64::MIN` before any).
    pub read_at_ms: i64,
}

impl FileMark {
    pub const NEW: FileMark = FileMark {
        newest_ms: i64::MIN,
        read_at_ms: i64::MIN,
    };

    /// Takes a round's read: `newest_ms` of what it gave (`i64::MIN` for no line).
    pub fn read(&mut self, newest_ms: i64, now_ms: i64) {
        if newest_ms > i64::MIN {
            self.newest_ms = self.newest_ms.max(newest_ms);
            self.read_at_ms = now_ms;
        }
    }
}

impl FileMark {
    /// Whether the file is being written (read within [`QUIET_MS`]) with lines more than
    /// [`BEHIND_WARN_MS`] older than `low`.
    pub fn far_behind(&self, low: i64, now_ms: i64) -> bool {
        self.read_at_ms >= now_ms.saturating_sub(QUIET_MS)
            && self.newest_ms > i64::MIN
            && self.newest_ms < low.saturating_sub(BEHIND_WARN_MS)
    }
}

/// The newest log time read, but never more than [`WALL_SLACK_MS`] behind the wall clock (idle
/// files do not hold the engine back) nor ahead of it.
pub fn low_mark(newest_ms: i64, now_ms: i64) -> i64 {
    newest_ms
        .min(now_ms.saturating_add(WALL_SLACK_MS))
        .max(now_ms.saturating_sub(WALL_SLACK_MS))
}

/// The oldest newest-time over the files read within [`QUIET_MS`] of `now_ms`, less the
/// lateness a file's own lines may have among themselves, and never past `low`.
pub fn settled_mark(
    files: impl IntoIterator<Item = FileMark>,
    low: i64,
    lateness_ms: i64,
    now_ms: i64,
) -> i64 {
    let quiet_since = now_ms.saturating_sub(QUIET_MS);
    files
        .into_iter()
        .filter(|f| f.read_at_ms >= quiet_since && f.newest_ms > i64::MIN)
        .map(|f| f.newest_ms.saturating_sub(lateness_ms))
        .min()
        .map_or(low, |m| m.min(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_low_mark_follows_the_logs_within_a_second_of_the_clock() {
        let now = 1_800_000_000_000;
        assert_eq!(low_mark(i64::MIN, now), now - 1000, "nothing read yet");
        assert_eq!(low_mark(now - 3_600_000, now), now - 1000, "idle logs");
        assert_eq!(low_mark(now - 200, now), now - 200, "a busy log");
        assert_eq!(low_mark(now + 86_400_000, now), now + 1000, "a clock ahead");
    }

    #[test]
    fn the_settled_mark_waits_for_files_being_written_only() {
        let now = 1_800_000_000_000;
        let low = now - 100;
        let mut live = FileMark::NEW;
        live.read(now - 100, now);
        let mut buffered = FileMark::NEW;
        buffered.read(now - 3_000, now - 2_000);
        let mut quiet = FileMark::NEW;
        quiet.read(now - 3_600_000, now - QUIET_MS - 1);
        let mut old_lines = FileMark::NEW;
        old_lines.read(now - 86_400_000, now - 10);
        let never = FileMark::NEW;
        assert_eq!(settled_mark([live, never], low, 0, now), now - 100);
        assert_eq!(
            settled_mark([live, buffered, quiet], low, 500, now),
            now - 3_500
        );
        assert_eq!(
            settled_mark([live, old_lines], low, 0, now),
            now - 86_400_000,
            "older lines being appended are waited for"
        );
        assert_eq!(settled_mark([quiet, never], low, 0, now), low);
        let mut ahead = FileMark::NEW;
        ahead.read(now + 60_000, now);
        assert_eq!(settled_mark([ahead], low, 0, now), low, "never past low");
        assert!(old_lines.far_behind(low, now));
        assert!(!buffered.far_behind(low, now) && !quiet.far_behind(low, now));
    }
}
