//! The attack-traffic lab: synthetic scenarios with known truth (`generate`), what-if analysis
//! of real logs (`analyze`) and the self-benchmark (`bench`).

pub mod analyze;
pub mod bench;
pub mod cmd;
pub mod crawler;
pub mod generate;
pub mod grid;
pub mod peaks;
pub mod report;
pub mod rng;
pub mod scan;
pub mod scenario;
pub mod suggest;
pub mod svg;
