//! Other nodes' probes crossing this node (`cross_node:`): `tracepkt_remote_hops_total`.

use probe_common::Kind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Group, Named, Registrar};
use crate::remote::RemoteJourney;

/// A hop of another node's probe on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RemoteHop {
    /// Where the probe came from: its source address as this node first saw it.
    origin_node: String,
    netns: String,
    interface: String,
    kind: Named<Kind>,
}

#[derive(Default)]
pub struct Remote {
    hops: Family<RemoteHop, Counter>,
}

impl Remote {
    /// Counts the hops of another node's probe seen here.
    pub fn journey(&self, j: &RemoteJourney) {
        let origin_node = j.origin.to_string();
        for h in &j.hops {
            self.hops
                .get_or_create(&RemoteHop {
                    origin_node: origin_node.clone(),
                    netns: h.netns_label(),
                    interface: h.ifname.clone(),
                    kind: Named(h.kind()),
                })
                .inc();
        }
    }
}

impl Group for Remote {
    fn register(&self, r: &mut Registrar) {
        r.register(
            "tracepkt_remote_hops",
            "Hops of other nodes' probes seen on this node (cross_node:), by where the probe came from, namespace, interface and kind",
            None,
            self.hops.clone(),
        );
    }
}
