use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracepkt::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// Exit status for usage and set-up errors (clap uses 2 for usage errors too).
const SETUP_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match (cli.verbose, &cli.command) {
        (0, Command::Trace(_)) => "warn",
        (0, _) | (1, _) => "info",
        _ => "debug",
    };
    // `trace` sums up what it cannot see in one line of its own; the per-hook report is
    // there with -v.
    let loader_level = if default_level == "warn" {
        "error"
    } else {
        default_level
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "tracepkt={default_level},tracepkt::kernel::loader={loader_level},warn"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Before any other thread exists, so that none keeps them.
    match tracepkt::narrow_capabilities() {
        Ok(dropped) if !dropped.is_empty() => {
            tracing::debug!("capabilities given up: {}", dropped.join(", "))
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot give up unneeded capabilities: {e}"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracepkt: cannot start the async runtime: {e}");
            return ExitCode::from(SETUP_ERROR);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Trace(args) => tracepkt::trace::run(args, cli.mechanisms)
                .await
                .map(|ok| if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }),
            Command::Serve(args) => tracepkt::serve::run(args, cli.mechanisms)
                .await
                .map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracepkt: error: {e:#}");
            ExitCode::from(SETUP_ERROR)
        }
    }
}
