//! What tracepkt hands to the outside world: Prometheus metrics and a page of each target's
//! last journeys over HTTP, and one OpenTelemetry trace per journey over OTLP.

pub mod board;
mod collectors;
pub mod health;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
pub mod server;
pub mod web;
