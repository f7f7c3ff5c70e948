//! tracepkt: follows probe packets through the Linux network stack with eBPF and reports
//! every interface, namespace, netfilter verdict and drop they meet.
//!
//! The binary's front-ends are public; everything under them is the crate's own.

pub mod cli;
mod clock;
pub(crate) mod config;
mod engine;
mod expect;
mod export;
mod journey;
mod kernel;
mod names;
mod pmtu;
mod pods;
mod prober;
pub mod serve;
mod sockets;
pub mod trace;
