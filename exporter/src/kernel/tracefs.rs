//! tracefs: where it is mounted, and the record layouts of classic tracepoints.
//!
//! Record layouts differ between kernels (`skb:kfree_skb` has `reason` at 28 on 6.1 and at 36
//! on 6.18), so offsets are read from each event's `format` file, never compiled in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({0}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NotMounted(std::io::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tracepoint {0} has no field `{1}`")]
    NoField(String, String),
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Returns the tracefs root, mounting it first when it is not (a fresh node often has only
/// sysfs). Falls back to the old debugfs location.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    let root = Path::new(TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root.to_owned());
    }
    let legacy = Path::new("/sys/kernel/debug/tracing");
    if legacy.join("events").is_dir() {
        return Ok(legacy.to_owned());
    }
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with static NUL-terminated strings.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), src.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(TracefsError::NotMounted(std::io::Error::last_os_error()));
    }
    Ok(root.to_owned())
}

/// Field name → byte offset in one tracepoint's record.
#[derive(Debug, Clone, Default)]
pub struct Format {
    pub name: String,
    pub fields: HashMap<String, u32>,
}

impl Format {
    pub fn read(root: &Path, category: &str, event: &str) -> Result<Self, TracefsError> {
        let path = root.join("events").join(category).join(event).join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read { path, source })?;
        Ok(Self::parse(&format!("{category}/{event}"), &text))
    }

    /// Parses lines like `\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`.
    pub fn parse(name: &str, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            for part in line.split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse::<u32>().ok();
                }
            }
            if let (Some(decl), Some(offset)) = (decl, offset) {
                // The name is the last word, less pointer stars and array suffix:
                // `void * skbaddr`, `char comm[16]`, `__data_loc char[] name`.
                if let Some(last) = decl.split_whitespace().last() {
                    let name = last.trim_start_matches('*').split('[').next().unwrap_or_default();
                    if !name.is_empty() {
                        fields.insert(name.to_string(), offset);
                    }
                }
            }
        }
        Format {
            name: name.to_string(),
            fields,
        }
    }

    pub fn offset(&self, field: &str) -> Result<u32, TracefsError> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| TracefsError::NoField(self.name.clone(), field.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KFREE_SKB_6_18: &str = "name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p\"
";

    const KFREE_SKB_6_1: &str = "name: kfree_skb
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;
";

    #[test]
    fn kfree_skb_reason_moves_between_kernels() {
        let new = Format::parse("skb/kfree_skb", KFREE_SKB_6_18);
        let old = Format::parse("skb/kfree_skb", KFREE_SKB_6_1);
        assert_eq!(new.offset("reason").unwrap(), 36);
        assert_eq!(old.offset("reason").unwrap(), 28);
        assert_eq!(new.offset("skbaddr").unwrap(), 8);
        assert_eq!(new.offset("location").unwrap(), 16);
        assert_eq!(new.offset("common_pid").unwrap(), 4);
        assert!(matches!(old.offset("rx_sk"), Err(TracefsError::NoField(_, _))));
    }

    #[test]
    fn array_and_data_loc_fields() {
        let f = Format::parse(
            "net/napi_gro_receive_entry",
            "\tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:0;\n\
             \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
             \tfield:const void * skbaddr;\toffset:32;\tsize:8;\tsigned:0;\n",
        );
        assert_eq!(f.offset("name").unwrap(), 8);
        assert_eq!(f.offset("comm").unwrap(), 12);
        assert_eq!(f.offset("skbaddr").unwrap(), 32);
    }
}
