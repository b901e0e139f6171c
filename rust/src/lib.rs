//! The scalper engine (SPEC §4): rolling statistics, strategies, the risk gate and the fill
//! simulator, with a batch API (columns in, trades out; parallel sweeps) and an incremental API
//! (one bar in, orders out) over one state machine, `machine::step`.

pub mod batch;
pub mod calendar;
pub mod indicators;
pub mod machine;
pub mod metrics;
pub mod params;
pub mod sim;
pub mod wire;

#[cfg(feature = "python")]
mod py;
