//! `Hit`: what the parser hands the engine for one log line — a small plain value, no borrowed bytes.
//!
//! Everything the shards need is decided before a hit leaves the parsing thread: the client address,
//! the log time, the vhost (interned), and which rules the request matches (one bit per rule).

use crate::addr::Addr;

/// Interned vhost name; see [`crate::vhost::Vhosts`].
pub type VhostId = u32;
/// The vhost is not known (no `%v`/`$host` field and no glob match in the path).
pub const NO_VHOST: VhostId = u32::MAX;

/// One bit per rule, in config order; at most [`MAX_RULES`] rules.
pub type RuleMask = u32;
pub const MAX_RULES: usize = 32;

/// One request, as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Client address (the real client when it came through a trusted proxy).
    pub addr: Addr,
    /// Log time, UTC milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub vhost: VhostId,
    /// Rules this request counts towards.
    pub rules: RuleMask,
    /// `HIT_*` flags.
    pub flags: u8,
}

/// The client address was taken from a logged header because the connecting address is a
/// trusted proxy; such a key can only be blocked at the proxy (CDN).
pub const HIT_VIA_PROXY: u8 = 1;
