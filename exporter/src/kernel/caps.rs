//! The process capabilities tracepkt's kernel work needs, and which of them this process
//! lacks. In a container (or under a restricted service manager) root is not all-powerful:
//! the kernel answers EPERM to a missing capability exactly as it does to a locked-down
//! kernel, so the capabilities are read at start and an EPERM is blamed on the right one.

use ::caps::{CapSet, Capability};

/// One capability tracepkt needs, what for, and what stands in for it on kernels that
/// predate it (CAP_BPF and CAP_PERFMON were split off CAP_SYS_ADMIN in 5.8).
#[derive(Debug, PartialEq, Eq)]
pub struct Need {
    pub cap: Capability,
    stand_in: Option<Capability>,
    why: &'static str,
    /// Whether the bpf() and perf_event_open() calls that load and attach programs need it.
    for_programs: bool,
}

const NEEDS: &[Need] = &[
    Need {
        cap: Capability::CAP_BPF,
        stand_in: Some(Capability::CAP_SYS_ADMIN),
        why: "to create the eBPF maps and load the programs",
        for_programs: true,
    },
    Need {
        cap: Capability::CAP_PERFMON,
        stand_in: Some(Capability::CAP_SYS_ADMIN),
        why: "to load and attach tracing programs, which read kernel memory",
        for_programs: true,
    },
    Need {
        cap: Capability::CAP_NET_RAW,
        stand_in: None,
        why: "to send ICMP probes from a raw socket",
        for_programs: false,
    },
];

/// The needed capabilities missing from this process's effective set.
#[derive(Debug, Default, Clone)]
pub struct Missing(Vec<&'static Need>);

impl Missing {
    /// Reads the effective set of this process. If it cannot be read, nothing is reported
    /// missing: the kernel's own errors then speak for themselves.
    pub fn of_this_process() -> Self {
        match ::caps::read(None, CapSet::Effective) {
            Ok(have) => Self::from_effective(|c| have.contains(&c)),
            Err(e) => {
                tracing::debug!("cannot read this process's capabilities: {e}");
                Missing::default()
            }
        }
    }

    fn from_effective(has: impl Fn(Capability) -> bool) -> Self {
        Missing(
            NEEDS
                .iter()
                .filter(|n| !has(n.cap) && !n.stand_in.is_some_and(&has))
                .collect(),
        )
    }

    /// Logs one line per missing capability, naming what it is for and how to grant it.
    pub fn log(&self) {
        for n in &self.0 {
            let stand_in = n
                .stand_in
                .map(|s| format!(" (or {s} on kernels before 5.8)"))
                .unwrap_or_default();
            tracing::warn!(
                capability = %n.cap,
                "missing capability {}: tracepkt needs it {}. Grant it{stand_in}: in Kubernetes, \
                 securityContext.capabilities.add [{}]; with systemd, AmbientCapabilities={}",
                n.cap,
                n.why,
                n.cap.to_string().trim_start_matches("CAP_"),
                n.cap,
            );
        }
    }

    /// What an EPERM from loading or attaching a program is due to, when this process lacks
    /// a capability those calls need: `missing capability CAP_PERFMON`.
    pub fn program_eperm(&self) -> Option<String> {
        let names: Vec<String> = self
            .0
            .iter()
            .filter(|n| n.for_programs)
            .map(|n| n.cap.to_string())
            .collect();
        match names.len() {
            0 => None,
            1 => Some(format!("missing capability {}", names[0])),
            _ => Some(format!("missing capabilities {}", names.join(", "))),
        }
    }

    /// Whether the maps cannot be created (no CAP_BPF nor its stand-in).
    pub fn lacks_bpf(&self) -> bool {
        self.0.iter().any(|n| n.cap == Capability::CAP_BPF)
    }
}

/// Whether `e`, or an error it wraps, is the system's EPERM.
pub fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Every capability tracepkt may use while it runs, whatever its config; the process keeps
/// these (those it has) and gives up the rest before it starts a second thread, so that every
/// thread it ever runs is without them:
/// - CAP_BPF, CAP_PERFMON: loading the programs, and attaching them for each probe window
///   with `attach: in-flight`;
/// - CAP_NET_RAW: ICMP probes' raw sockets; CAP_NET_ADMIN: not needed by the calls tracepkt
///   makes on the kernels tested, kept for kernels that ask it of socket options;
/// - CAP_SYS_ADMIN: entering a target's network namespace (`from:`), mounting tracefs where it
///   is not mounted, and standing in for CAP_BPF/CAP_PERFMON before 5.8;
/// - CAP_SYS_PTRACE: reading other processes' `/proc/PID/ns/net` to name pods;
/// - CAP_SYS_RESOURCE: raising RLIMIT_MEMLOCK for the maps on kernels before 5.11;
/// - CAP_DAC_READ_SEARCH: reading the node's files (`/proc`, `/var/log/pods`, tracefs) whatever
///   their mode;
/// - CAP_SYSLOG: kernel addresses in `/proc/kallsyms`, to name where a packet was dropped.
pub const KEPT: [Capability; 9] = [
    Capability::CAP_BPF,
    Capability::CAP_PERFMON,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_SYSLOG,
];

/// Gives up every capability but [`KEPT`] from the effective, permitted and inheritable sets
/// (and the ambient set). Capabilities are per thread: call it before the process starts
/// another thread. Returns what was given up.
pub fn narrow() -> Result<Vec<Capability>, ::caps::errors::CapsError> {
    let permitted = ::caps::read(None, CapSet::Permitted)?;
    let keep: ::caps::CapsHashSet = permitted.iter().copied().filter(|c| KEPT.contains(c)).collect();
    let mut dropped: Vec<Capability> = permitted.difference(&keep).copied().collect();
    dropped.sort_by_key(|c| c.index());
    ::caps::clear(None, CapSet::Ambient)?;
    ::caps::set(None, CapSet::Inheritable, &::caps::CapsHashSet::new())?;
    ::caps::set(None, CapSet::Effective, &keep)?;
    ::caps::set(None, CapSet::Permitted, &keep)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn missing(have: &[Capability]) -> Missing {
        Missing::from_effective(|c| have.contains(&c))
    }

    #[test]
    fn the_chart_set_lacks_nothing() {
        let m = missing(&[CAP_BPF, CAP_PERFMON, CAP_NET_RAW, CAP_NET_ADMIN]);
        assert!(m.0.is_empty());
        assert_eq!(m.program_eperm(), None);
    }

    #[test]
    fn perfmon_missing_is_named() {
        let m = missing(&[CAP_BPF, CAP_NET_RAW]);
        assert_eq!(m.program_eperm().as_deref(), Some("missing capability CAP_PERFMON"));
        assert!(!m.lacks_bpf());
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        // Kernels before 5.8 have neither CAP_BPF nor CAP_PERFMON.
        let m = missing(&[CAP_SYS_ADMIN, CAP_NET_RAW]);
        assert!(m.0.is_empty());
    }

    #[test]
    fn raw_sockets_do_not_explain_a_program_eperm() {
        let m = missing(&[CAP_BPF, CAP_PERFMON]);
        assert_eq!(m.0.len(), 1);
        assert_eq!(m.program_eperm(), None);
    }

    #[test]
    fn nothing_at_all() {
        let m = missing(&[]);
        assert!(m.lacks_bpf());
        assert_eq!(
            m.program_eperm().as_deref(),
            Some("missing capabilities CAP_BPF, CAP_PERFMON")
        );
    }

    #[test]
    fn eperm_is_found_under_wrappers() {
        #[derive(Debug, thiserror::Error)]
        #[error("`bpf_prog_load` failed")]
        struct Wrap(#[source] std::io::Error);
        let e = Wrap(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(is_eperm(&e));
        let e = Wrap(std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(!is_eperm(&e));
    }
}
