//! `tracepkt-floor`: attaches the floor programs (see floor-ebpf) on every hook tracepkt uses and
//! stays attached for a while.
//!
//! The contract scripts/bench.sh relies on:
//! - `tracepkt-floor [--seconds N] [--spread]` (default 3600 s); with `--spread`, a spacer
//!   program (about 4.8 KiB of JIT code, loaded, never attached) is loaded before each floor
//!   program, so that the floor programs sit apart in the kernel's JIT memory, as tracepkt's
//!   entry points do, instead of side by side;
//! - "attached" on stderr once the programs are attached (hooks that cannot be attached are
//!   named on stderr and skipped; no hook at all is an error, exit status 1);
//! - stays attached until N seconds have passed or SIGTERM or SIGINT arrives;
//! - then exit status 0. The programs are detached when the process exits; their run counts and
//!   times are the kernel's (`bpftool prog show` with `kernel.bpf_stats_enabled=1`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor-ebpf"));

/// The hooks, each with a `floor_<hook>` program in floor-ebpf.
const HOOKS: [&str; 5] = [
    "net_dev_queue",
    "netif_receive_skb",
    "netif_rx",
    "napi_gro_receive_entry",
    "kfree_skb",
];

const USAGE: &str = "usage: tracepkt-floor [--seconds N] [--spread]\n\
    Attaches do-nothing BTF tracepoint programs on tracepkt's hooks for N seconds (default 3600)\n\
    or until SIGTERM/SIGINT. --spread loads a spacer program (never attached) before each one, so\n\
    that they sit apart in the kernel's JIT memory. Must run as root.";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracepkt-floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> anyhow::Result<(Duration, bool)> {
    let (mut seconds, mut spread) = (3600, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                let v = args.next().context("--seconds needs a value")?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--seconds {v:?}: not a whole number"))?;
            }
            "--spread" => spread = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a:?}\n{USAGE}"),
        }
    }
    Ok((Duration::from_secs(seconds), spread))
}

fn run() -> anyhow::Result<()> {
    let (wait, spread) = parse_args()?;
    // Blocked before anything else so that a SIGTERM sent right after "attached" is waited for,
    // never delivered with its default action (which would skip the report).
    let signals = block_signals()?;

    let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    let mut ebpf = Ebpf::load(PROGRAMS).context("loading the floor object (root needed)")?;
    let mut attached = Vec::new();
    for (i, hook) in HOOKS.into_iter().enumerate() {
        let name = format!("floor_{hook}");
        let r = (|| -> anyhow::Result<()> {
            if spread {
                let spacer: &mut BtfTracePoint = ebpf
                    .program_mut(&format!("spacer_{i}"))
                    .context("spacer program missing")?
                    .try_into()?;
                spacer.load("kfree_skb", &btf).context("loading a spacer")?;
            }
            let prog: &mut BtfTracePoint = ebpf.program_mut(&name).context("program missing")?.try_into()?;
            prog.load(hook, &btf)?;
            prog.attach()?;
            Ok(())
        })();
        match r {
            Ok(()) => attached.push(hook),
            Err(e) => eprintln!("tracepkt-floor: {hook}: not attached: {e:#}"),
        }
    }
    if attached.is_empty() {
        bail!("no hook could be attached");
    }
    eprintln!(
        "tracepkt-floor: attached {} (pid {})",
        attached.join(" "),
        std::process::id()
    );

    wait_for(&signals, wait)?;
    Ok(())
}

fn block_signals() -> anyhow::Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before use; the calls only touch it and the
    // calling thread's mask (the process has one thread).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("cannot block SIGTERM and SIGINT");
        }
        Ok(set)
    }
}

/// Returns after `wait`, or earlier when SIGTERM or SIGINT arrives.
fn wait_for(set: &libc::sigset_t, wait: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: valid set and timespec; a null siginfo pointer is allowed.
        let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
        if r > 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(()),
            Some(libc::EINTR) => continue,
            _ => return Err(err).context("waiting for a signal"),
        }
    }
}
