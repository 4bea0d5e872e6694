//! floodwatch: finds HTTP request floods in web-server access logs and decides bans.
//!
//! Data flows through the modules in this order: `source` (files, globs, chunks of lines) →
//! `parse` (a line → `Record`) → `hit` (what the engine needs of it) → `engine` (per-key
//! `limit_req` buckets on shard threads) → `decide` (offenses → ban/unban events) → output.
//! `app` wires them together for each command; `config` and `cli` validate input at the edge.

pub mod addr;
pub mod app;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod decide;
pub mod engine;
pub mod hit;
pub mod lab;
pub mod logging;
pub mod parse;
pub mod proxy;
pub mod sink;
pub mod source;
pub mod summary;
pub mod sys;
pub mod vhost;
pub mod watch;
