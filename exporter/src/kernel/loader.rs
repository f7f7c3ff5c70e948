//! Loads the kernel programs and attaches every hook of the hook table (`probe_common::HOOKS`)
//! by the first of its mechanisms the running kernel accepts, and reports what attached and
//! what did not, and why.
//!
//! Nothing refuses to start because an optional hook is missing; only a kernel where no
//! interface hook attaches is an error, since then tracepkt would see nothing at all.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aya::programs::{BtfTracePoint, KProbe, Program, TracePoint};
use aya::{Ebpf, EbpfLoader};
use probe_common::{
    EVENTS_RING_BYTES, HOOKS, Hook, HookSpec, Kind, Mechanism, Off, Offsets, Point, Reasons, Settings, Source, Via, map,
};
use tracing::{info, warn};

use super::btf::{BtfError, KernelBtf};
use super::caps::{self, Missing};
use super::symbols::Symbols;
use super::tracefs::{self, Format, TracefsError};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// Module whose BTF holds `struct xt_table`, shared by both iptables families.
const XT_MODULE: &str = "x_tables";

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
    #[error("the eBPF maps cannot be created: {0}")]
    Capability(String),
    #[error("no interface hook could be attached, so no packet can be followed:\n{0}")]
    NoInterfaceHook(String),
}

/// How many keys each map may hold: from what the configuration needs, not fixed. The maps
/// are not preallocated, so memory follows the keys in use, plus 16 bytes per allowed key for
/// the kernel's bucket array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Echo ids in flight at once (`PROBES`).
    pub probes: u32,
    pub hops: u32,
    pub verdicts: u32,
    pub drops: u32,
    /// The event ring buffer, in bytes: a power of two, at least a page.
    pub events: u32,
}

impl Sizing {
    /// Room for `targets`, and for reloads that double them. Only ids of probes in flight are
    /// registered, at most one per target; a path crosses a handful of interfaces, a few
    /// dozen chains at most, and drops in one place.
    pub fn for_targets(targets: usize) -> Self {
        let t = u32::try_from(targets.max(1)).unwrap_or(u32::MAX);
        let per_target = |n: u32| t.saturating_mul(n).clamp(1_024, 1 << 22);
        Sizing {
            probes: t.saturating_mul(2).clamp(1_024, 1 << 16),
            hops: per_target(16),
            verdicts: per_target(32),
            drops: per_target(4),
            events: EVENTS_RING_BYTES,
        }
    }
}

/// The outcome for one hook.
#[derive(Debug, Clone)]
pub struct Attach {
    pub hook: Hook,
    pub mechanism: Option<Mechanism>,
    /// Why the preferred mechanisms failed (also set when a fallback worked).
    pub why: Vec<String>,
}

impl Attach {
    pub fn kind(&self) -> Kind {
        self.hook.spec().kind
    }
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, kind) = (self.hook.name(), self.kind().as_str());
        match self.mechanism {
            Some(m) => {
                write!(f, "{name} ({kind}): attached by {}", m.as_str())?;
                if !self.why.is_empty() {
                    write!(f, " [{}]", self.why.join("; "))?;
                }
                Ok(())
            }
            None => write!(f, "{name} ({kind}): not attached: {}", self.why.join("; ")),
        }
    }
}

/// `skb_drop_reason` of the running kernel: value → name without the `SKB_DROP_REASON_`
/// prefix.
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    #[cfg(test)]
    pub fn new(names: HashMap<u32, String>) -> Self {
        DropReasons { names }
    }

    fn from_btf(btf: &KernelBtf) -> Self {
        let names = btf
            .enum_values("skb_drop_reason")
            .unwrap_or_default()
            .into_iter()
            .map(|(name, v)| {
                let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(&name).to_string();
                (v as u32, short)
            })
            .collect();
        DropReasons { names }
    }

    pub fn name(&self, v: u32) -> String {
        self.names.get(&v).cloned().unwrap_or_else(|| format!("reason_{v}"))
    }

    pub fn value(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| n.as_str() == name).map(|(v, _)| *v)
    }

    /// The reason also given when clones and consumed copies are freed on normal paths.
    pub fn not_specified(&self) -> Option<u32> {
        self.value("NOT_SPECIFIED")
    }

    /// The reasons the drop program tells apart, as it reads them.
    fn for_programs(&self) -> Reasons {
        let v = |name| self.value(name).unwrap_or(Reasons::ABSENT);
        Reasons {
            not_specified: v("NOT_SPECIFIED"),
            consumed: v("SKB_CONSUMED"),
            not_dropped_yet: v("SKB_NOT_DROPPED_YET"),
            no_socket: v("NO_SOCKET"),
            netfilter_drop: v("NETFILTER_DROP"),
        }
    }
}

/// A live attachment of one program, kept so it can be detached and attached again.
enum LinkId {
    TpBtf(aya::programs::tp_btf::BtfTracePointLinkId),
    Tracepoint(aya::programs::trace_point::TracePointLinkId),
    Kprobe(aya::programs::kprobe::KProbeLinkId),
}

/// One program that attached at start, and its live link when attached now.
struct Link {
    program: &'static str,
    mechanism: Mechanism,
    point: Point,
    id: Option<LinkId>,
}

impl Link {
    /// Whether it follows probes in flight (`attach: in-flight`). Tracepoint links are created
    /// and destroyed cheaply. A kprobe is not: registering one rewrites the entry of the
    /// function, and doing that for every probe, while other CPUs run the function, crashed a
    /// 6.1 guest (a call to address 0 from nft_do_chain_inet). Kprobes stay for the whole run.
    fn gated(&self) -> bool {
        self.mechanism != Mechanism::Kprobe
    }
}

type ProgResult<T> = Result<T, aya::programs::ProgramError>;

/// Loads `name` (verifies it) for `mechanism` at `point`.
fn load_program(ebpf: &mut Ebpf, env: &Env, point: Point, mechanism: Mechanism, name: &str) -> Result<(), String> {
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?;
    let btf = || {
        env.aya_btf
            .ok_or_else(|| "no vmlinux BTF that aya can read".to_string())
    };
    let r = match mechanism {
        Mechanism::TpBtf => {
            let btf = btf()?;
            <&mut BtfTracePoint>::try_from(p).and_then(|p| p.load(point.name(), btf))
        }
        Mechanism::Tracepoint => <&mut TracePoint>::try_from(p).and_then(|p| p.load()),
        Mechanism::Kprobe => <&mut KProbe>::try_from(p).and_then(|p| p.load()),
    };
    r.map_err(|e| with_source(&e, env.missing))
}

/// A program of a link: it loaded, so it is in the object.
fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Program {
    ebpf.program_mut(name).expect("a linked program is in the object")
}

fn attach_link(ebpf: &mut Ebpf, link: &Link) -> ProgResult<LinkId> {
    let p = program(ebpf, link.program);
    Ok(match (link.mechanism, link.point) {
        (Mechanism::TpBtf, _) => LinkId::TpBtf(<&mut BtfTracePoint>::try_from(p)?.attach()?),
        (Mechanism::Tracepoint, Point::Tracepoint { category, name }) => {
            LinkId::Tracepoint(<&mut TracePoint>::try_from(p)?.attach(category, name)?)
        }
        (Mechanism::Kprobe, point) => LinkId::Kprobe(<&mut KProbe>::try_from(p)?.attach(point.name(), 0)?),
        (Mechanism::Tracepoint, Point::Function { .. }) => {
            return Err(aya::programs::ProgramError::UnexpectedProgramType);
        }
    })
}

fn detach_link(ebpf: &mut Ebpf, program_name: &str, id: LinkId) -> ProgResult<()> {
    let p = program(ebpf, program_name);
    match id {
        LinkId::TpBtf(id) => <&mut BtfTracePoint>::try_from(p)?.detach(id),
        LinkId::Tracepoint(id) => <&mut TracePoint>::try_from(p)?.detach(id),
        LinkId::Kprobe(id) => <&mut KProbe>::try_from(p)?.detach(id),
    }
}

/// The loaded programs. Dropping it detaches everything.
pub struct Kernel {
    pub ebpf: Ebpf,
    pub report: Vec<Attach>,
    links: Vec<Link>,
    pub drop_reasons: DropReasons,
    pub release: String,
}

/// Kinds of hop no hook of which attached: what cannot be seen on this kernel, and why.
pub fn blind_spots(report: &[Attach]) -> Vec<String> {
    [Kind::Netfilter, Kind::Drop]
        .into_iter()
        .filter_map(|kind| {
            let missing: Vec<&Attach> = report
                .iter()
                .filter(|a| a.kind() == kind && a.mechanism.is_none())
                .collect();
            if missing.is_empty() {
                return None;
            }
            let names: Vec<&str> = missing.iter().map(|a| a.hook.name()).collect();
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

impl Kernel {
    /// Detaches the programs that follow probes in flight (see [`Link::gated`]); `all`
    /// detaches every one. The maps and loaded programs stay, so `attach_gated` is cheap.
    fn detach(&mut self, all: bool) -> ProgResult<()> {
        let mut first_err = None;
        for l in &mut self.links {
            if (all || l.gated())
                && let Some(id) = l.id.take()
                && let Err(e) = detach_link(&mut self.ebpf, l.program, id)
            {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Detaches the programs that are attached only while probes are in flight.
    pub fn detach_gated(&mut self) -> ProgResult<()> {
        self.detach(false)
    }

    /// Detaches every program (at exit).
    pub fn detach_all(&mut self) -> ProgResult<()> {
        self.detach(true)
    }

    /// Attaches again, as at start, the programs `detach_gated` took off.
    pub fn attach_gated(&mut self) -> ProgResult<()> {
        for i in 0..self.links.len() {
            if self.links[i].id.is_none() {
                let id = attach_link(&mut self.ebpf, &self.links[i])?;
                self.links[i].id = Some(id);
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

/// Modules whose BTF the offsets may come from: those of the hooked functions, and x_tables.
fn btf_modules() -> Vec<&'static str> {
    let mut m: Vec<&'static str> = HOOKS
        .iter()
        .filter_map(|h| match h.point {
            Point::Function { module, .. } => Some(module),
            Point::Tracepoint { .. } => None,
        })
        .collect();
    m.push(XT_MODULE);
    m
}

/// Resolves every offset of the table from its source. What is not found stays absent.
fn resolve_offsets(btf: &KernelBtf, tracefs: &Path) -> Offsets {
    let mut o = Offsets::unresolved();
    let mut formats: HashMap<(&str, &str), Option<Format>> = HashMap::new();
    for off in Off::ALL {
        let v = match off.source() {
            Source::Field { ty, path } => btf.offset_of(ty, path).ok(),
            Source::Record { category, event, field } => formats
                .entry((category, event))
                .or_insert_with(|| Format::read(tracefs, category, event).ok())
                .as_ref()
                .and_then(|f| f.offset(field).ok()),
            // The programs read the first three arguments.
            Source::Param { func, names } => btf
                .params(func)
                .ok()
                .and_then(|p| p.iter().position(|n| names.contains(&n.as_str())))
                .filter(|&i| i < 3)
                .map(|i| i as u32),
        };
        if let Some(v) = v
            && !o.set(off, v)
        {
            warn!(
                "{} is at {v}, past the 16 bits the programs keep for an offset",
                describe(off)
            );
        }
    }
    o
}

/// How an offset is named in the attach report.
fn describe(off: Off) -> String {
    match off.source() {
        Source::Field { ty, path } => format!("{ty}.{path}"),
        Source::Record { category, event, field } => format!("{category}:{event} record field {field}"),
        Source::Param { func, names } => format!("{func} argument {}", names.join("/")),
    }
}

fn unresolved(offsets: &Offsets, needs: &[Off]) -> Option<String> {
    let missing: Vec<String> = needs
        .iter()
        .filter(|o| offsets.get(**o).is_none())
        .map(|o| describe(*o))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Why a hooked function cannot be probed on this kernel, if it cannot. BTF answers first;
/// kallsyms is read only when a loaded module's function is missing from BTF.
fn function_missing(btf: &KernelBtf, name: &str, module: &str) -> Option<String> {
    if btf.function_home(name).is_some() {
        return None;
    }
    // Built in, the function would be in vmlinux BTF; loaded, the module is under /sys/module.
    if !Path::new("/sys/module").join(module).exists() {
        return Some(format!(
            "{name} is not in the running kernel (module {module} not loaded, so no such rules exist)"
        ));
    }
    if Symbols::shared().is_some_and(|s| s.contains(name)) {
        return Some(format!(
            "module {module} is loaded but has no BTF (/sys/kernel/btf/{module}), so {name}'s argument order is unknown"
        ));
    }
    Some(format!("{name} is not in the running kernel"))
}

fn with_source(e: &(dyn std::error::Error + 'static), missing: &Missing) -> String {
    let mut s = e.to_string();
    // The raw errors for the two common cases say little to a user.
    if s.contains("kprobe/type") && !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return "the kernel has no kprobes (CONFIG_KPROBES off)".into();
    }
    if caps::is_eperm(e) {
        // The kernel says EPERM both to a process without the capability and to a
        // locked-down kernel; only the first is the user's to fix where tracepkt runs.
        return match missing.program_eperm() {
            Some(m) => format!("not permitted: {m}"),
            None => "not permitted by the kernel (EPERM: ftrace or BPF tracing locked down)".into(),
        };
    }
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    // Verifier logs can be long: keep the first line (the syscall's error) and the log's
    // last line, where the verifier says what it refused.
    let mut lines = s.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next_back() {
        Some(last) if last.trim() != first.trim() => format!("{first} ... {}", last.trim()),
        _ => first,
    }
}

/// What attaching needs from the running kernel, and what the user allows.
struct Env<'a> {
    btf: &'a KernelBtf,
    missing: &'a Missing,
    aya_btf: Option<&'a aya::Btf>,
    offsets: &'a Offsets,
    allowed: &'a Mechanisms,
}

/// The attach mechanisms a run may use; all by default. Forcing one (say, classic tracepoints
/// where BTF tracepoints also work) tests or works around a way of attaching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mechanisms(Vec<Mechanism>);

impl Mechanisms {
    /// Only these; an empty list allows all.
    pub fn only(list: Vec<Mechanism>) -> Self {
        Mechanisms(list)
    }

    fn allows(&self, m: Mechanism) -> bool {
        self.0.is_empty() || self.0.contains(&m)
    }
}

/// Loads and attaches every program of one way of attaching a hook: all or none.
fn attach_via(ebpf: &mut Ebpf, env: &Env, point: Point, via: &Via) -> Result<Vec<Link>, String> {
    let mut done: Vec<Link> = Vec::new();
    for &program in via.programs {
        let mut link = Link {
            program,
            mechanism: via.mechanism,
            point,
            id: None,
        };
        let r = load_program(ebpf, env, point, via.mechanism, program)
            .and_then(|()| attach_link(ebpf, &link).map_err(|e| with_source(&e, env.missing)));
        match r {
            Ok(id) => {
                link.id = Some(id);
                done.push(link);
            }
            Err(e) => {
                for l in done {
                    if let Some(id) = l.id {
                        let _ = detach_link(ebpf, l.program, id);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Attaches one hook by the first of its ways that works.
fn attach_hook(ebpf: &mut Ebpf, env: &Env, spec: &HookSpec, links: &mut Vec<Link>) -> Attach {
    let mut why = Vec::new();
    let not_attached = |why| Attach {
        hook: spec.hook,
        mechanism: None,
        why,
    };
    if let Point::Function { name, module } = spec.point
        && let Some(w) = function_missing(env.btf, name, module)
    {
        why.push(w);
        return not_attached(why);
    }
    if let Some(missing) = unresolved(env.offsets, spec.needs) {
        why.push(format!("kernel layouts not found: {missing}"));
        return not_attached(why);
    }
    for via in spec.via {
        let mech = via.mechanism.as_str();
        if !env.allowed.allows(via.mechanism) {
            why.push(format!("{mech}: not among the mechanisms allowed by the configuration"));
            continue;
        }
        if let Some(missing) = unresolved(env.offsets, via.needs) {
            why.push(format!("{mech}: kernel layouts not found: {missing}"));
            continue;
        }
        match attach_via(ebpf, env, spec.point, via) {
            Ok(new) => {
                links.extend(new);
                return Attach {
                    hook: spec.hook,
                    mechanism: Some(via.mechanism),
                    why,
                };
            }
            Err(e) => why.push(format!("{mech}: {e}")),
        }
    }
    not_attached(why)
}

/// Recognising other nodes' probes (the settings' `foreign_budget` and `tunnels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Foreign {
    /// Events a second at most.
    pub budget: u32,
    pub tunnels: bool,
}

/// Every setting the programs run with: the running kernel's layouts and drop reasons, and
/// what the configuration turns on. The one place they are made.
fn settings(offsets: Offsets, reasons: &DropReasons, foreign: Option<Foreign>) -> Settings {
    Settings {
        offsets,
        reasons: reasons.for_programs(),
        foreign_budget: foreign.map_or(0, |f| f.budget),
        tunnels: u32::from(foreign.is_some_and(|f| f.tunnels)),
    }
}

/// Loads the programs, with maps sized by `sizing`, and attaches everything the running
/// kernel supports by the mechanisms `allowed`.
pub fn load(sizing: Sizing, allowed: &Mechanisms, foreign: Option<Foreign>) -> Result<Kernel, LoadError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LoadError::NotRoot);
    }
    let missing = Missing::of_this_process();
    missing.log();
    let started = std::time::Instant::now();
    let tracefs_root = tracefs::ensure_mounted()?;
    let dir = Path::new(KernelBtf::SYSFS);
    let vmlinux = KernelBtf::read_vmlinux(dir)?;
    // tracepkt's BTF reader, aya's, and aya's loader (which reads vmlinux BTF on its own when
    // created) each parse the kernel's BTF; that is most of start-up, so they run side by side.
    let modules = btf_modules();
    let (btf, aya_side) = std::thread::scope(|s| {
        let aya = s.spawn(|| (EbpfLoader::new(), aya::Btf::parse(&vmlinux, aya::Endianness::default())));
        let ours = KernelBtf::load(dir, &vmlinux, &modules);
        (ours, aya.join())
    });
    let btf = btf?;
    let (mut loader, aya_btf) = aya_side.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    tracing::debug!(ms = started.elapsed().as_millis(), "kernel BTF read");
    let aya_btf = match aya_btf {
        Ok(b) => Some(b),
        Err(e) => {
            warn!("aya cannot read the kernel's BTF ({e}): tp_btf programs cannot load");
            None
        }
    };
    let reasons = DropReasons::from_btf(&btf);
    let settings = settings(resolve_offsets(&btf, &tracefs_root), &reasons, foreign);

    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones ignore it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (only matters before 5.11)");
    }

    let mut ebpf = loader
        .map_max_entries(map::PROBES, sizing.probes)
        .map_max_entries(map::HOPS, sizing.hops)
        .map_max_entries(map::VERDICTS, sizing.verdicts)
        .map_max_entries(map::DROPS, sizing.drops)
        .map_max_entries(map::EVENTS, sizing.events)
        .override_global(Settings::GLOBAL, &settings, true)
        .load(PROGRAMS)
        .map_err(|e| match missing.program_eperm() {
            Some(m) if missing.lacks_bpf() && caps::is_eperm(&e) => LoadError::Capability(m),
            _ => e.into(),
        })?;

    tracing::debug!(ms = started.elapsed().as_millis(), "programs loaded");
    let env = Env {
        btf: &btf,
        missing: &missing,
        aya_btf: aya_btf.as_ref(),
        offsets: &settings.offsets,
        allowed,
    };
    let mut links = Vec::new();
    let report: Vec<Attach> = HOOKS
        .iter()
        .map(|spec| attach_hook(&mut ebpf, &env, spec, &mut links))
        .collect();

    for a in &report {
        if a.mechanism.is_some() {
            info!(hook = a.hook.name(), kind = a.kind().as_str(), "{a}");
        } else {
            warn!(hook = a.hook.name(), kind = a.kind().as_str(), "{a}");
        }
    }
    tracing::debug!(ms = started.elapsed().as_millis(), "hooks attached");
    if !report
        .iter()
        .any(|a| a.kind() == Kind::Interface && a.mechanism.is_some())
    {
        let lines: Vec<String> = report
            .iter()
            .filter(|a| a.kind() == Kind::Interface)
            .map(|a| format!("  {a}"))
            .collect();
        return Err(LoadError::NoInterfaceHook(lines.join("\n")));
    }
    // The parsed BTF is large: freeing it takes longer than anything left to do before
    // serving, and nothing waits for it.
    std::thread::spawn(move || drop((btf, aya_btf)));
    Ok(Kernel {
        ebpf,
        report,
        links,
        drop_reasons: reasons,
        release: kernel_release(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_of_the_hook_table_is_in_the_object() {
        let obj = aya_obj::Object::parse(PROGRAMS).expect("the built eBPF object parses");
        for spec in HOOKS {
            for via in spec.via {
                for p in via.programs {
                    assert!(obj.programs.contains_key(*p), "{p} ({:?}) missing", spec.hook);
                }
            }
        }
        let in_table: usize = HOOKS.iter().flat_map(|s| s.via).map(|v| v.programs.len()).sum();
        assert_eq!(obj.programs.len(), in_table, "every program in the object has a row");
    }

    /// The verifier takes what a frozen read-only map holds as constants. The settings must be
    /// all of it: anything else there (a hook table row not folded at compile time, a string)
    /// would be a load at run time.
    #[test]
    fn the_settings_are_the_programs_only_read_only_data() {
        let obj = aya_obj::Object::parse(PROGRAMS).expect("the built eBPF object parses");
        let rodata: Vec<(&String, usize)> = obj
            .maps
            .iter()
            .filter(|(name, _)| name.starts_with(".rodata"))
            .map(|(name, m)| (name, m.data().len()))
            .collect();
        assert_eq!(rodata, vec![(&".rodata".to_string(), std::mem::size_of::<Settings>())]);
    }

    #[test]
    fn settings_carry_the_reasons_and_what_cross_node_turns_on() {
        let mut names = HashMap::new();
        names.insert(2, "NOT_SPECIFIED".to_string());
        names.insert(0, "SKB_CONSUMED".to_string());
        names.insert(12, "NETFILTER_DROP".to_string());
        let reasons = DropReasons::new(names);
        let off = settings(Offsets::unresolved(), &reasons, None);
        assert_eq!((off.foreign_budget, off.tunnels), (0, 0));
        assert_eq!(
            off.reasons,
            Reasons {
                not_specified: 2,
                consumed: 0,
                not_dropped_yet: Reasons::ABSENT,
                no_socket: Reasons::ABSENT,
                netfilter_drop: 12,
            }
        );
        let on = settings(
            Offsets::unresolved(),
            &reasons,
            Some(Foreign {
                budget: 7,
                tunnels: true,
            }),
        );
        assert_eq!((on.foreign_budget, on.tunnels), (7, 1));
        let untunnelled = Foreign {
            budget: 7,
            tunnels: false,
        };
        assert_eq!(settings(Offsets::unresolved(), &reasons, Some(untunnelled)).tunnels, 0);
    }

    #[test]
    fn sizing_follows_the_target_count_within_bounds() {
        let one = Sizing::for_targets(1);
        assert_eq!(
            (one.probes, one.hops, one.verdicts, one.drops),
            (1_024, 1_024, 1_024, 1_024)
        );
        let many = Sizing::for_targets(10_000);
        assert_eq!(
            (many.probes, many.hops, many.verdicts, many.drops),
            (20_000, 160_000, 320_000, 40_000)
        );
        let huge = Sizing::for_targets(1 << 30);
        assert_eq!((huge.probes, huge.verdicts), (1 << 16, 1 << 22));
    }

    #[test]
    fn offsets_resolve_from_a_synthetic_kernel() {
        let btf = super::super::btf::tests::kernel_like();
        let o = resolve_offsets(&btf, Path::new("/nonexistent"));
        assert_eq!(o.get(Off::IptArgTable), Some(0));
        assert_eq!(o.get(Off::IptArgSkb), Some(1));
        assert_eq!(o.get(Off::IptArgState), Some(2));
        // No tracefs: classic tracepoint layouts are absent, and say so.
        assert_eq!(o.get(Off::TpNetDevQueueSkb), None);
        assert_eq!(
            unresolved(&o, &[Off::TpKfreeSkbSkb]).unwrap(),
            "skb:kfree_skb record field skbaddr"
        );
    }
}
