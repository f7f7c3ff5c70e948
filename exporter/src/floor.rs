//! `tracepkt bench-floor` (hidden): the cost of being attached at all, for benchmarks to
//! compare tracepkt's programs against in the same run.

use std::time::Duration;

use aya::maps::PerCpuArray;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::BenchFloorArgs;
use crate::kernel::loader;

pub async fn run(args: BenchFloorArgs) -> anyhow::Result<()> {
    let ebpf = loader::load_floor()?;
    eprintln!("tracepkt bench-floor: attached (pid {})", std::process::id());
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let runs: u64 = ebpf
        .map("FLOOR")
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
        .and_then(|a| a.get(&0, 0).ok())
        .map(|v| v.iter().sum())
        .unwrap_or(0);
    println!("floor_runs {runs}");
    Ok(())
}
