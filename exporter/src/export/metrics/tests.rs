use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use opentelemetry::trace::TraceId;
use probe_common::payload::TraceContext;
use probe_common::{Direction, Hook, Io, Mechanism, Proto};

use super::*;
use crate::journey::{Hop, HopDetail, Journey};
use crate::outcome::Outcome;
use crate::remote::RemoteJourney;

fn target(name: &str) -> TargetLabels {
    TargetLabels {
        target: name.to_owned(),
        extra: vec![("team".to_owned(), "net".to_owned())],
    }
}

fn hop(direction: Direction, ts_ns: u64, ifname: &str, detail: HopDetail) -> Hop {
    let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
    Hop {
        proto: Proto::Icmp,
        probe: 7,
        seq: 1,
        sport: None,
        dport: None,
        direction,
        netns: 4026531840,
        netns_name: Some("client".to_owned()),
        ifname: ifname.to_owned(),
        ifindex: 2,
        saddr: addr,
        daddr: addr,
        ts_ns,
        sources: vec!["net_dev_queue"],
        tunnel: None,
        detail,
    }
}

fn journey(outcome: Outcome, hops: Vec<Hop>, events_lost: u64) -> Journey {
    Journey {
        proto: Proto::Icmp,
        probe: 7,
        seq: 1,
        hops,
        outcome,
        trace: TraceContext::default(),
        sent_ns: 1,
        ended_ns: 100,
        violation: None,
        events_lost,
    }
}

fn answered() -> Journey {
    let tx = HopDetail::Interface { io: Io::Tx };
    let rx = HopDetail::Interface { io: Io::Rx };
    let hops = vec![
        hop(Direction::Request, 10, "veth0", tx.clone()),
        hop(Direction::Request, 20, "eth0", rx.clone()),
        hop(Direction::Reply, 30, "eth0", tx),
        hop(Direction::Reply, 40, "veth0", rx),
    ];
    let rtt = Duration::from_micros(30);
    journey(Outcome::Reply { rtt }, hops, 1)
}

fn dropped() -> Journey {
    let drop = HopDetail::Drop {
        reason: "NETFILTER_DROP".to_owned(),
        location: "nf_hook_slow".to_owned(),
    };
    let hops = vec![
        hop(Direction::Request, 10, "veth0", HopDetail::Interface { io: Io::Tx }),
        hop(Direction::Request, 20, "eth0", drop),
    ];
    journey(Outcome::Timeout, hops, 0)
}

/// Every recorder of every group, so that every family of per-target series gets one.
fn record_all(g: &Groups, t: &TargetLabels) {
    g.add_target(t);
    g.probe.sent(t);
    g.probe.success(t, true);
    g.probe
        .reply(t, Duration::from_millis(1), Some(TraceId::from_bytes([1; 16])));
    g.probe.error(t, ErrorReason::timeout);
    g.sizes.set_sizes(t, &[1400, 1500]);
    g.sizes.round(t, &[(1400, true)]);
    g.path.journey(t, &answered(), None);
    g.path.journey(t, &dropped(), None);
    g.path.expected(t, false);
    g.dns.answer(t, Rcode::NXDOMAIN, false, Some(30));
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

fn series_of<'a>(text: &'a str, target: &str) -> Vec<&'a str> {
    let label = format!("target=\"{target}\"");
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&label))
        .collect()
}

/// Whether a series line is of the family registered as `family` (with its unit, a
/// counter's `_total`, a histogram's `_sum`...).
fn in_family(line: &str, family: &str) -> bool {
    line.strip_prefix(family)
        .is_some_and(|rest| rest.starts_with(['_', '{', ' ']))
}

#[test]
fn removing_a_target_leaves_no_series_of_it_in_any_group() {
    let mut registry = Registry::default();
    let report = [Attach {
        hook: Hook::NetDevQueue,
        mechanism: Some(Mechanism::Tracepoint),
        why: Vec::new(),
    }];
    let groups = Groups::new(&[0.01], &report, "6.1.0", &mut registry);
    let (gone, stays) = (target("gone"), target("stays"));
    record_all(&groups, &gone);
    record_all(&groups, &stays);
    groups.remote.journey(&RemoteJourney {
        trace: TraceContext::default(),
        proto: Proto::Icmp,
        origin: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        hops: dropped().hops,
    });
    groups.process.reload(true);

    let before = encode(&registry);
    // A family this test records nothing into could keep a target's series unseen: every
    // family must show a series here, and every per-target one a series of the target.
    for family in &groups.families {
        assert!(
            before.lines().any(|l| !l.starts_with('#') && in_family(l, family)),
            "{family} has no series: record into it in this test\n{before}"
        );
    }
    for (family, _) in &groups.per_target {
        assert!(
            series_of(&before, "gone").iter().any(|l| in_family(l, family)),
            "{family} has no series of the target: record into it in record_all\n{before}"
        );
    }

    groups.remove_target(&gone);
    let after = encode(&registry);
    assert_eq!(series_of(&after, "gone"), Vec::<&str>::new(), "{after}");
    assert_eq!(series_of(&after, "stays"), series_of(&before, "stays"));
    assert!(after.contains("tracepkt_remote_hops_total{"), "{after}");
}

#[test]
fn a_target_added_again_starts_from_its_first_series() {
    let mut registry = Registry::default();
    let groups = Groups::new(&[], &[], "6.1.0", &mut registry);
    let t = target("again");
    let fresh = {
        groups.add_target(&t);
        encode(&registry)
    };
    record_all(&groups, &t);
    groups.remove_target(&t);
    groups.add_target(&t);
    assert_eq!(series_of(&encode(&registry), "again"), series_of(&fresh, "again"));
    // Its last path went with it: a journey on another path than its last is no path change.
    groups.path.journey(&t, &answered(), None);
    assert!(
        encode(&registry).contains(r#"tracepkt_path_changes_total{target="again",team="net"} 0"#),
        "{}",
        encode(&registry)
    );
}
