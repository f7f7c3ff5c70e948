//! What tracepkt hands to the outside world: Prometheus metrics over HTTP.

pub mod http;
pub mod metrics;
