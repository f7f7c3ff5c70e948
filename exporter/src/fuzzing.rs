//! The parsers of outside input, each behind one function that takes raw bytes: the entry
//! points of the fuzz targets in `fuzz/`.
//!
//! Each function feeds the bytes to a parser the way tracepkt does and then uses the result
//! the way tracepkt does, so that a fuzzer reaches the lookups too, not just the first parse.
//! Errors are expected and ignored; a panic, a hang or an abort is a bug.

use probe_common::{Off, Source};

use crate::config::Config;
use crate::kernel::btf::KernelBtf;
use crate::kernel::events::KernelEvent;
use crate::kernel::tracefs::Format;

/// `tracepkt serve --config FILE`: the file is read as UTF-8 text (a file that is not UTF-8
/// fails to read before it is parsed), then parsed and checked.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.yaml") {
        Ok(config) => {
            std::hint::black_box(config);
        }
        // Errors are printed to the user: building the message is part of the path.
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

/// One ring-buffer record, as the engine's reader hands it over.
pub fn event(data: &[u8]) {
    match KernelEvent::decode(data) {
        Ok(event) => {
            std::hint::black_box(format!("{event:?}"));
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

/// A vmlinux BTF blob, then every lookup the loader makes in it.
pub fn btf(data: &[u8]) {
    let btf = match KernelBtf::from_vmlinux_bytes(data) {
        Ok(btf) => btf,
        Err(e) => {
            std::hint::black_box(e.to_string());
            return;
        }
    };
    for off in Off::ALL {
        match off.source() {
            Source::Field { ty, path } => {
                let _ = std::hint::black_box(btf.offset_of(ty, path));
            }
            Source::Param { func, .. } => {
                let _ = std::hint::black_box(btf.params(func));
                std::hint::black_box(btf.function_home(func));
            }
            Source::Record { .. } => {}
        }
    }
    let _ = std::hint::black_box(btf.offset_of("sk_buff", "len"));
    let _ = std::hint::black_box(btf.params("kfree_skb_reason"));
    let _ = std::hint::black_box(btf.enum_values("skb_drop_reason"));
}

/// A tracefs `format` file, then every record field the loader looks up. The loader reads it
/// as UTF-8; lossy conversion lets the fuzzer's non-UTF-8 inputs still reach the parser.
pub fn tracefs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let format = Format::parse("fuzz/format", &text);
    for off in Off::ALL {
        if let Source::Record { field, .. } = off.source() {
            let _ = std::hint::black_box(format.offset(field));
        }
    }
}

/// Checks a seed the unit tests make against its committed copy in `fuzz/corpus/TARGET/`, or
/// rewrites the copy when `TRACEPKT_UPDATE_FUZZ_SEEDS` is set: seeds follow the layouts they
/// are made from.
#[cfg(test)]
pub(crate) fn check_seed(target: &str, name: &str, bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
        .join(name);
    if std::env::var_os("TRACEPKT_UPDATE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{} is not what the test helpers make: rerun with TRACEPKT_UPDATE_FUZZ_SEEDS=1",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The committed seed corpus and the inputs of bugs the fuzzers found, run through the
    /// entry points on every `cargo test`: a fixed bug stays fixed without a fuzzer.
    fn inputs(target: &str) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut files = Vec::new();
        for dir in ["corpus", "regressions"] {
            if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
                files.extend(entries.filter_map(|e| Some(e.ok()?.path())));
            }
        }
        files.sort();
        files
    }

    fn run_all(target: &str, min_seeds: usize, f: fn(&[u8])) {
        let files = inputs(target);
        assert!(
            files.len() >= min_seeds,
            "fuzz/corpus/{target} has {} files, expected at least {min_seeds}",
            files.len()
        );
        for path in files {
            let data = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            f(&data);
        }
    }

    #[test]
    fn config_corpus() {
        run_all("config", 3, super::config);
    }

    #[test]
    fn event_corpus() {
        run_all("event", 3, super::event);
    }

    #[test]
    fn btf_corpus() {
        run_all("btf", 2, super::btf);
    }

    #[test]
    fn tracefs_corpus() {
        run_all("tracefs", 4, super::tracefs);
    }
}
