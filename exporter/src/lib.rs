//! tracepkt: follows probe packets through the Linux network stack with eBPF and reports
//! every interface, namespace, netfilter verdict and drop they meet.
//!
//! The binary's front-ends are public; everything under them is the crate's own.

pub mod cli;
mod clock;
pub(crate) mod config;
mod dns;
mod engine;
mod expect;
mod export;
// Raw-bytes entry points into the parsers for the fuzz targets in `fuzz/`; compiled into unit
// tests too, so the committed corpus runs through them on every `cargo test`.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod journey;
mod kernel;
mod names;
mod pods;
mod prober;
pub mod serve;
mod sockets;
pub mod trace;
