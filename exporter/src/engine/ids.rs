//! Echo ids: each user of the engine (a target, a trace) leases one of its own.

use std::collections::HashSet;

/// Hands out echo ids no other target of this process uses.
#[derive(Debug)]
pub struct IdPool {
    next: u16,
    used: HashSet<u16>,
}

impl IdPool {
    /// Starts from a per-process offset so two tracepkt processes on one node rarely pick the
    /// same ids (a shared id only means both follow the packet).
    pub fn new() -> Self {
        IdPool {
            next: (std::process::id() as u16).wrapping_mul(31).max(1),
            used: HashSet::new(),
        }
    }

    pub fn take(&mut self) -> Option<u16> {
        if self.used.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next;
            self.next = self.next.wrapping_add(1).max(1);
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }

    pub fn give_back(&mut self, id: u16) {
        self.used.remove(&id);
    }
}

impl Default for IdPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_collide_and_return() {
        let mut pool = IdPool::new();
        let ids: HashSet<u16> = (0..5000).map(|_| pool.take().unwrap()).collect();
        assert_eq!(ids.len(), 5000);
        assert!(!ids.contains(&0));
        let one = *ids.iter().next().unwrap();
        pool.give_back(one);
        let again: Vec<u16> = (0..70000).filter_map(|_| pool.take()).collect();
        assert!(again.contains(&one));
        assert_eq!(again.len(), usize::from(u16::MAX) - 5000 + 1);
    }
}
