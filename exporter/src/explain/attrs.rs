//! Reading netlink attributes that came from the kernel without trusting them: every reader
//! keeps what it could read and says what it could not, so that one short or odd attribute
//! costs that attribute, not the message.

use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};

/// One attribute: its type (flags stripped) and its value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attr<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// The attributes of `buf`, and whether it ended in the middle of one (a message cut short).
pub(super) fn attrs(buf: &[u8]) -> (Vec<Attr<'_>>, bool) {
    let mut out = Vec::new();
    let mut cut = false;
    for nla in NlasIterator::new(buf) {
        match nla {
            Ok(nla) => {
                // Checked by the iterator: 4 <= length <= what is left of the buffer.
                let value = nla.into_inner();
                let len = usize::from(u16::from_ne_bytes([value[0], value[1]]));
                let kind = u16::from_ne_bytes([value[2], value[3]]) & NLA_TYPE_MASK;
                out.push(Attr {
                    kind,
                    value: &value[4..len.min(value.len())],
                });
            }
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    (out, cut)
}

pub(super) fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
}

pub(super) fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

pub(super) fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// A NUL-terminated (or not) string attribute, and whether it was valid UTF-8. Invalid bytes
/// become U+FFFD: a name is shown as well as it can be rather than dropped.
pub(super) fn string(v: &[u8]) -> (String, bool) {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    match std::str::from_utf8(&v[..end]) {
        Ok(s) => (s.to_string(), true),
        Err(_) => (String::from_utf8_lossy(&v[..end]).into_owned(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_attribute_keeps_the_ones_before_it() {
        // kind 1 "ab\0" (len 7, padded to 8), then kind 2 claiming 8 bytes with only 6 present.
        let buf = [7, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0, 1, 2];
        let (a, cut) = attrs(&buf);
        assert!(cut);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, 1);
        assert_eq!(string(a[0].value), ("ab".to_string(), true));
    }

    #[test]
    fn nested_flags_are_stripped_and_non_utf8_is_kept_lossily() {
        let buf = [6, 0, 0x05, 0x80, 0xff, b'x', 0, 0];
        let (a, cut) = attrs(&buf);
        assert!(!cut);
        assert_eq!(a[0].kind, 5);
        assert_eq!(string(a[0].value), ("\u{fffd}x".to_string(), false));
    }

    #[test]
    fn numbers_from_short_values_are_none() {
        assert_eq!(be32(&[0, 0, 1]), None);
        assert_eq!(be32(&[0, 0, 1, 0]), Some(256));
        assert_eq!(be64(&[0; 7]), None);
    }
}
