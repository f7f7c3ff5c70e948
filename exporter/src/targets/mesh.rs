//! The bounded peer mesh: which of the other tracepkts this node probes (`peers: true`).
//!
//! Every node sees the same list of addresses (one DNS answer, or the same files) and must pick
//! its peers so that, with no word exchanged between nodes:
//!
//! * each node probes `k = max_peers` others (all of them below `k + 1` nodes: a full mesh);
//! * every node is probed by someone, and by about as many as it probes;
//! * a node that comes or goes changes only the pairs it is part of: a node leaving removes
//!   exactly its own pairs, and only the nodes that lose it as a peer take a replacement.
//!
//! Rendezvous hashing per node (each node keeps the `k` peers with the highest hash of
//! (this node, peer)) has the first and last properties but not the second: in-degrees follow a
//! binomial law, and some node is probed by nobody far too often (with 6 nodes and `k = 2`,
//! about four times in ten). A node nobody probes is a node whose failure nobody sees.
//!
//! So the addresses are placed on a ring by a hash of the address alone, and each node probes
//! the `k` that follow its own place. Each node then has exactly `k` successors it probes and
//! exactly `k` predecessors that probe it: in- and out-degree are both `k`, always, whatever the
//! hash values. A node leaving removes its `k` outgoing and `k` incoming pairs; each of its `k`
//! predecessors takes the next node along as a replacement, and nobody else changes. A node
//! joining is the same in reverse. Because the place depends on the address and not on who
//! looks, every node computes the same ring.
//!
//! Each address family is a ring of its own: a probe goes from an IPv4 address to an IPv4
//! address, and a node in a dual-stack answer probes `k` peers over each family. A node whose
//! own address is not in the answer (not ready yet, or left out by a cap) still places itself
//! by its own address and probes its successors; nobody probes it until it is in the answer.
//!
//! The hash is 64-bit FNV-1a of the address's bytes (4 for IPv4, 16 for IPv6), ties broken by
//! the address: it is part of the contract between nodes, since nodes running different
//! versions of tracepkt during an upgrade must still agree on the ring.

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::net::IpAddr;

/// The peers this node probes, out of `candidates` (the others' addresses and this node's own,
/// in any order, each once), given this node's own addresses: at most `k` of each address
/// family, in ring order from this node's place on. Returns (the others: peers discovered,
/// the chosen ones).
pub fn select(candidates: &[IpAddr], own: &[IpAddr], k: usize) -> (usize, Vec<IpAddr>) {
    let mut discovered = 0;
    let mut chosen = Vec::new();
    for v6 in [false, true] {
        let family = |ip: &&IpAddr| ip.is_ipv6() == v6;
        let members: BTreeSet<(u64, IpAddr)> = candidates.iter().filter(family).map(|&ip| (place(ip), ip)).collect();
        let others: Vec<(u64, IpAddr)> = members.iter().filter(|(_, ip)| !own.contains(ip)).copied().collect();
        discovered += others.len();
        let Some(me) = own_place(&members, own, v6) else {
            continue;
        };
        // The successors of `me` on the ring: those after it, then those from the start.
        let (before, after): (Vec<_>, Vec<_>) = others.iter().partition(|m| **m <= me);
        chosen.extend(after.iter().chain(before.iter()).take(k).map(|(_, ip)| *ip));
    }
    (discovered, chosen)
}

/// This node's place on the ring of one family: that of its own address in the answer (the
/// first on the ring if it has several there), else that of its first own address of the family
/// (on the ring it would take); `None` when it has no address of that family, and so cannot
/// probe over it.
fn own_place(members: &BTreeSet<(u64, IpAddr)>, own: &[IpAddr], v6: bool) -> Option<(u64, IpAddr)> {
    members.iter().find(|(_, ip)| own.contains(ip)).copied().or_else(|| {
        own.iter()
            .filter(|ip| ip.is_ipv6() == v6)
            .map(|&ip| (place(ip), ip))
            .min()
    })
}

/// An address's place on the ring.
pub fn place(ip: IpAddr) -> u64 {
    let mut h = fnv::FnvHasher::default();
    match ip {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish()
}

/// The addresses of this node that a peer could have been told: those of its interfaces, less
/// loopback and IPv6 link-local ones.
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    interfaces
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && !matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i))
    }

    /// Every node's choice among `nodes`: (prober, probed) pairs.
    fn pairs(nodes: &[IpAddr], k: usize) -> BTreeSet<(IpAddr, IpAddr)> {
        nodes
            .iter()
            .flat_map(|&me| {
                let (found, chosen) = select(nodes, &[me], k);
                assert_eq!(found, nodes.len() - 1);
                chosen.into_iter().map(move |peer| (me, peer))
            })
            .collect()
    }

    /// A small deterministic generator, so that a failure names a seed that reproduces it.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    fn random_nodes(rng: &mut Lcg, n: usize) -> Vec<IpAddr> {
        let mut set = BTreeSet::new();
        while set.len() < n {
            set.insert(v4((rng.next() % 60_000) as u32));
        }
        set.into_iter().collect()
    }

    #[test]
    fn the_ring_place_is_fixed() {
        // Nodes of different versions must agree: these values are the contract.
        assert_eq!(place(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))), 0x8fec_69af_5500_1886);
        assert_eq!(place(IpAddr::V6(Ipv6Addr::LOCALHOST)), 0x8820_1eb9_60ff_62b2);
    }

    #[test]
    fn each_node_probes_k_and_is_probed_by_k() {
        let mut rng = Lcg(7);
        for n in [2usize, 3, 4, 6, 7, 10, 33, 100] {
            for k in [1usize, 2, 3, 5, 10] {
                for _ in 0..20 {
                    let nodes = random_nodes(&mut rng, n);
                    let pairs = pairs(&nodes, k);
                    let want = k.min(n - 1);
                    let mut out: BTreeMap<IpAddr, usize> = BTreeMap::new();
                    let mut into: BTreeMap<IpAddr, usize> = BTreeMap::new();
                    for &(a, b) in &pairs {
                        assert_ne!(a, b, "a node never probes itself");
                        *out.entry(a).or_default() += 1;
                        *into.entry(b).or_default() += 1;
                    }
                    for node in &nodes {
                        assert_eq!(out.get(node), Some(&want), "n={n} k={k}: out-degree of {node}");
                        assert_eq!(into.get(node), Some(&want), "n={n} k={k}: in-degree of {node}");
                    }
                    if n <= k + 1 {
                        assert_eq!(pairs.len(), n * (n - 1), "n={n} k={k}: a full mesh");
                    }
                }
            }
        }
    }

    #[test]
    fn the_choice_does_not_depend_on_the_order_of_the_answer() {
        let mut rng = Lcg(11);
        let nodes = random_nodes(&mut rng, 20);
        let mut reversed = nodes.clone();
        reversed.reverse();
        for &me in &nodes {
            assert_eq!(select(&nodes, &[me], 3), select(&reversed, &[me], 3));
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_pairs() {
        let mut rng = Lcg(13);
        for n in [3usize, 4, 6, 9, 50] {
            for k in [1usize, 2, 3, 4] {
                for _ in 0..20 {
                    let nodes = random_nodes(&mut rng, n);
                    let gone = nodes[(rng.next() as usize) % n];
                    let rest: Vec<IpAddr> = nodes.iter().copied().filter(|&a| a != gone).collect();
                    let (before, after) = (pairs(&nodes, k), pairs(&rest, k));
                    let removed: BTreeSet<_> = before.difference(&after).copied().collect();
                    let added: BTreeSet<_> = after.difference(&before).copied().collect();
                    let own: BTreeSet<_> = before
                        .iter()
                        .filter(|(a, b)| *a == gone || *b == gone)
                        .copied()
                        .collect();
                    assert_eq!(
                        removed, own,
                        "n={n} k={k}: the pairs removed are exactly those of {gone}"
                    );
                    let lost: BTreeSet<IpAddr> = own.iter().filter(|(_, b)| *b == gone).map(|(a, _)| *a).collect();
                    for (a, _) in &added {
                        assert!(lost.contains(a), "n={n} k={k}: {a} gained a peer without losing one");
                    }
                    // And joining is the same in reverse.
                    let rejoined = pairs(&nodes, k);
                    assert_eq!(rejoined, before);
                }
            }
        }
    }

    #[test]
    fn own_addresses_are_left_out_and_families_are_rings_of_their_own() {
        let me4 = v4(1);
        let me6: IpAddr = "fd00::1".parse().unwrap();
        let mut nodes: Vec<IpAddr> = (1..=6).map(v4).collect();
        nodes.extend((1..=6).map(|i| format!("fd00::{i}").parse::<IpAddr>().unwrap()));
        let (found, chosen) = select(&nodes, &[me4, me6], 2);
        assert_eq!(found, 10);
        assert_eq!(chosen.len(), 4);
        assert_eq!(chosen.iter().filter(|a| a.is_ipv4()).count(), 2);
        assert!(!chosen.contains(&me4) && !chosen.contains(&me6));
        // Without an IPv6 address of its own, a node probes no IPv6 peer.
        let (_, chosen) = select(&nodes, &[me4], 2);
        assert!(chosen.iter().all(|a| a.is_ipv4()));
    }

    #[test]
    fn a_node_missing_from_the_answer_still_probes() {
        let nodes: Vec<IpAddr> = (1..=6).map(v4).collect();
        let (found, chosen) = select(&nodes, &[v4(99)], 2);
        assert_eq!((found, chosen.len()), (6, 2));
    }
}
