//! Expected paths: what a target's journeys must cross, must not cross, and whether they may be
//! dropped.

use crate::config::Expect;
use crate::journey::{Hop, Journey};

/// Whether a hop is at `place`: its namespace's name, label or inode, or its interface.
fn at(h: &Hop, place: &str) -> bool {
    h.ifname == place || h.netns_label() == place || h.netns.to_string() == place
}

/// The first expectation `j` breaks, in the order they are written: every `through`, every
/// `not_through`, then `no_drop`.
pub fn violation(e: &Expect, j: &Journey) -> Option<String> {
    for place in &e.through {
        if !j.hops.iter().any(|h| at(h, place)) {
            return Some(format!("did not cross {place}"));
        }
    }
    for place in &e.not_through {
        if let Some(h) = j.hops.iter().find(|h| at(h, place)) {
            return Some(format!(
                "crossed {place} ({} {} in netns {})",
                h.direction.as_str(),
                h.ifname,
                h.netns_label()
            ));
        }
    }
    if e.no_drop
        && let Some(h) = j.hops.iter().find(|h| h.is_fatal())
    {
        return Some(format!("dropped: {} in netns {}", h.verdict_text(), h.netns_label()));
    }
    None
}
