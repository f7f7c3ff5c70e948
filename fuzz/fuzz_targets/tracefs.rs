//! Fuzzes a tracefs `format` file, then every record field the loader looks up.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracepkt::fuzzing::tracefs(data));
