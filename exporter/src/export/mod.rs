//! What tracepkt hands to the outside world: Prometheus metrics over HTTP, and one
//! OpenTelemetry trace per journey over OTLP.

mod collectors;
pub mod http;
pub mod metrics;
pub mod otlp;
