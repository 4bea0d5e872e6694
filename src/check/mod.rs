//! The commands that check without acting: `check-config` (the config, then what watch would meet
//! at start or at its first ban: `preflight`) and `test` (how each log line is read and counted:
//! `linetest`).

pub mod cmd;
pub mod linetest;
pub mod preflight;
