use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../probe-ebpf");
    let package = aya_build::Package {
        name: "probe-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
        .context("building the eBPF programs (needs nightly rust-src and bpf-linker: run `make build`)")
        .map_err(|e| anyhow!("{e:#}"))
}
