//! tracepkt itself: `tracepkt_config_reloads_total`, `tracepkt_program_attached`,
//! `tracepkt_build_info`.

use probe_common::{Hook, Mechanism};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;

use super::{Group, Name, Named, Registrar};
use crate::kernel::loader::Attach;

/// The variants are spelled as the label values.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
enum ReloadResult {
    success,
    failure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reload {
    result: ReloadResult,
}

impl Name for Hook {
    fn name(self) -> &'static str {
        Hook::name(self)
    }
}

/// How a hook is attached, `none` when it is not.
impl Name for Option<Mechanism> {
    fn name(self) -> &'static str {
        self.map_or("none", Mechanism::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Attached {
    program: Named<Hook>,
    mechanism: Named<Option<Mechanism>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Build {
    version: &'static str,
    kernel: String,
}

pub struct Process {
    reloads: Family<Reload, Counter>,
    attached: Family<Attached, Gauge>,
    kernel: String,
}

impl Process {
    /// `attached`: the attach report; `kernel`: the release tracepkt runs on.
    pub fn new(attached: &[Attach], kernel: &str) -> Self {
        let family = Family::<Attached, Gauge>::default();
        for a in attached {
            family
                .get_or_create(&Attached {
                    program: Named(a.hook),
                    mechanism: Named(a.mechanism),
                })
                .set(i64::from(a.mechanism.is_some()));
        }
        Process {
            reloads: Family::default(),
            attached: family,
            kernel: kernel.to_owned(),
        }
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok {
            ReloadResult::success
        } else {
            ReloadResult::failure
        };
        self.reloads.get_or_create(&Reload { result }).inc();
    }
}

impl Group for Process {
    fn register(&self, r: &mut Registrar) {
        r.register(
            "tracepkt_config_reloads",
            "Configuration reloads (SIGHUP), by result",
            None,
            self.reloads.clone(),
        );
        r.register(
            "tracepkt_program_attached",
            "Kernel hooks attached (1) or not (0), and by which mechanism",
            None,
            self.attached.clone(),
        );
        r.register(
            "tracepkt_build",
            "tracepkt version and the kernel it runs on",
            None,
            Info::new(Build {
                version: env!("CARGO_PKG_VERSION"),
                kernel: self.kernel.clone(),
            }),
        );
    }
}
