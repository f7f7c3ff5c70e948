//! What tracepkt hands to the outside world: Prometheus metrics over HTTP.

mod collectors;
pub mod http;
pub mod metrics;
