//! The 32 bytes every probe carries after its ICMP echo header, and every reply echoes back.
//!
//! They say "this is a tracepkt probe" and which trace it belongs to, so that any tracepkt that
//! sees the packet, the sender or another node's, can tell it from a foreign echo that happens
//! to reuse the same echo id, and can attach what it saw to the sender's trace.
//!
//! ```text
//! offset  size  field
//!      0     4  magic, the ASCII bytes "TPKT"
//!      4     1  format version, 1
//!      5     1  W3C trace flags (bit 0: sampled)
//!      6     2  zero
//!      8    16  W3C trace id
//!     24     8  W3C parent span id: the probe's root span
//! ```
//!
//! A later version may only grow the payload or give meaning to the zero bytes; readers check
//! the magic and the version before anything else, and the kernel programs compare both in one
//! load of the first 8 bytes.

/// Bytes of payload after the ICMP echo header.
pub const LEN: usize = 32;
pub const MAGIC: [u8; 4] = *b"TPKT";
pub const VERSION: u8 = 1;
/// The first 8 bytes of every version-1 payload with its flags and zero bytes masked off, as
/// a little-endian `u64`: what the kernel programs compare against.
pub const HEAD: u64 = u64::from_le_bytes([MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, 0, 0, 0]);
/// Which bits of the first 8 bytes [`HEAD`] covers: magic and version.
pub const HEAD_MASK: u64 = 0x0000_00ff_ffff_ffff;

/// W3C trace flag: the trace is sampled.
pub const FLAG_SAMPLED: u8 = 1;

/// The trace context a probe carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub parent_span_id: [u8; 8],
    pub flags: u8,
}

impl TraceContext {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.flags;
        b[8..24].copy_from_slice(&self.trace_id);
        b[24..32].copy_from_slice(&self.parent_span_id);
        b
    }

    /// The context of a tracepkt payload, or `None` for anything else (another magic, another
    /// version, too short).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < LEN || b[..4] != MAGIC || b[4] != VERSION {
            return None;
        }
        let mut c = TraceContext {
            flags: b[5],
            ..Default::default()
        };
        c.trace_id.copy_from_slice(&b[8..24]);
        c.parent_span_id.copy_from_slice(&b[24..32]);
        Some(c)
    }
}

/// Whether the first 8 bytes of a payload, read as a little-endian `u64`, are a version-1
/// tracepkt head.
#[inline(always)]
pub const fn is_head(first8: u64) -> bool {
    first8 & HEAD_MASK == HEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_head() {
        let c = TraceContext {
            trace_id: [7; 16],
            parent_span_id: [9; 8],
            flags: FLAG_SAMPLED,
        };
        let b = c.encode();
        assert_eq!(&b[..5], b"TPKT\x01");
        assert_eq!(TraceContext::decode(&b), Some(c));
        assert!(is_head(u64::from_le_bytes(b[..8].try_into().unwrap())));
        let mut other = b;
        other[4] = 2;
        assert_eq!(TraceContext::decode(&other), None);
        assert!(!is_head(u64::from_le_bytes(other[..8].try_into().unwrap())));
        assert_eq!(
            TraceContext::decode(b"tracepkt probe\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            None
        );
        assert_eq!(TraceContext::decode(&b[..31]), None);
    }
}
