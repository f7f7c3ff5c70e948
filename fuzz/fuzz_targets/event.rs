//! Fuzzes one ring-buffer record from the kernel programs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracepkt::fuzzing::event(data));
