//! User-space handles on the maps the programs share: the `PROBES` registry, the `EVENTS`
//! ring buffer, the counters (`HOPS`, `VERDICTS`, `DROPS`) and the kernel's own health
//! counters (`STATS`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use probe_common::{ProbeInfo, ProbeLengths, Tagged, map, stat};
use tokio::io::unix::AsyncFd;

use super::events::KernelEvent;
use super::loader::Kernel;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("map {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error("map {0}: {1}")]
    Aya(&'static str, aya::maps::MapError),
    #[error("ring buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the kernel's map of probes in flight is full: it was sized at start for twice the configured targets; restart tracepkt to size it for the new configuration"
    )]
    ProbesFull,
}

fn take<T>(kernel: &mut Kernel, name: &'static str) -> Result<T, MapError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = kernel.ebpf.take_map(name).ok_or(MapError::Missing(name))?;
    T::try_from(map).map_err(|e| MapError::Aya(name, e))
}

/// The probes the programs follow, by `probe_key` (protocol, and echo id or bound port), and
/// their number (the programs' `IN_FLIGHT` global, the
/// one variable of `.bss`), which lets every program return at once while it is zero. Both
/// are written before a probe is sent.
pub struct ProbeRegistry {
    map: HashMap<MapData, u32, ProbeInfo>,
    count: Array<MapData, u32>,
    registered: u32,
    /// The programs' `PROBE_LENGTHS` bitmap (the one variable of `.data`), and how many
    /// probes in flight have each configured size.
    lengths: Array<MapData, ProbeLengths>,
    sized: BTreeMap<u16, u32>,
    /// The lengths allowed with no sized probe in flight.
    base: ProbeLengths,
    /// 1 while another node's probe may arrive at any time (see [`ProbeRegistry::listen`]):
    /// added to the in-flight count the programs see.
    listening: u32,
}

impl ProbeRegistry {
    pub fn take(kernel: &mut Kernel) -> Result<Self, MapError> {
        Ok(ProbeRegistry {
            map: take(kernel, map::PROBES)?,
            count: take(kernel, map::BSS)?,
            registered: 0,
            lengths: take(kernel, map::DATA)?,
            sized: BTreeMap::new(),
            base: ProbeLengths::fixed(),
            listening: 0,
        })
    }

    /// Keeps the programs looking at every packet from now on, for other nodes' probes, which
    /// are in no entry here; with `tunnels`, also lets probes inside a tunnel past the length
    /// test.
    pub fn listen(&mut self, tunnels: bool) -> Result<(), MapError> {
        if tunnels {
            self.base = ProbeLengths::fixed_and_tunnelled();
            self.publish_lengths()?;
        }
        self.listening = 1;
        self.publish(self.registered)
    }

    /// Lets packets of IP length `len` past the programs' first test while a probe of that
    /// size is in flight; to be undone with [`ProbeRegistry::release_length`]. Only a length
    /// that becomes or stops being in use rewrites the bitmap.
    pub fn allow_length(&mut self, len: u16) -> Result<(), MapError> {
        let n = self.sized.entry(len).or_insert(0);
        *n += 1;
        if *n == 1
            && let Err(e) = self.publish_lengths()
        {
            self.release_length(len);
            return Err(e);
        }
        Ok(())
    }

    pub fn release_length(&mut self, len: u16) {
        let Some(n) = self.sized.get_mut(&len) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.sized.remove(&len);
            if let Err(e) = self.publish_lengths() {
                tracing::warn!("{e}");
            }
        }
    }

    fn publish_lengths(&mut self) -> Result<(), MapError> {
        let mut l = self.base;
        for &len in self.sized.keys() {
            l.allow(len);
        }
        self.lengths.set(0, l, 0).map_err(|e| MapError::Aya(map::DATA, e))
    }

    fn publish(&mut self, n: u32) -> Result<(), MapError> {
        self.count
            .set(0, n + self.listening, 0)
            .map_err(|e| MapError::Aya(map::BSS, e))?;
        self.registered = n;
        Ok(())
    }

    pub fn register(&mut self, id: u32, tag: u32) -> Result<(), MapError> {
        if self.map.get(&id, 0).is_ok() {
            // Already followed: only its tag may change.
            return self
                .map
                .insert(id, ProbeInfo { tag }, 0)
                .map_err(|e| MapError::Aya(map::PROBES, e));
        }
        // Counted first: a program that sees the id must not also see a zero count.
        self.publish(self.registered + 1)?;
        let inserted = self.map.insert(id, ProbeInfo { tag }, 0).map_err(|e| match e {
            aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
                MapError::ProbesFull
            }
            e => MapError::Aya(map::PROBES, e),
        });
        if inserted.is_err() {
            self.publish(self.registered - 1)?;
        }
        inserted
    }

    pub fn unregister(&mut self, id: u32) {
        // Already gone is fine: removal is idempotent from the caller's view, and only a
        // removal changes the count.
        if self.map.remove(&id).is_ok()
            && let Err(e) = self.publish(self.registered.saturating_sub(1))
        {
            tracing::warn!("{e}");
        }
    }
}

/// Reads the `EVENTS` ring buffer.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded (counted, never hidden).
    undecodable: Arc<AtomicU64>,
}

impl EventReader {
    pub fn take(kernel: &mut Kernel) -> Result<Self, MapError> {
        let ring: RingBuf<MapData> = take(kernel, map::EVENTS)?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until dropped,
        // which happens only with this AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(EventReader {
            ring,
            undecodable: Arc::default(),
        })
    }

    /// Records that could not be decoded so far, readable after the reader moved away.
    pub fn undecodable(&self) -> Arc<AtomicU64> {
        self.undecodable.clone()
    }

    /// Moves every record available now into `out`, without waiting.
    pub fn drain(&mut self, out: &mut Vec<KernelEvent>) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            match KernelEvent::decode(&item) {
                Ok(ev) => {
                    out.push(ev);
                    n += 1;
                }
                Err(e) => {
                    self.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("undecodable ring-buffer record: {e}");
                }
            }
        }
        n
    }

    /// Waits until the kernel says records are ready, then drains them. Readiness is cleared
    /// before draining, so a record that lands during the drain wakes the next wait.
    pub async fn wait_and_drain(&mut self, out: &mut Vec<KernelEvent>) -> std::io::Result<usize> {
        self.ring.readable_mut().await?.clear_ready();
        Ok(self.drain(out))
    }
}

/// The kernel side's own counters (`STATS`), summed over CPUs.
pub struct KernelStats {
    map: PerCpuArray<MapData, u64>,
}

impl KernelStats {
    pub fn take(kernel: &mut Kernel) -> Result<Self, MapError> {
        Ok(KernelStats {
            map: take(kernel, map::STATS)?,
        })
    }

    fn sum(&self, index: u32) -> Result<u64, MapError> {
        let per_cpu = self.map.get(&index, 0).map_err(|e| MapError::Aya(map::STATS, e))?;
        Ok(per_cpu.iter().sum())
    }

    /// Events the kernel could not put in the ring buffer because it was full.
    pub fn events_lost(&self) -> Result<u64, MapError> {
        self.sum(stat::EVENTS_LOST)
    }

    /// Other nodes' probe events the kernel did not report, past the foreign-probe budget.
    pub fn foreign_over_budget(&self) -> Result<u64, MapError> {
        self.sum(stat::FOREIGN_OVER_BUDGET)
    }

    /// Each anomaly the kernel side counted, by kind.
    pub fn anomalies(&self) -> Result<Vec<(&'static str, u64)>, MapError> {
        stat::ANOMALIES
            .iter()
            .map(|&(index, kind)| Ok((kind, self.sum(index)?)))
            .collect()
    }
}

/// One of the kernel's counter maps, keyed by `K`. Read at scrape time, never mirrored.
pub struct Counters<K> {
    name: &'static str,
    map: HashMap<MapData, K, u64>,
}

impl<K: aya::Pod + Tagged> Counters<K> {
    pub fn take(kernel: &mut Kernel, name: &'static str) -> Result<Self, MapError> {
        Ok(Counters {
            name,
            map: take(kernel, name)?,
        })
    }

    /// Every counter with its value. A key removed while the map is walked is skipped;
    /// any other failure fails the read.
    pub fn read(&self) -> Result<Vec<(K, u64)>, MapError> {
        let mut out = Vec::new();
        for item in self.map.iter() {
            match item {
                Ok(kv) => out.push(kv),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(MapError::Aya(self.name, e)),
            }
        }
        Ok(out)
    }

    /// Drops every counter of a target that no longer exists, so the map stays bounded.
    pub fn forget(&mut self, tag: u32) {
        let doomed: Vec<K> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tag() == tag)
            .collect();
        for k in doomed {
            let _ = self.map.remove(&k);
        }
    }
}
