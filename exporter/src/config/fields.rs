//! What one value of the file may be: the field deserializers that `raw` names, and the value
//! checks behind them, some shared with the command line (`--from`, `--otlp`, `--size`,
//! `--server`, `--mechanism`).
//!
//! Each check runs inside a visitor, never after `deserialize_*` returns: an error raised
//! inside gets the position of the value itself, one raised after would get the position of
//! the enclosing mapping. Every string is charged to the [`TextBudget`] before it is copied.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use probe_common::Mechanism;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::model::{
    DEFAULT_PORT, MAX_COUNT, MAX_FOREIGN_BUDGET, MAX_RTT_BUCKETS, MAX_SIZES, MAX_TARGETS, MIN_INTERVAL, RESERVED_LABELS,
};
use super::raw::RawTarget;
use crate::pods::PodName;
use crate::probes::dns::{AnswerExpect, DnsQuery};

/// Visits a scalar as text and converts it with `parse`.
struct StrVisitor<T, F> {
    expecting: &'static str,
    parse: F,
    value: PhantomData<T>,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for StrVisitor<T, F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        // Before `parse` copies anything.
        TextBudget::charge(v.len()).map_err(E::custom)?;
        (self.parse)(v).map_err(E::custom)
    }
}

pub(super) fn parse_str<'de, D, T, F>(d: D, expecting: &'static str, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    d.deserialize_str(StrVisitor {
        expecting,
        parse,
        value: PhantomData,
    })
}

/// A string value, counted against the text budget like every other.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a string", |s| Ok(Text(s.to_owned())))
    }
}

pub(super) fn texts(v: Vec<Text>) -> Vec<String> {
    v.into_iter().map(|t| t.0).collect()
}

/// How much text a configuration's values may add up to once its aliases are expanded, as a
/// multiple of the file's size (plus a floor). An alias repeats a node without repeating its
/// text in the file: without a bound, a 1 MB file naming a 1 MB value 2,000 times takes 2 GB
/// and seconds to load, and a slightly larger one all the memory there is. A file without
/// aliases never comes near the bound.
const TEXT_BUDGET_FACTOR: usize = 4;
const TEXT_BUDGET_FLOOR: usize = 1 << 20;
/// What each value costs beyond its text: its `String` and its slot in a list or map.
const TEXT_OVERHEAD: usize = 16;

thread_local! {
    /// (bytes left, budget) while a configuration is deserialized on this thread.
    static TEXT_LEFT: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// The text budget of one deserialization, on this thread, until dropped.
pub(super) struct TextBudget;

impl TextBudget {
    pub(super) fn start(file_len: usize) -> TextBudget {
        let budget = file_len
            .saturating_mul(TEXT_BUDGET_FACTOR)
            .saturating_add(TEXT_BUDGET_FLOOR);
        TEXT_LEFT.with(|left| left.set(Some((budget, budget))));
        TextBudget
    }

    /// Takes a value of `len` bytes from the budget, if one is running.
    fn charge(len: usize) -> Result<(), String> {
        TEXT_LEFT.with(|left| match left.get() {
            None => Ok(()),
            Some((rest, budget)) => match rest.checked_sub(len.saturating_add(TEXT_OVERHEAD)) {
                Some(rest) => {
                    left.set(Some((rest, budget)));
                    Ok(())
                }
                None => Err(format!(
                    "the configuration's values add up to more than {} MiB of text once its aliases are expanded ({}x the file's size): are aliases repeating a long value?",
                    budget >> 20,
                    TEXT_BUDGET_FACTOR
                )),
            },
        })
    }
}

impl Drop for TextBudget {
    fn drop(&mut self) {
        TEXT_LEFT.with(|left| left.set(None));
    }
}

pub(super) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_str(d, "an address such as 127.0.0.1:9977", |s| {
        s.parse().map(Some).map_err(|_| {
            format!(
                "invalid listen address {s:?}: expected IP:PORT, such as 127.0.0.1:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}"
            )
        })
    })
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

pub(super) fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, "a duration such as 10s", |s| {
        let interval = parse_duration(s)?;
        if interval < MIN_INTERVAL {
            return Err(format!(
                "interval {s:?} is too short: the minimum is {}",
                humantime::format_duration(MIN_INTERVAL)
            ));
        }
        Ok(Some(interval))
    })
}

pub(super) fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, "a duration such as 2s", |s| {
        let timeout = parse_duration(s)?;
        if timeout.is_zero() {
            return Err(format!("timeout {s:?} must be greater than zero"));
        }
        Ok(Some(timeout))
    })
}

pub(super) fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "an IP address or a host name", |s| parse_address(s).map(Some))
}

pub(super) fn target_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "a target name", |s| {
        if s.trim().is_empty() {
            return Err("a target name must not be empty".to_owned());
        }
        Ok(Some(s.to_owned()))
    })
}

/// The largest ring buffer accepted: far more than any probe rate needs.
const MAX_RING_BYTES: u64 = 256 << 20;

pub(super) fn ring_buffer_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct RingVisitor;

    impl<'de> Visitor<'de> for RingVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a power of two from 4096 to {MAX_RING_BYTES}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            if !v.is_power_of_two() || !(4096..=MAX_RING_BYTES).contains(&v) {
                return Err(E::custom(format!(
                    "ring_buffer_bytes {v} is not a power of two from 4096 (one page) to {MAX_RING_BYTES} (256 MiB)"
                )));
            }
            Ok(Some(v as u32))
        }
    }

    d.deserialize_u64(RingVisitor)
}

pub(super) fn rtt_buckets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    struct BucketsVisitor;

    impl<'de> Visitor<'de> for BucketsVisitor {
        type Value = Option<Vec<f64>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of increasing bucket bounds in seconds, such as [0.001, 0.01, 0.1]")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<f64> = Vec::new();
            while let Some(v) = seq.next_element::<f64>()? {
                if !v.is_finite() || v <= 0.0 {
                    return Err(de::Error::custom(format!(
                        "RTT bucket {v} is not a positive number of seconds"
                    )));
                }
                if let Some(&last) = out.last()
                    && v <= last
                {
                    return Err(de::Error::custom(format!(
                        "RTT bucket bounds must increase: {v} comes after {last}"
                    )));
                }
                if out.len() == MAX_RTT_BUCKETS {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_RTT_BUCKETS} RTT buckets: each is one more series per target"
                    )));
                }
                out.push(v);
            }
            Ok(Some(out))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    d.deserialize_seq(BucketsVisitor)
}

pub(super) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct CountVisitor;

    impl CountVisitor {
        fn check<E: de::Error>(v: i128) -> Result<Option<u32>, E> {
            match u32::try_from(v) {
                Ok(count) if (1..=MAX_COUNT).contains(&count) => Ok(Some(count)),
                _ => Err(E::custom(format!(
                    "count {v} is out of range: expected 1 to {MAX_COUNT}"
                ))),
            }
        }
    }

    impl<'de> Visitor<'de> for CountVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number from 1 to {MAX_COUNT}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Self::check(v.into())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Self::check(v.into())
        }
    }

    d.deserialize_u64(CountVisitor)
}

/// A probe's IP length (`size:`, `--size`): from the smallest IPv4 probe to the largest IP
/// packet. Whether it is below the smallest IPv6 probe depends on the address: `probe` checks.
fn probe_size(v: i128) -> Result<u16, String> {
    let min = probe_common::PROBE_L3_LEN_V4;
    match u16::try_from(v) {
        Ok(size) if usize::from(size) >= min => Ok(size),
        _ => Err(format!(
            "size {v} is out of range: expected an IP packet length from {min} (the smallest probe; {} over IPv6) to {}",
            probe_common::PROBE_L3_LEN_V6,
            probe_common::MAX_PROBE_LEN
        )),
    }
}

/// `--size BYTES`: [`probe_size`] of a command-line word.
pub fn parse_probe_size(s: &str) -> Result<u16, String> {
    let v = s
        .parse::<i128>()
        .map_err(|_| format!("size {s:?} is not a whole number of bytes"))?;
    probe_size(v)
}

/// `size:` one IP length or a list of them.
pub(super) fn sizes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
    struct SizesVisitor;

    fn check<E: de::Error>(v: i128) -> Result<u16, E> {
        probe_size(v).map_err(E::custom)
    }

    impl<'de> Visitor<'de> for SizesVisitor {
        type Value = Option<Vec<u16>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an IP packet length in bytes, or a list of them")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(vec![check(v.into())?]))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(vec![check(v.into())?]))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut sizes: Vec<u16> = Vec::new();
            while let Some(v) = seq.next_element::<i64>()? {
                let size = check(v.into())?;
                if sizes.contains(&size) {
                    return Err(de::Error::custom(format!("size {size} is listed twice")));
                }
                sizes.push(size);
            }
            if sizes.is_empty() {
                return Err(de::Error::custom("the list of sizes is empty"));
            }
            if sizes.len() > MAX_SIZES {
                return Err(de::Error::custom(format!(
                    "{} sizes: at most {MAX_SIZES} per target",
                    sizes.len()
                )));
            }
            Ok(Some(sizes))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    d.deserialize_any(SizesVisitor)
}

pub(super) fn targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawTarget>, D::Error> {
    // Empty is refused after reading, unless cross_node or discovery is on: see `build`.
    bounded_seq(d, "a list of targets", MAX_TARGETS, || {
        format!("more than {MAX_TARGETS} targets: split them over several tracepkt instances")
    })
}

/// A list of at most `max` values; `too_many` says what is wrong with a longer one, which is
/// refused as soon as it is (before the rest is read).
pub(super) fn bounded_seq<'de, D, T>(
    d: D,
    expecting: &'static str,
    max: usize,
    too_many: fn() -> String,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct SeqVisitor<T> {
        expecting: &'static str,
        max: usize,
        too_many: fn() -> String,
        value: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(de::Error::custom((self.too_many)()));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    d.deserialize_seq(SeqVisitor {
        expecting,
        max,
        too_many,
        value: PhantomData,
    })
}

pub(super) fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    /// A label name, checked against the rules and against the names already seen.
    struct NameSeed<'a>(&'a BTreeMap<String, String>);

    impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
        type Value = String;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            parse_str(d, "a label name", |s| {
                check_label_name(s).map_err(|why| format!("invalid label name {s:?}: {why}"))?;
                if self.0.contains_key(s) {
                    return Err(format!("label {s:?} is given twice"));
                }
                Ok(s.to_owned())
            })
        }
    }

    struct ValueSeed<'a>(&'a str);

    impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
        type Value = String;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            parse_str(d, "a label value", |s| {
                if s.is_empty() {
                    // Prometheus treats an empty value as an absent label.
                    return Err(format!("label {:?} has an empty value", self.0));
                }
                Ok(s.to_owned())
            })
        }
    }

    struct LabelsVisitor;

    impl<'de> Visitor<'de> for LabelsVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of label names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut labels = BTreeMap::new();
            while let Some(name) = map.next_key_seed(NameSeed(&labels))? {
                let value = map.next_value_seed(ValueSeed(&name))?;
                labels.insert(name, value);
            }
            Ok(labels)
        }
    }

    d.deserialize_map(LabelsVisitor)
}

pub(super) fn sample_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct RatioVisitor;

    impl<'de> Visitor<'de> for RatioVisitor {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a fraction between 0 and 1")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if !(0.0..=1.0).contains(&v) {
                return Err(E::custom(format!(
                    "sample_ratio {v} is not between 0 and 1 (the fraction of answered probes traced)"
                )));
            }
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }
    }

    d.deserialize_f64(RatioVisitor)
}

pub(super) fn trace_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "a URL containing {trace_id}", |s| {
        let lower = s.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!("trace_url {s:?} must start with http:// or https://"));
        }
        if !s.contains("{trace_id}") {
            return Err(format!("trace_url {s:?} has no {{trace_id}} to replace"));
        }
        Ok(Some(s.to_owned()))
    })
}

pub(super) fn otlp_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "an http:// URL", |s| check_otlp_endpoint(s).map(Some))
}

/// An OTLP collector URL tracepkt can send to: plain `http://` with a host.
pub fn check_otlp_endpoint(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "OTLP endpoint {s:?}: tracepkt sends plain-text OTLP only; point it at a collector on http://"
        ));
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!("invalid OTLP endpoint {s:?}: it must start with http://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("invalid OTLP endpoint {s:?}: no host after the scheme"));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("invalid OTLP endpoint {s:?}: it contains white space"));
    }
    Ok(s.to_owned())
}

pub(super) fn foreign_budget<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct BudgetVisitor;

    impl<'de> Visitor<'de> for BudgetVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "events a second, from 1 to {MAX_FOREIGN_BUDGET}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_i128(i128::from(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_i128(i128::from(v))
        }

        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
            match u32::try_from(v) {
                Ok(v) if (1..=MAX_FOREIGN_BUDGET).contains(&v) => Ok(Some(v)),
                _ => Err(E::custom(format!(
                    "budget {v} is out of range: events a second, from 1 to {MAX_FOREIGN_BUDGET} (leave cross_node off to recognise none)"
                ))),
            }
        }
    }

    d.deserialize_any(BudgetVisitor)
}

/// The attach mechanisms by name, as `mechanisms:` and `--mechanism` take them.
pub const MECHANISM_NAMES: &str = "tp_btf, tracepoint or kprobe";

/// An attach mechanism by its name. The error is [`MECHANISM_NAMES`], for each front end to
/// word: the file's errors name the key and the value, clap's name the argument already.
pub fn parse_mechanism(s: &str) -> Result<Mechanism, &'static str> {
    Mechanism::from_name(s).ok_or(MECHANISM_NAMES)
}

/// An attach mechanism as the config names it.
pub(super) struct MechanismName(pub(super) Mechanism);

impl<'de> Deserialize<'de> for MechanismName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, MECHANISM_NAMES, |s| {
            parse_mechanism(s)
                .map(MechanismName)
                .map_err(|names| format!("unknown attach mechanism {s:?}: expected {names}"))
        })
    }
}

/// `answer: any`, or a list of the addresses or names the answer must hold.
pub(super) fn answer_expect<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AnswerExpect>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "`any`, or a list of addresses or names the answer must hold")]
    enum Raw {
        Word(String),
        List(Vec<String>),
    }
    match Raw::deserialize(d)? {
        Raw::Word(w) if w == "any" => Ok(Some(AnswerExpect::NonEmpty)),
        Raw::Word(w) => Err(de::Error::custom(format!(
            "answer: {w:?} is neither `any` nor a list (write [{w}] for one value)"
        ))),
        Raw::List(l) if l.is_empty() => Err(de::Error::custom(
            "answer: the list is empty (write `any` for any answer)",
        )),
        Raw::List(l) => Ok(Some(AnswerExpect::Holds(l))),
    }
}

pub(super) fn dns_query<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DnsQuery>, D::Error> {
    parse_str(d, "a DNS query, NAME[/TYPE]", |s| s.parse().map(Some))
}

pub(super) fn dns_server<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_str(d, "a DNS server, IP or IP:PORT", |s| parse_dns_server(s).map(Some))
}

/// A DNS server (`server:`, `--server`): an IP address, with a port when it is not 53.
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT (a DNS server is given by address)"))
}

/// A pod: `namespace/name`.
pub(super) fn pod_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PodName>, D::Error> {
    parse_str(d, "a pod as namespace/name", |s| s.parse().map(Some))
}

/// A network namespace: a name under `/run/netns`, or an absolute path (`/proc/PID/ns/net`).
pub(super) fn netns_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    parse_str(d, "a namespace name or an absolute path", |s| netns_path(s).map(Some))
}

/// The file of a network namespace given as a name under `/run/netns` or an absolute path
/// (`/proc/PID/ns/net`); the config's `from: {netns:}` and `trace --from` take the same.
/// A relative path is neither: `../x` must not reach outside `/run/netns`.
pub fn netns_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the namespace must not be empty".to_owned());
    }
    if s.starts_with('/') {
        return Ok(PathBuf::from(s));
    }
    if s.contains('/') || s == "." || s == ".." {
        return Err(format!(
            "{s:?} is neither a namespace name (no '/') nor an absolute path"
        ));
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    Ok(Path::new("/run/netns").join(s))
}

// ---------------------------------------------------------------------------------------------
// Value checks.

/// An IP address, or a host name made of RFC 1123 labels.
pub(super) fn parse_address(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the address must not be empty".to_owned());
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    if s.starts_with('[') {
        return Err(format!("invalid address {s:?}: write IPv6 addresses without brackets"));
    }
    if s.contains(':') {
        return Err(format!("invalid address {s:?}: not a valid IPv6 address"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("invalid address {s:?}: not a valid IPv4 address"));
    }
    check_host_name(s)
        .map_err(|why| format!("invalid address {s:?}: not an IP address nor a valid host name: {why}"))?;
    Ok(s.to_owned())
}

/// Host name syntax (RFC 1123 section 2.1, RFC 1035 section 2.3.4): dot-separated labels of 1 to
/// 63 letters, digits and hyphens, not starting or ending with a hyphen; at most 253 characters
/// without the optional final dot; the last label not all digits (so that nothing that looks
/// like a dotted IPv4 address passes as a name).
pub(super) fn check_host_name(s: &str) -> Result<(), String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.len() > 253 {
        return Err(format!("it is {} characters long, the maximum is 253", name.len()));
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (a leading dot or two dots in a row)".to_owned());
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!("{c:?} is not allowed (only letters, digits, '-' and '.')"));
        }
        if label.len() > 63 {
            return Err(format!(
                "label {label:?} is {} characters long, the maximum is 63",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("its last label {last:?} is all digits"));
    }
    Ok(())
}

/// Prometheus label name rules, plus the names tracepkt keeps for itself.
pub(super) fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    };
    if !valid {
        return Err("label names must match [a-zA-Z_][a-zA-Z0-9_]*".to_owned());
    }
    if name.starts_with("__") {
        return Err("names starting with \"__\" are reserved for Prometheus' internal use".to_owned());
    }
    if RESERVED_LABELS.contains(&name) {
        return Err("tracepkt uses this label itself".to_owned());
    }
    Ok(())
}
