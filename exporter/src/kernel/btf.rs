//! Struct layouts, function prototypes and enums of the running kernel, read from BTF.
//!
//! Rust eBPF cannot emit CO-RE relocations, so every offset the programs use is resolved here
//! at start-up and handed to them as read-only globals. Module types (nf_tables, ip_tables)
//! live in split BTF files under `/sys/kernel/btf/<module>`, on top of vmlinux.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "no kernel BTF at {0}: tracepkt needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 are)"
    )]
    NoVmlinux(PathBuf),
    #[error("cannot parse BTF in {path}: {source}")]
    Parse { path: PathBuf, source: anyhow::Error },
    #[error("type `{0}` is not in the kernel's BTF")]
    NoType(String),
    #[error("`{ty}` has no field `{field}`")]
    NoField { ty: String, field: String },
    #[error("`{ty}.{field}` is a bitfield: no byte offset")]
    Bitfield { ty: String, field: String },
    #[error("function `{0}` is not in the kernel's BTF")]
    NoFunction(String),
}

/// vmlinux BTF plus whatever module BTF was asked for, searched in that order.
pub struct KernelBtf {
    sets: Vec<(String, Btf)>,
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> BtfError {
    BtfError::Parse { path: path.to_owned(), source: anyhow::anyhow!("{e}") }
}

impl KernelBtf {
    pub const SYSFS: &'static str = "/sys/kernel/btf";

    /// Loads `<dir>/vmlinux` and, where present, the named modules' BTF from `dir`.
    /// Modules that are not loaded are skipped: their types are simply not found.
    pub fn load(dir: &Path, modules: &[&str]) -> Result<Self, BtfError> {
        let vmlinux = dir.join("vmlinux");
        if !vmlinux.exists() {
            return Err(BtfError::NoVmlinux(vmlinux));
        }
        let base = Btf::from_file(&vmlinux).map_err(|e| parse_err(&vmlinux, e))?;
        let mut sets = Vec::new();
        for m in modules {
            let p = dir.join(m);
            if p.exists() {
                let split = Btf::from_split_file(&p, &base).map_err(|e| parse_err(&p, e))?;
                sets.push((m.to_string(), split));
            }
        }
        sets.insert(0, ("vmlinux".to_string(), base));
        Ok(KernelBtf { sets })
    }

    pub fn from_vmlinux_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        let btf = Btf::from_bytes(bytes).map_err(|e| parse_err(Path::new("<bytes>"), e))?;
        Ok(KernelBtf { sets: vec![("vmlinux".into(), btf)] })
    }

    /// Which BTF set (vmlinux or a module name) defines the function, if any.
    pub fn function_home(&self, name: &str) -> Option<&str> {
        self.sets.iter().find_map(|(set, btf)| {
            btf.resolve_types_by_name(name)
                .ok()?
                .iter()
                .any(|t| matches!(t, Type::Func(_)))
                .then_some(set.as_str())
        })
    }

    fn struct_named(&self, name: &str) -> Result<(&Btf, btf_rs::Struct), BtfError> {
        for (_, btf) in &self.sets {
            if let Ok(types) = btf.resolve_types_by_name(name) {
                for t in types {
                    if let Type::Struct(s) | Type::Union(s) = t {
                        return Ok((btf, s));
                    }
                }
            }
        }
        Err(BtfError::NoType(name.to_string()))
    }

    /// Byte offset of `path` (dot separated, e.g. `nd_net.net`) inside struct `ty`.
    /// Anonymous unions and structs are descended into, as C does.
    pub fn offset_of(&self, ty: &str, path: &str) -> Result<u32, BtfError> {
        let (btf, mut cur) = self.struct_named(ty)?;
        let mut total_bits = 0u32;
        let mut segments = path.split('.').peekable();
        while let Some(field) = segments.next() {
            let (bits, member) = find_member(btf, &cur, field).ok_or_else(|| BtfError::NoField {
                ty: ty.to_string(),
                field: path.to_string(),
            })?;
            if member.bitfield_size().is_some_and(|s| s != 0) || bits % 8 != 0 {
                return Err(BtfError::Bitfield { ty: ty.to_string(), field: path.to_string() });
            }
            total_bits += bits;
            if segments.peek().is_some() {
                cur = match resolve_struct(btf, &member) {
                    Some(s) => s,
                    None => {
                        return Err(BtfError::NoField { ty: ty.to_string(), field: path.to_string() });
                    }
                };
            }
        }
        Ok(total_bits / 8)
    }

    /// Parameter names of a function, in order.
    pub fn params(&self, func: &str) -> Result<Vec<String>, BtfError> {
        for (_, btf) in &self.sets {
            let Ok(types) = btf.resolve_types_by_name(func) else { continue };
            for t in types {
                if let Type::Func(f) = t
                    && let Ok(Type::FuncProto(proto)) = btf.resolve_chained_type(&f)
                {
                    return Ok(proto
                        .parameters
                        .iter()
                        .map(|p| btf.resolve_name(p).unwrap_or_default())
                        .collect());
                }
            }
        }
        Err(BtfError::NoFunction(func.to_string()))
    }

    /// Values of an enum, e.g. `skb_drop_reason`, with their names.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, u64)>, BtfError> {
        for (_, btf) in &self.sets {
            let Ok(types) = btf.resolve_types_by_name(name) else { continue };
            for t in types {
                match t {
                    Type::Enum(e) => {
                        return Ok(e
                            .members
                            .iter()
                            .map(|m| (btf.resolve_name(m).unwrap_or_default(), m.val() as u64))
                            .collect());
                    }
                    Type::Enum64(e) => {
                        return Ok(e
                            .members
                            .iter()
                            .map(|m| (btf.resolve_name(m).unwrap_or_default(), m.val()))
                            .collect());
                    }
                    _ => {}
                }
            }
        }
        Err(BtfError::NoType(name.to_string()))
    }
}

/// Finds `field` in `s`, looking through anonymous members. Returns its bit offset and member.
fn find_member(btf: &Btf, s: &btf_rs::Struct, field: &str) -> Option<(u32, btf_rs::Member)> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            return Some((m.bit_offset(), m.clone()));
        }
        if name.is_empty()
            && let Some(inner) = resolve_struct(btf, m)
            && let Some((bits, found)) = find_member(btf, &inner, field)
        {
            return Some((m.bit_offset() + bits, found));
        }
    }
    None
}

/// The struct or union a member's type names, through typedefs and qualifiers.
fn resolve_struct(btf: &Btf, m: &btf_rs::Member) -> Option<btf_rs::Struct> {
    let mut t = btf.resolve_chained_type(m).ok()?;
    for _ in 0..16 {
        match t {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(ref x) => t = btf.resolve_chained_type(x).ok()?,
            Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                t = btf.resolve_chained_type(x).ok()?
            }
            Type::TypeTag(ref x) => t = btf.resolve_chained_type(x).ok()?,
            _ => return None,
        }
    }
    None
}
