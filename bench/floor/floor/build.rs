use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../floor-ebpf");
    let package = aya_build::Package {
        name: "floor-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
        .context("building the floor programs (needs nightly rust-src and bpf-linker: run `make deps`)")
        .map_err(|e| anyhow!("{e:#}"))
}
