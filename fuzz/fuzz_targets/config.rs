//! Fuzzes the `serve` config file: YAML parse, checks, and the error messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracepkt::fuzzing::config(data));
