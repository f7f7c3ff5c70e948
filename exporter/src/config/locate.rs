//! Where a problem found after deserializing is in the file.
//!
//! A check that needs several values at once blames a node by its path (`targets[3].name`):
//! [`Problem`]. serde_norway has no `Spanned` type and its `Value` keeps no positions, so the
//! node's position is found by walking the same text again with serde_norway along the path and
//! failing on purpose when the walk reaches the node: serde_norway then reports that node's line
//! and column, exactly as for a type error. This uses the same parser as the real load, so
//! anchors, aliases, flow style and multi-line scalars need no special handling; if the walk
//! ever fails to reach the node, the error points at the nearest enclosing node that it does
//! reach.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

/// What is wrong, and the node to blame.
pub(super) struct Problem {
    pub path: Vec<Seg>,
    pub message: String,
}

impl Problem {
    pub fn new(path: Vec<Seg>, message: impl Into<String>) -> Problem {
        Problem {
            path,
            message: message.into(),
        }
    }
}

/// The path of a target and of its keys: `targets[i]`, or the template of discovery source
/// `i`, `discovery[i].target`.
#[derive(Debug, Clone, Copy)]
pub(super) enum TargetPath {
    Listed(usize),
    Template(usize),
}

impl TargetPath {
    /// `targets[i]` or `discovery[i].target`.
    pub fn target(self) -> Vec<Seg> {
        match self {
            TargetPath::Listed(i) => vec![Seg::Key("targets"), Seg::Index(i)],
            TargetPath::Template(i) => vec![Seg::Key("discovery"), Seg::Index(i), Seg::Key("target")],
        }
    }

    /// `targets[i].key`.
    pub fn key(self, key: &'static str) -> Vec<Seg> {
        self.keys(&[key])
    }

    /// `targets[i].key.key...`.
    pub fn keys(self, keys: &[&'static str]) -> Vec<Seg> {
        let mut path = self.target();
        path.extend(keys.iter().map(|&k| Seg::Key(k)));
        path
    }
}

/// The path as the errors write it: `targets[1].timeout`, or `.` for the document.
pub(super) fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) if out.is_empty() => out.push_str(key),
            Seg::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The message of the deliberate error; no YAML text can produce it.
const FOUND: &str = "\u{0}tracepkt: node found\u{0}";

/// 1-based (line, column) of the node at `path`, or of its nearest ancestor that can be found.
pub(super) fn locate_nearest(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    (0..=path.len()).rev().find_map(|len| locate(text, &path[..len]))
}

/// 1-based (line, column) of the node at `path`.
pub(super) fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    match Locate(path).deserialize(serde_norway::Deserializer::from_str(text)) {
        Err(error) if error.to_string().contains(FOUND) => error.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Follows the rest of the path through the node it is given.
struct Locate<'a>(&'a [Seg]);

impl Locate<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        match self.0 {
            [] => Err(E::custom(FOUND)),
            _ => Ok(()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            // Found (empty path), or the path wants a list here: give up, leaving the map unread
            // (serde_norway then complains, which is as good as "not found").
            return self.leaf();
        };
        while let Some(key) = map.next_key::<serde_norway::Value>()? {
            if key.as_str() == Some(*want) {
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return self.leaf();
        };
        let mut i = 0;
        while i < *want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
        seq.next_element_seed(Locate(rest)).map(|_| ())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.leaf()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.leaf()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
}
