//! User-space handles on the maps the programs share: the `PROBES` registry, the `EVENTS`
//! ring buffer, and the kernel's own health counters.

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use probe_common::{DropKey, HopKey, ProbeInfo, VerdictKey, stat};
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
}

fn take<T>(kernel: &mut Kernel, name: &'static str) -> Result<T, MapError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = kernel.ebpf.take_map(name).ok_or(MapError::Missing(name))?;
    T::try_from(map).map_err(|e| MapError::Aya(name, e))
}

/// The echo ids the programs follow.
pub struct ProbeRegistry {
    map: HashMap<MapData, u16, ProbeInfo>,
}

impl ProbeRegistry {
    pub fn take(kernel: &mut Kernel) -> Result<Self, MapError> {
        Ok(ProbeRegistry {
            map: take(kernel, "PROBES")?,
        })
    }

    pub fn register(&mut self, id: u16, tag: u32) -> Result<(), MapError> {
        self.map
            .insert(id, ProbeInfo { tag }, 0)
            .map_err(|e| MapError::Aya("PROBES", e))
    }

    pub fn unregister(&mut self, id: u16) {
        // Already gone is fine: removal is idempotent from the caller's view.
        let _ = self.map.remove(&id);
    }
}

/// Reads the `EVENTS` ring buffer.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded (counted, never hidden).
    pub undecodable: u64,
}

impl EventReader {
    pub fn take(kernel: &mut Kernel) -> Result<Self, MapError> {
        let ring: RingBuf<MapData> = take(kernel, "EVENTS")?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, until dropped,
        // which happens only with this AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(EventReader { ring, undecodable: 0 })
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
                    self.undecodable += 1;
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
            map: take(kernel, "STATS")?,
        })
    }

    fn sum(&self, index: u32) -> u64 {
        self.map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Events the kernel could not put in the ring buffer because it was full.
    pub fn events_lost(&self) -> u64 {
        self.sum(stat::EVENTS_LOST)
    }
}

/// The kernel's per-CPU counters (`HOPS`, `VERDICTS`, `DROPS`), read at scrape time and summed
/// over CPUs. They are never mirrored into user-space counters.
pub struct KernelCounters {
    hops: PerCpuHashMap<MapData, HopKey, u64>,
    verdicts: PerCpuHashMap<MapData, VerdictKey, u64>,
    drops: PerCpuHashMap<MapData, DropKey, u64>,
}

fn sum_all<K: aya::Pod + Copy>(map: &PerCpuHashMap<MapData, K, u64>) -> Vec<(K, u64)> {
    map.iter()
        .filter_map(Result::ok)
        .map(|(k, per_cpu)| (k, per_cpu.iter().sum()))
        .collect()
}

fn remove_tag<K: aya::Pod + Copy>(map: &mut PerCpuHashMap<MapData, K, u64>, tag_of: impl Fn(&K) -> u32, tag: u32) {
    let doomed: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| tag_of(k) == tag).collect();
    for k in doomed {
        let _ = map.remove(&k);
    }
}

impl KernelCounters {
    pub fn take(kernel: &mut Kernel) -> Result<Self, MapError> {
        Ok(KernelCounters {
            hops: take(kernel, "HOPS")?,
            verdicts: take(kernel, "VERDICTS")?,
            drops: take(kernel, "DROPS")?,
        })
    }

    pub fn hops(&self) -> Vec<(HopKey, u64)> {
        sum_all(&self.hops)
    }

    pub fn verdicts(&self) -> Vec<(VerdictKey, u64)> {
        sum_all(&self.verdicts)
    }

    pub fn drops(&self) -> Vec<(DropKey, u64)> {
        sum_all(&self.drops)
    }

    /// Drops every counter of a target that no longer exists, so the maps stay bounded.
    pub fn forget(&mut self, tag: u32) {
        remove_tag(&mut self.hops, |k| k.tag, tag);
        remove_tag(&mut self.verdicts, |k| k.tag, tag);
        remove_tag(&mut self.drops, |k| k.tag, tag);
    }
}
