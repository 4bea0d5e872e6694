//! The pipeline every front-end drives: a validated config compiled into a plan (`compile`),
//! the [`Detector`](detector::Detector) (shards, decider, ban table) and the
//! [`Output`](output::Output) its events go to (sinks, or JSON lines).

pub mod compile;
pub mod detector;
pub mod log_budget;
pub mod output;
