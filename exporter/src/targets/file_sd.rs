//! File sources in Prometheus' file_sd format, so that any tool that feeds Prometheus can feed
//! tracepkt:
//!
//! ```yaml
//! - targets: ["198.18.0.7", "db.example.internal:5432", "[fd00::7]:443"]
//!   labels: {site: paris}
//! ```
//!
//! `.json` files are read as JSON, the others as YAML. At each refresh the files the glob
//! matches are looked at; one is read again only when its modification time, size or inode
//! changed (a ConfigMap's files change by a symlink swap, which this follows). A file that
//! cannot be read or parsed keeps what it gave last, and counts as one failure each time a new
//! version of it is; a bad entry in a good file is left out alone. Labels starting with `__`
//! are Prometheus' own (`__meta_*`) and are left out, as Prometheus does after relabelling.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::source::{Answer, Found, Left};
use super::status::Rejected;

/// The largest file read: far more than the most targets tracepkt runs would take.
const MAX_FILE_BYTES: u64 = 4 << 20;

pub(super) struct Files {
    pattern: String,
    files: BTreeMap<PathBuf, Seen>,
}

/// What a file gave when it was last read.
struct Seen {
    stamp: Stamp,
    found: Vec<Found>,
    rejected: Vec<Left>,
    /// Why its last version could not be read, if it could not.
    broken: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: i64,
    modified_ns: i64,
    len: u64,
    inode: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Files {
    pub fn new(pattern: &str) -> Files {
        Files {
            pattern: pattern.to_owned(),
            files: BTreeMap::new(),
        }
    }

    pub fn lookup(&mut self) -> Result<Answer, String> {
        let paths: BTreeSet<PathBuf> = glob::glob(&self.pattern)
            .map_err(|e| format!("bad glob {}: {e}", self.pattern))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        self.files.retain(|p, _| paths.contains(p));
        let mut new_failures = 0;
        for path in &paths {
            let Some(stamp) = stamp(path) else { continue };
            if self.files.get(path).is_some_and(|s| s.stamp == stamp) {
                continue;
            }
            let read = read(path);
            if read.is_err() {
                new_failures += 1;
            }
            let seen = self.files.entry(path.clone()).or_insert_with(|| Seen {
                stamp,
                found: Vec::new(),
                rejected: Vec::new(),
                broken: None,
            });
            seen.stamp = stamp;
            match read {
                Ok((found, rejected)) => {
                    (seen.found, seen.rejected, seen.broken) = (found, rejected, None);
                }
                Err(e) => seen.broken = Some(format!("{}: {e}", path.display())),
            }
        }
        let mut answer = Answer::default();
        for seen in self.files.values() {
            answer.found.extend(seen.found.iter().cloned());
            answer.rejected.extend(seen.rejected.iter().cloned());
        }
        let broken: Vec<&str> = self.files.values().filter_map(|s| s.broken.as_deref()).collect();
        if let Some(first) = broken.first() {
            let more = broken.len() - 1;
            let message = if more > 0 {
                format!("{first} (and {more} more broken files)")
            } else {
                first.to_string()
            };
            answer.broken = Some((message, new_failures));
        }
        Ok(answer)
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.mtime(),
        modified_ns: m.mtime_nsec(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A file's entries, and the bad ones left out.
fn read(path: &Path) -> Result<(Vec<Found>, Vec<Left>), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "{len} bytes, more than the {MAX_FILE_BYTES} a file_sd file may have"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let groups: Vec<Group> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(&bytes).map_err(|e| format!("not a file_sd JSON file: {e}"))?
    } else {
        serde_norway::from_slice(&bytes).map_err(|e| format!("not a file_sd YAML file: {e}"))?
    };
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    for group in groups {
        let labels: BTreeMap<String, String> = group.labels.into_iter().filter(|(k, _)| !k.starts_with("__")).collect();
        for t in group.targets {
            match host_port(&t) {
                Ok((host, port)) => found.push(Found {
                    host,
                    port,
                    labels: labels.clone(),
                }),
                Err(e) => rejected.push(Left::one(Rejected::Invalid, format!("{}: {t:?}: {e}", path.display()))),
            }
        }
    }
    Ok((found, rejected))
}

/// `HOST`, `HOST:PORT`, `IPV6` or `[IPV6]:PORT`. The host is checked as a target's address is,
/// when it becomes one.
fn host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1 to 65535)")),
        Ok(p) => Ok(Some(p)),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an opening '[' without its ']'")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_owned(), port(p)?)),
            None if after.is_empty() => Ok((host.to_owned(), None)),
            None => Err(format!("{after:?} after the address")),
        };
    }
    if s.parse::<std::net::IpAddr>().is_ok() {
        return Ok((s.to_owned(), None));
    }
    match s.split_once(':') {
        Some((host, p)) => Ok((host.to_owned(), port(p)?)),
        None => Ok((s.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports() {
        let ok = |s: &str, host: &str, port: Option<u16>| assert_eq!(host_port(s), Ok((host.to_owned(), port)), "{s}");
        ok("198.18.0.7", "198.18.0.7", None);
        ok("198.18.0.7:9100", "198.18.0.7", Some(9100));
        ok("fd00::7", "fd00::7", None);
        ok("[fd00::7]:443", "fd00::7", Some(443));
        ok("[fd00::7]", "fd00::7", None);
        ok("db.example:5432", "db.example", Some(5432));
        for bad in ["198.18.0.7:0", "198.18.0.7:http", "[fd00::7", "[fd00::7]x", "h:70000"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
