//! tracepkt: follows probe packets through the Linux network stack with eBPF and reports
//! every interface, namespace, netfilter verdict and drop they meet.
//!
//! The binary's front-ends are public; everything under them is the crate's own.

pub mod cli;
mod clock;
pub(crate) mod config;
mod engine;
mod expect;
mod explain;
mod export;
// Raw-bytes entry points into the parsers for the fuzz targets in `fuzz/`; compiled into unit
// tests too, so the committed corpus runs through them on every `cargo test`.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod journey;
mod kernel;
mod names;
mod netns;
mod outcome;
mod pods;
mod probes;
mod remote;
pub mod serve;
// Serve does not run the sources yet: only the tests do.
#[allow(dead_code)]
mod targets;
mod telemetry;
pub mod trace;

/// Gives up every capability tracepkt never uses (the list and why each one stays:
/// `kernel::caps::KEPT`), and returns the names of those given up. Capabilities belong to
/// threads: call it before the process starts a second one.
pub fn narrow_capabilities() -> Result<Vec<String>, String> {
    kernel::caps::narrow()
        .map(|d| d.iter().map(|c| c.to_string()).collect())
        .map_err(|e| e.to_string())
}
