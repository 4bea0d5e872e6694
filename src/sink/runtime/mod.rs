//! The machinery every sink runs on: each sink on its own thread (`worker`) behind a bounded
//! queue (`feed`), the set of them (`runner`) and its replacement on reload (`reload`), what
//! they report (`counters`), and the bans held for a sink that was down (`pending`).

pub mod counters;
mod feed;
pub mod pending;
mod reload;
pub mod runner;
#[cfg(test)]
mod testing;
mod worker;
