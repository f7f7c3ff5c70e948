//! tracepkt: follows probe packets through the Linux network stack with eBPF and reports
//! every interface, namespace, netfilter verdict and drop they meet.

pub mod cli;
pub mod config;
pub mod export;
pub mod floor;
pub mod journey;
pub mod kernel;
pub mod names;
pub mod prober;
pub mod serve;
pub mod trace;
