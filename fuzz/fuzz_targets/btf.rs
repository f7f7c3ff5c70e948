//! Fuzzes a vmlinux BTF blob, then every lookup the loader makes in it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracepkt::fuzzing::btf(data));
