//! Loads the kernel programs, attaches each hook by the best mechanism the running kernel
//! offers, and reports what attached and what did not.
//!
//! Nothing refuses to start because an optional hook is missing; only a kernel where no
//! interface hook attaches is an error, since then tracepkt would see nothing at all.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aya::programs::{BtfTracePoint, FExit, KProbe, TracePoint};
use aya::{Ebpf, EbpfLoader};
use probe_common::Offsets;
use tracing::{info, warn};

use super::btf::{BtfError, KernelBtf};
use super::symbols::Symbols;
use super::tracefs::{self, Format, TracefsError};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// Modules whose BTF holds netfilter types and functions.
const NF_MODULES: &[&str] = &["x_tables", "ip_tables", "ip6_tables", "nf_tables"];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tracepkt must run as root (it loads eBPF programs and reads kernel memory); try `sudo tracepkt ...`")]
    NotRoot,
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("the kernel refused the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("no interface hook could be attached, so no packet can be followed:\n{0}")]
    NoInterfaceHook(String),
}

/// What kind of hop a hook reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Interface,
    Netfilter,
    Drop,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Interface => "interface",
            HookKind::Netfilter => "netfilter",
            HookKind::Drop => "drop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    TpBtf,
    Tracepoint,
    Fexit,
    Kprobe,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::TpBtf => "tp_btf",
            Mechanism::Tracepoint => "tracepoint",
            Mechanism::Fexit => "fexit",
            Mechanism::Kprobe => "kprobe",
        }
    }
    pub const ALL: [Mechanism; 4] = [
        Mechanism::TpBtf,
        Mechanism::Tracepoint,
        Mechanism::Fexit,
        Mechanism::Kprobe,
    ];
}

/// The outcome for one hook.
#[derive(Debug, Clone)]
pub struct Attach {
    /// Kernel name of the hook: `net_dev_queue`, `nft_do_chain`, ...
    pub hook: &'static str,
    pub kind: HookKind,
    pub mechanism: Option<Mechanism>,
    /// Why the preferred mechanisms failed (also set when a fallback worked).
    pub why: Vec<String>,
}

/// How one loaded program is attached, so it can be detached and attached again.
enum How {
    TpBtf,
    Tracepoint { category: &'static str, name: &'static str },
    Fexit,
    Kprobe { func: &'static str },
}

enum LinkId {
    TpBtf(aya::programs::tp_btf::BtfTracePointLinkId),
    Tracepoint(aya::programs::trace_point::TracePointLinkId),
    Fexit(aya::programs::fexit::FExitLinkId),
    Kprobe(aya::programs::kprobe::KProbeLinkId),
}

/// One program that attached at start, and its live link when attached now.
struct Attachment {
    program: String,
    how: How,
    link: Option<LinkId>,
}

type ProgResult<T> = Result<T, aya::programs::ProgramError>;

fn attach_one(ebpf: &mut Ebpf, program: &str, how: &How) -> ProgResult<LinkId> {
    let p = ebpf.program_mut(program).expect("program in object");
    Ok(match how {
        How::TpBtf => LinkId::TpBtf(<&mut BtfTracePoint>::try_from(p)?.attach()?),
        How::Tracepoint { category, name } => {
            LinkId::Tracepoint(<&mut TracePoint>::try_from(p)?.attach(category, name)?)
        }
        How::Fexit => LinkId::Fexit(<&mut FExit>::try_from(p)?.attach()?),
        How::Kprobe { func } => LinkId::Kprobe(<&mut KProbe>::try_from(p)?.attach(func, 0)?),
    })
}

fn detach_one(ebpf: &mut Ebpf, program: &str, link: LinkId) -> ProgResult<()> {
    let p = ebpf.program_mut(program).expect("program in object");
    match link {
        LinkId::TpBtf(id) => <&mut BtfTracePoint>::try_from(p)?.detach(id),
        LinkId::Tracepoint(id) => <&mut TracePoint>::try_from(p)?.detach(id),
        LinkId::Fexit(id) => <&mut FExit>::try_from(p)?.detach(id),
        LinkId::Kprobe(id) => <&mut KProbe>::try_from(p)?.detach(id),
    }
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mechanism {
            Some(m) => {
                write!(f, "{} ({}): attached by {}", self.hook, self.kind.as_str(), m.as_str())?;
                if !self.why.is_empty() {
                    write!(f, " [{}]", self.why.join("; "))?;
                }
                Ok(())
            }
            None => write!(
                f,
                "{} ({}): not attached: {}",
                self.hook,
                self.kind.as_str(),
                self.why.join("; ")
            ),
        }
    }
}

/// The loaded programs. Dropping it detaches everything.
pub struct Kernel {
    pub ebpf: Ebpf,
    pub report: Vec<Attach>,
    attachments: Vec<Attachment>,
    /// `skb_drop_reason` value → name without the `SKB_DROP_REASON_` prefix.
    pub drop_reasons: HashMap<u32, String>,
    pub not_specified_reason: Option<u32>,
    pub release: String,
}

impl Kernel {
    /// Kinds of hop no hook of which attached: what `trace` cannot see on this kernel.
    pub fn blind_spots(&self) -> Vec<String> {
        [HookKind::Netfilter, HookKind::Drop]
            .into_iter()
            .filter_map(|kind| {
                let hooks: Vec<&Attach> = self.report.iter().filter(|a| a.kind == kind).collect();
                let missing: Vec<&&Attach> = hooks.iter().filter(|a| a.mechanism.is_none()).collect();
                if missing.is_empty() {
                    return None;
                }
                let names: Vec<&str> = missing.iter().map(|a| a.hook).collect();
                let mut why: Vec<&str> = Vec::new();
                for w in missing.iter().flat_map(|a| a.why.iter()) {
                    if !why.contains(&w.as_str()) {
                        why.push(w);
                    }
                }
                Some(format!(
                    "{} hops from {} [{}]",
                    kind.as_str(),
                    names.join(", "),
                    why.join("; ")
                ))
            })
            .collect()
    }

    pub fn attached(&self, hook: &str) -> Option<Mechanism> {
        self.report.iter().find(|a| a.hook == hook).and_then(|a| a.mechanism)
    }

    /// Detaches every program; the maps and loaded programs stay, so `attach_all` is cheap.
    pub fn detach_all(&mut self) -> ProgResult<()> {
        let mut first_err = None;
        for a in &mut self.attachments {
            if let Some(link) = a.link.take()
                && let Err(e) = detach_one(&mut self.ebpf, &a.program, link)
            {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Attaches again every program that attached at start, as it did then.
    pub fn attach_all(&mut self) -> ProgResult<()> {
        for a in &mut self.attachments {
            if a.link.is_none() {
                a.link = Some(attach_one(&mut self.ebpf, &a.program, &a.how)?);
            }
        }
        Ok(())
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Interface hooks: (tracepoint name, tp_btf program, classic program).
const INTERFACE_HOOKS: &[(&str, &str, &str)] = &[
    ("net_dev_queue", "net_dev_queue_btf", "net_dev_queue_tp"),
    ("netif_receive_skb", "netif_receive_skb_btf", "netif_receive_skb_tp"),
    ("netif_rx", "netif_rx_btf", "netif_rx_tp"),
    (
        "napi_gro_receive_entry",
        "napi_gro_receive_entry_btf",
        "napi_gro_receive_entry_tp",
    ),
];

/// Netfilter hooks: (function, module that usually holds it, program prefix).
const NETFILTER_HOOKS: &[(&str, &str)] = &[
    ("ipt_do_table", "ip_tables"),
    ("ip6t_do_table", "ip6_tables"),
    ("nft_do_chain", "nf_tables"),
];

/// Resolves every offset the programs need. Interface and drop offsets are required;
/// netfilter ones are optional (returned as the reason when missing).
fn resolve_offsets(btf: &KernelBtf, tracefs: &Path) -> Result<(Offsets, Option<String>), LoadError> {
    let mut o = Offsets {
        skb_len: btf.offset_of("sk_buff", "len")?,
        skb_head: btf.offset_of("sk_buff", "head")?,
        skb_data: btf.offset_of("sk_buff", "data")?,
        skb_network_header: btf.offset_of("sk_buff", "network_header")?,
        skb_protocol: btf.offset_of("sk_buff", "protocol")?,
        skb_dev: btf.offset_of("sk_buff", "dev")?,
        dev_name: btf.offset_of("net_device", "name")?,
        dev_ifindex: btf.offset_of("net_device", "ifindex")?,
        dev_nd_net: btf.offset_of("net_device", "nd_net.net")?,
        net_ns_inum: btf.offset_of("net", "ns.inum")?,
        ..Offsets::default()
    };
    // Classic tracepoint layouts; a missing format only disables that fallback.
    let skbaddr = |cat: &str, ev: &str| {
        Format::read(tracefs, cat, ev)
            .and_then(|f| f.offset("skbaddr"))
            .unwrap_or(0)
    };
    o.tp_net_dev_queue_skb = skbaddr("net", "net_dev_queue");
    o.tp_netif_receive_skb_skb = skbaddr("net", "netif_receive_skb");
    o.tp_netif_rx_skb = skbaddr("net", "netif_rx");
    o.tp_napi_gro_receive_entry_skb = skbaddr("net", "napi_gro_receive_entry");
    if let Ok(f) = Format::read(tracefs, "skb", "kfree_skb") {
        o.tp_kfree_skb_skb = f.offset("skbaddr").unwrap_or(0);
        o.tp_kfree_skb_location = f.offset("location").unwrap_or(0);
        o.tp_kfree_skb_reason = f.offset("reason").unwrap_or(0);
    }
    let nf = resolve_netfilter(btf, &mut o).err().map(|e| e.to_string());
    Ok((o, nf))
}

fn resolve_netfilter(btf: &KernelBtf, o: &mut Offsets) -> Result<(), BtfError> {
    o.nf_state_hook = btf.offset_of("nf_hook_state", "hook")?;
    o.nf_state_pf = btf.offset_of("nf_hook_state", "pf")?;
    o.nf_state_net = btf.offset_of("nf_hook_state", "net")?;
    // iptables: (skb, state, table) before 5.16, (priv, skb, state) after; priv is the table.
    if let Ok(params) = btf.params("ipt_do_table") {
        let pos = |names: &[&str]| params.iter().position(|p| names.contains(&p.as_str()));
        o.ipt_arg_skb = pos(&["skb"]).unwrap_or(0) as u32;
        o.ipt_arg_state = pos(&["state"]).unwrap_or(1) as u32;
        o.ipt_arg_table = pos(&["priv", "table"]).unwrap_or(2) as u32;
    } else {
        // Module not loaded yet: its BTF is absent. Assume the current order.
        (o.ipt_arg_table, o.ipt_arg_skb, o.ipt_arg_state) = (0, 1, 2);
    }
    if let Ok(t) = btf.offset_of("xt_table", "name") {
        o.xt_table_name = t;
    }
    if let Ok(params) = btf.params("nft_do_chain") {
        o.nft_arg_pkt = params.iter().position(|p| p == "pkt").unwrap_or(0) as u32;
        o.nft_arg_chain = params.iter().position(|p| p == "priv").unwrap_or(1) as u32;
    } else {
        (o.nft_arg_pkt, o.nft_arg_chain) = (0, 1);
    }
    if btf.offset_of("nft_pktinfo", "skb").is_ok() {
        o.nft_pktinfo_skb = btf.offset_of("nft_pktinfo", "skb")?;
        o.nft_pktinfo_state = btf.offset_of("nft_pktinfo", "state")?;
        o.nft_chain_name = btf.offset_of("nft_chain", "name")?;
        o.nft_chain_table = btf.offset_of("nft_chain", "table")?;
        o.nft_table_name = btf.offset_of("nft_table", "name")?;
    }
    Ok(())
}

fn drop_reasons(btf: &KernelBtf) -> HashMap<u32, String> {
    btf.enum_values("skb_drop_reason")
        .unwrap_or_default()
        .into_iter()
        .map(|(name, v)| {
            let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name).to_string();
            (v as u32, short)
        })
        .collect()
}

fn reason_value(reasons: &HashMap<u32, String>, name: &str) -> u32 {
    reasons
        .iter()
        .find(|(_, n)| n.as_str() == name)
        .map(|(v, _)| *v)
        .unwrap_or(u32::MAX)
}

/// Loads and attaches everything the running kernel supports.
pub fn load() -> Result<Kernel, LoadError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LoadError::NotRoot);
    }
    let tracefs_root = tracefs::ensure_mounted()?;
    let btf = KernelBtf::load(Path::new(KernelBtf::SYSFS), NF_MODULES)?;
    let (offsets, nf_offsets_missing) = resolve_offsets(&btf, &tracefs_root)?;
    let reasons = drop_reasons(&btf);
    let not_specified = reason_value(&reasons, "NOT_SPECIFIED");
    let consumed = reason_value(&reasons, "SKB_CONSUMED");
    let not_dropped_yet = reason_value(&reasons, "SKB_NOT_DROPPED_YET");
    let no_socket = reason_value(&reasons, "NO_SOCKET");
    let netfilter_drop = reason_value(&reasons, "NETFILTER_DROP");

    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones ignore it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (only matters before 5.11)");
    }

    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .override_global("REASON_NOT_SPECIFIED", &not_specified, true)
        .override_global("REASON_CONSUMED", &consumed, true)
        .override_global("REASON_NOT_DROPPED_YET", &not_dropped_yet, true)
        .override_global("REASON_NO_SOCKET", &no_socket, true)
        .override_global("REASON_NETFILTER_DROP", &netfilter_drop, true)
        .load(PROGRAMS)?;

    let aya_btf = aya::Btf::from_sys_fs().ok();
    let symbols = Symbols::load().ok();
    let mut report = Vec::new();
    let mut att = Vec::new();

    for &(hook, btf_prog, tp_prog) in INTERFACE_HOOKS {
        report.push(attach_tracepoint(
            &mut ebpf,
            &mut att,
            aya_btf.as_ref(),
            "net",
            hook,
            btf_prog,
            tp_prog,
            HookKind::Interface,
        ));
    }
    report.push(attach_tracepoint(
        &mut ebpf,
        &mut att,
        aya_btf.as_ref(),
        "skb",
        "kfree_skb",
        "kfree_skb_btf",
        "kfree_skb_tp",
        HookKind::Drop,
    ));
    for &(func, module) in NETFILTER_HOOKS {
        report.push(attach_netfilter(
            &mut ebpf,
            &mut att,
            aya_btf.as_ref(),
            symbols.as_ref(),
            &offsets,
            nf_offsets_missing.as_deref(),
            func,
            module,
        ));
    }

    for a in &report {
        if a.mechanism.is_some() {
            info!(hook = a.hook, kind = a.kind.as_str(), "{a}");
        } else {
            warn!(hook = a.hook, kind = a.kind.as_str(), "{a}");
        }
    }
    if !report
        .iter()
        .any(|a| a.kind == HookKind::Interface && a.mechanism.is_some())
    {
        let lines: Vec<String> = report
            .iter()
            .filter(|a| a.kind == HookKind::Interface)
            .map(|a| format!("  {a}"))
            .collect();
        return Err(LoadError::NoInterfaceHook(lines.join("\n")));
    }
    Ok(Kernel {
        ebpf,
        report,
        attachments: att,
        not_specified_reason: (not_specified != u32::MAX).then_some(not_specified),
        drop_reasons: reasons,
        release: kernel_release(),
    })
}

fn short(e: impl fmt::Display) -> String {
    let s = e.to_string();
    // Verifier logs can be long; the first line says what failed.
    s.lines().next().unwrap_or_default().to_string()
}

fn with_source(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    // The raw errors for the two common cases say little to a user.
    if s.contains("kprobe/type") && !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return "the kernel has no kprobes (CONFIG_KPROBES off)".into();
    }
    if s.contains("Operation not permitted") {
        return "not permitted by the kernel (EPERM: ftrace or BPF tracing locked down)".into();
    }
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    short(s)
}

/// Loads `program` for `how` (`load`) and attaches it; on success records the attachment.
fn try_attach(
    ebpf: &mut Ebpf,
    attachments: &mut Vec<Attachment>,
    program: &str,
    how: How,
    load: impl FnOnce(&mut aya::programs::Program) -> ProgResult<()>,
) -> ProgResult<()> {
    load(ebpf.program_mut(program).expect("program in object"))?;
    let link = attach_one(ebpf, program, &how)?;
    attachments.push(Attachment {
        program: program.to_string(),
        how,
        link: Some(link),
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    attachments: &mut Vec<Attachment>,
    btf: Option<&aya::Btf>,
    category: &'static str,
    name: &'static str,
    btf_prog: &str,
    tp_prog: &str,
    kind: HookKind,
) -> Attach {
    let mut why = Vec::new();
    match btf {
        Some(btf) => {
            let r = try_attach(ebpf, attachments, btf_prog, How::TpBtf, |p| {
                <&mut BtfTracePoint>::try_from(p)?.load(name, btf)
            });
            match r {
                Ok(()) => {
                    return Attach {
                        hook: name,
                        kind,
                        mechanism: Some(Mechanism::TpBtf),
                        why,
                    };
                }
                Err(e) => why.push(format!("tp_btf: {}", with_source(&e))),
            }
        }
        None => why.push("tp_btf: no vmlinux BTF".into()),
    }
    let r = try_attach(ebpf, attachments, tp_prog, How::Tracepoint { category, name }, |p| {
        <&mut TracePoint>::try_from(p)?.load()
    });
    match r {
        Ok(()) => Attach {
            hook: name,
            kind,
            mechanism: Some(Mechanism::Tracepoint),
            why,
        },
        Err(e) => {
            why.push(format!("tracepoint: {}", with_source(&e)));
            Attach {
                hook: name,
                kind,
                mechanism: None,
                why,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn attach_netfilter(
    ebpf: &mut Ebpf,
    attachments: &mut Vec<Attachment>,
    btf: Option<&aya::Btf>,
    symbols: Option<&Symbols>,
    offsets: &Offsets,
    offsets_missing: Option<&str>,
    func: &'static str,
    module: &str,
) -> Attach {
    let kind = HookKind::Netfilter;
    let mut why = Vec::new();
    if let Some(syms) = symbols
        && !syms.contains(func)
    {
        why.push(format!(
            "{func} is not in the running kernel (module {module} not loaded, so no such rules exist)"
        ));
        return Attach {
            hook: func,
            kind,
            mechanism: None,
            why,
        };
    }
    if let Some(missing) = offsets_missing {
        why.push(format!("netfilter layouts not in BTF: {missing}"));
        return Attach {
            hook: func,
            kind,
            mechanism: None,
            why,
        };
    }
    if func == "nft_do_chain" && offsets.nft_chain_name == 0 {
        why.push("nf_tables BTF not available (module BTF under /sys/kernel/btf/nf_tables)".into());
        return Attach {
            hook: func,
            kind,
            mechanism: None,
            why,
        };
    }
    match btf {
        Some(btf) => {
            let r = try_attach(ebpf, attachments, &format!("{func}_fexit"), How::Fexit, |p| {
                <&mut FExit>::try_from(p)?.load(func, btf)
            });
            match r {
                Ok(()) => {
                    return Attach {
                        hook: func,
                        kind,
                        mechanism: Some(Mechanism::Fexit),
                        why,
                    };
                }
                Err(e) => why.push(format!("fexit: {}", with_source(&e))),
            }
        }
        None => why.push("fexit: no vmlinux BTF".into()),
    }
    // The return probe first: an entry that fires without it would stash for nothing.
    let mut r = Ok(());
    for prog in [format!("{func}_return"), format!("{func}_entry")] {
        r = try_attach(ebpf, attachments, &prog, How::Kprobe { func }, |p| {
            <&mut KProbe>::try_from(p)?.load()
        });
        if r.is_err() {
            break;
        }
    }
    match r {
        Ok(()) => Attach {
            hook: func,
            kind,
            mechanism: Some(Mechanism::Kprobe),
            why,
        },
        Err(e) => {
            tracing::debug!(hook = func, "kprobe load failed: {e:?}");
            // A return probe attached without its entry is useless: take it back.
            if let Some(pos) = attachments.iter().position(|a| a.program == format!("{func}_return"))
                && let Some(link) = attachments.remove(pos).link
            {
                let _ = detach_one(ebpf, &format!("{func}_return"), link);
            }
            why.push(format!("kprobe: {}", with_source(&e)));
            Attach {
                hook: func,
                kind,
                mechanism: None,
                why,
            }
        }
    }
}

/// The floor for benchmarks: programs on the four interface tracepoints that only bump a
/// per-CPU array. Returns the loaded object (dropping it detaches them).
pub fn load_floor() -> Result<Ebpf, LoadError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LoadError::NotRoot);
    }
    let btf = aya::Btf::from_sys_fs().map_err(|e| {
        LoadError::Btf(BtfError::Parse {
            path: "/sys/kernel/btf/vmlinux".into(),
            source: anyhow::anyhow!("{e}"),
        })
    })?;
    let mut ebpf = EbpfLoader::new().load(PROGRAMS)?;
    let mut failures = Vec::new();
    for &(hook, _, _) in INTERFACE_HOOKS {
        let prog = format!("floor_{hook}");
        let r = (|| -> ProgResult<()> {
            let p: &mut BtfTracePoint = ebpf.program_mut(&prog).expect("program in object").try_into()?;
            p.load(hook, &btf)?;
            p.attach()?;
            Ok(())
        })();
        if let Err(e) = r {
            failures.push(format!("  {hook}: {}", with_source(&e)));
        }
    }
    if failures.len() == INTERFACE_HOOKS.len() {
        return Err(LoadError::NoInterfaceHook(failures.join("\n")));
    }
    Ok(ebpf)
}
