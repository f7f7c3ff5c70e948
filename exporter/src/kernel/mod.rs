//! Everything that talks to the kernel: BTF, tracefs, symbols, loading and attaching the
//! programs, and the maps shared with them.

pub mod btf;
pub mod caps;
pub mod events;
pub mod loader;
pub mod maps;
pub mod symbols;
pub mod tracefs;
