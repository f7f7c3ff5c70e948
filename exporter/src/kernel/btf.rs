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
    #[error("cannot find `{ty}.{field}`: the kernel's BTF is malformed: {why}")]
    Malformed {
        ty: String,
        field: String,
        why: &'static str,
    },
}

/// vmlinux BTF plus whatever module BTF was asked for, searched in that order.
pub struct KernelBtf {
    sets: Vec<(String, Btf)>,
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> BtfError {
    BtfError::Parse {
        path: path.to_owned(),
        source: anyhow::anyhow!("{e}"),
    }
}

impl KernelBtf {
    pub const SYSFS: &'static str = "/sys/kernel/btf";

    /// Reads `<dir>/vmlinux`: once, so that tracepkt's reader and aya's parse the same bytes.
    pub fn read_vmlinux(dir: &Path) -> Result<Vec<u8>, BtfError> {
        let vmlinux = dir.join("vmlinux");
        std::fs::read(&vmlinux).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BtfError::NoVmlinux(vmlinux),
            _ => parse_err(&vmlinux, e),
        })
    }

    /// Parses vmlinux BTF and, where present, the named modules' BTF from `dir`. Modules that
    /// are not loaded are skipped: their types are simply not found.
    pub fn load(dir: &Path, vmlinux: &[u8], modules: &[&str]) -> Result<Self, BtfError> {
        let base = Btf::from_bytes(vmlinux).map_err(|e| parse_err(&dir.join("vmlinux"), e))?;
        let mut sets = Vec::new();
        for m in modules {
            let p = dir.join(m);
            if let Ok(bytes) = std::fs::read(&p) {
                let split = Btf::from_split_bytes(&bytes, &base).map_err(|e| parse_err(&p, e))?;
                sets.push((m.to_string(), split));
            }
        }
        sets.insert(0, ("vmlinux".to_string(), base));
        Ok(KernelBtf { sets })
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_vmlinux_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        let btf = Btf::from_bytes(bytes).map_err(|e| parse_err(Path::new("<bytes>"), e))?;
        Ok(KernelBtf {
            sets: vec![("vmlinux".into(), btf)],
        })
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
        let size = cur.size() as u64;
        let malformed = |why| BtfError::Malformed {
            ty: ty.to_string(),
            field: path.to_string(),
            why,
        };
        let no_field = || BtfError::NoField {
            ty: ty.to_string(),
            field: path.to_string(),
        };
        // Summed wide: offsets from a lying BTF may add up past u32.
        let mut total_bits = 0u64;
        let mut segments = path.split('.').peekable();
        while let Some(field) = segments.next() {
            let (bits, member) = find_member(btf, &cur, field, 0)
                .map_err(malformed)?
                .ok_or_else(no_field)?;
            if member.bitfield_size().is_some_and(|s| s != 0) || bits % 8 != 0 {
                return Err(BtfError::Bitfield {
                    ty: ty.to_string(),
                    field: path.to_string(),
                });
            }
            total_bits += bits;
            if segments.peek().is_some() {
                cur = resolve_struct(btf, &member).map_err(malformed)?.ok_or_else(no_field)?;
            }
        }
        // Offsets come from the BTF as they are: one past the struct's end is a lie that would
        // send the programs reading another object.
        match u32::try_from(total_bits / 8) {
            Ok(offset) if u64::from(offset) <= size => Ok(offset),
            _ => Err(malformed("the offset is past the end of the struct")),
        }
    }

    /// Parameter names of a function, in order.
    pub fn params(&self, func: &str) -> Result<Vec<String>, BtfError> {
        for (_, btf) in &self.sets {
            let Ok(types) = btf.resolve_types_by_name(func) else {
                continue;
            };
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
            let Ok(types) = btf.resolve_types_by_name(name) else {
                continue;
            };
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

/// How far anonymous members and typedef/qualifier chains are followed: deeper than any
/// kernel's types go, and a bound, so that a loop in malformed BTF ends in an error instead
/// of a stack overflow.
const MAX_DEPTH: usize = 32;

/// Finds `field` in `s`, looking through anonymous members. Returns its bit offset and member.
fn find_member(
    btf: &Btf,
    s: &btf_rs::Struct,
    field: &str,
    depth: usize,
) -> Result<Option<(u64, btf_rs::Member)>, &'static str> {
    if depth > MAX_DEPTH {
        return Err("anonymous members nest without end");
    }
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            return Ok(Some((m.bit_offset().into(), m.clone())));
        }
        if name.is_empty()
            && let Some(inner) = resolve_struct(btf, m)?
            && let Some((bits, found)) = find_member(btf, &inner, field, depth + 1)?
        {
            return Ok(Some((u64::from(m.bit_offset()) + bits, found)));
        }
    }
    Ok(None)
}

/// The struct or union a member's type names, through typedefs and qualifiers; `None` when
/// it names something else.
fn resolve_struct(btf: &Btf, m: &btf_rs::Member) -> Result<Option<btf_rs::Struct>, &'static str> {
    const DANGLING: &str = "a type refers to a type id that is not in the BTF";
    let mut t = btf.resolve_chained_type(m).map_err(|_| DANGLING)?;
    for _ in 0..MAX_DEPTH {
        t = match t {
            Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
            Type::Typedef(ref x) => btf.resolve_chained_type(x),
            Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => btf.resolve_chained_type(x),
            Type::TypeTag(ref x) => btf.resolve_chained_type(x),
            _ => return Ok(None),
        }
        .map_err(|_| DANGLING)?;
    }
    Err("typedefs and qualifiers refer to each other in a loop")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a raw BTF blob: just enough of the format to describe a few kernel-like types.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    const INT: u32 = 1;
    const PTR: u32 = 2;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const ENUM: u32 = 6;
    const TYPEDEF: u32 = 8;
    const CONST: u32 = 10;
    const FUNC: u32 = 12;
    const FUNC_PROTO: u32 = 13;

    impl Builder {
        fn new() -> Self {
            Builder {
                strings: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn u32s(&mut self, v: &[u32]) {
            for x in v {
                self.types.extend_from_slice(&x.to_le_bytes());
            }
        }
        fn head(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, size_or_type: u32) -> u32 {
            let n = self.s(name);
            let info = (kind << 24) | vlen | if kflag { 1 << 31 } else { 0 };
            self.u32s(&[n, info, size_or_type]);
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.head(name, INT, 0, false, bytes);
            self.u32s(&[bytes * 8]);
            id
        }
        fn ptr(&mut self, to: u32) -> u32 {
            self.head("", PTR, 0, false, to)
        }
        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.head(name, TYPEDEF, 0, false, to)
        }
        fn constant(&mut self, to: u32) -> u32 {
            self.head("", CONST, 0, false, to)
        }
        /// Members: (name, type, bit offset, bitfield size).
        fn compound(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let id = self.head(name, kind, members.len() as u32, kflag, size);
            for &(mname, ty, off, bits) in members {
                let n = self.s(mname);
                let off = if kflag { (bits << 24) | off } else { off };
                self.u32s(&[n, ty, off]);
            }
            id
        }
        fn func(&mut self, name: &str, ret: u32, params: &[(&str, u32)]) -> u32 {
            let proto = self.head("", FUNC_PROTO, params.len() as u32, false, ret);
            for &(pname, ty) in params {
                let n = self.s(pname);
                self.u32s(&[n, ty]);
            }
            self.head(name, FUNC, 0, false, proto)
        }
        fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
            let id = self.head(name, ENUM, values.len() as u32, false, 4);
            for &(vname, v) in values {
                let n = self.s(vname);
                self.u32s(&[n, v]);
            }
            id
        }
        fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature of the kernel types tracepkt reads, with the same shapes: `dev` inside an
    /// anonymous struct inside an anonymous union, a nested named struct, a bitfield.
    pub(crate) fn kernel_like() -> KernelBtf {
        KernelBtf::from_vmlinux_bytes(&kernel_like_bytes()).expect("valid BTF")
    }

    fn kernel_like_bytes() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let long = b.int("long", 8);
        let dev = b.compound(
            STRUCT,
            "net_device",
            24,
            &[("pad", long, 0, 0), ("ifindex", int, 64, 0), ("name", long, 128, 0)],
        );
        let dev_ptr = b.ptr(dev);
        let anon_s = b.compound(STRUCT, "", 8, &[("dev", dev_ptr, 0, 0)]);
        let anon_u = b.compound(UNION, "", 8, &[("", anon_s, 0, 0), ("rbnode", long, 0, 0)]);
        let ns = b.compound(STRUCT, "ns_common", 8, &[("stashed", int, 0, 0), ("inum", int, 32, 0)]);
        let net = b.compound(STRUCT, "net", 16, &[("passive", long, 0, 0), ("ns", ns, 64, 0)]);
        // Reached through a typedef and a qualifier, as `possible_net_t` and friends are.
        let const_net = b.constant(net);
        let net_ref = b.typedef("net_ref", const_net);
        b.compound(
            STRUCT,
            "sk_buff",
            80,
            &[
                ("next", long, 0, 0),
                ("", anon_u, 64, 0),
                ("flag", int, 160, 1),
                ("protocol", int, 192, 0),
                ("nd", dev, 256, 0),
                ("len", int, 448, 0),
                ("cnet", net_ref, 480, 0),
            ],
        );
        b.func(
            "ipt_do_table",
            int,
            &[("priv", dev_ptr), ("skb", dev_ptr), ("state", dev_ptr)],
        );
        b.func("kfree_skb_reason", int, &[("skb", dev_ptr), ("reason", int)]);
        b.enumeration(
            "skb_drop_reason",
            &[
                ("SKB_NOT_DROPPED_YET", 0),
                ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
                ("SKB_DROP_REASON_NETFILTER_DROP", 12),
            ],
        );
        b.build()
    }

    /// The fuzz target's seed is this blob: the committed copy must stay what the builder makes
    /// (TRACEPKT_UPDATE_FUZZ_SEEDS=1 rewrites it).
    #[test]
    fn fuzz_seed_is_current() {
        let blob = kernel_like_bytes();
        crate::fuzzing::check_seed("btf", "kernel-like.btf", &blob);
        // Cut inside the type section: the header promises more than there is.
        crate::fuzzing::check_seed("btf", "kernel-like-truncated.btf", &blob[..blob.len() / 2]);
    }

    #[test]
    fn offsets_through_anonymous_unions_and_nested_structs() {
        let btf = kernel_like();
        assert_eq!(btf.offset_of("sk_buff", "dev").unwrap(), 8);
        assert_eq!(btf.offset_of("sk_buff", "rbnode").unwrap(), 8);
        assert_eq!(btf.offset_of("sk_buff", "protocol").unwrap(), 24);
        assert_eq!(btf.offset_of("sk_buff", "nd.ifindex").unwrap(), 32 + 8);
        assert_eq!(btf.offset_of("net", "ns.inum").unwrap(), 12);
        assert_eq!(btf.offset_of("net_device", "name").unwrap(), 16);
        assert_eq!(btf.offset_of("sk_buff", "len").unwrap(), 56);
        assert_eq!(btf.offset_of("sk_buff", "cnet.ns.inum").unwrap(), 60 + 12);
    }

    #[test]
    fn offset_errors_name_what_is_missing() {
        let btf = kernel_like();
        assert!(matches!(
            btf.offset_of("sk_buff", "nope"),
            Err(BtfError::NoField { .. })
        ));
        assert!(matches!(btf.offset_of("nope", "dev"), Err(BtfError::NoType(t)) if t == "nope"));
        assert!(matches!(
            btf.offset_of("sk_buff", "flag"),
            Err(BtfError::Bitfield { .. })
        ));
        // A path through a pointer is not a layout: the program must dereference it itself.
        assert!(matches!(
            btf.offset_of("sk_buff", "dev.ifindex"),
            Err(BtfError::NoField { .. })
        ));
        let msg = btf.offset_of("sk_buff", "nope").unwrap_err().to_string();
        assert!(msg.contains("sk_buff") && msg.contains("nope"), "{msg}");
    }

    #[test]
    fn prototypes_and_enums() {
        let btf = kernel_like();
        assert_eq!(btf.params("ipt_do_table").unwrap(), vec!["priv", "skb", "state"]);
        assert!(matches!(btf.params("nft_do_chain"), Err(BtfError::NoFunction(_))));
        assert_eq!(btf.function_home("ipt_do_table"), Some("vmlinux"));
        let reasons = btf.enum_values("skb_drop_reason").unwrap();
        assert!(reasons.contains(&("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 12)));
        assert_eq!(reasons.len(), 3);
    }

    // Header fields, as byte offsets into the blob.
    const TYPE_LEN: usize = 12;
    const STR_OFF: usize = 16;
    const STR_LEN: usize = 20;

    fn set_u32(blob: &mut [u8], at: usize, v: u32) {
        blob[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn u32_at(blob: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(blob[at..at + 4].try_into().unwrap())
    }

    fn parse_error(blob: &[u8]) -> String {
        match KernelBtf::from_vmlinux_bytes(blob) {
            Ok(_) => panic!("a lying blob of {} bytes parsed", blob.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn lying_headers_are_parse_errors() {
        let good = kernel_like_bytes();
        let (type_len, str_len) = (u32_at(&good, TYPE_LEN), u32_at(&good, STR_LEN));
        let mut cases: Vec<(&str, Vec<u8>)> = vec![("empty", vec![]), ("bad magic", vec![0xff; 64])];
        let mut more_types = good.clone();
        set_u32(&mut more_types, TYPE_LEN, type_len + 24);
        cases.push(("more types than present", more_types));
        let mut more_strings = good.clone();
        set_u32(&mut more_strings, STR_LEN, str_len + 1000);
        cases.push(("more strings than present", more_strings));
        let mut huge_strings = good.clone();
        set_u32(&mut huge_strings, STR_LEN, u32::MAX);
        cases.push(("4 GiB of strings", huge_strings));
        let mut strings_past_end = good.clone();
        set_u32(&mut strings_past_end, STR_OFF, u32::MAX - 8);
        cases.push(("strings past the end", strings_past_end));
        let mut names_past_strings = good.clone();
        set_u32(&mut names_past_strings, STR_LEN, 4);
        cases.push(("names past the strings", names_past_strings));
        for (what, blob) in cases {
            let message = parse_error(&blob);
            assert!(
                message.starts_with("cannot parse BTF in <bytes>: "),
                "{what}: {message}"
            );
        }
        // Every truncation of a valid blob.
        for len in 0..good.len() {
            let message = parse_error(&good[..len]);
            assert!(message.starts_with("cannot parse BTF in <bytes>: "), "{len}: {message}");
        }
    }

    /// Types that point nowhere or in circles: every lookup ends, with an error that names
    /// what was looked up.
    #[test]
    fn lying_types_are_lookup_errors() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        // A typedef loop: a -> b -> a.
        let loop_a = b.next_id;
        b.typedef("loop_a", loop_a + 1);
        b.typedef("loop_b", loop_a);
        // An anonymous struct that contains itself, anonymously.
        let anon_self = b.next_id;
        b.compound(STRUCT, "", 8, &[("", anon_self, 0, 0)]);
        // Anonymous members whose offsets add up past 4 GiB.
        let far_inner = b.compound(STRUCT, "", 8, &[("far", int, 0xffff_ff00, 0)]);
        let far_outer = b.compound(STRUCT, "", 8, &[("", far_inner, 0xffff_ff00, 0)]);
        b.compound(
            STRUCT,
            "sk_buff",
            64,
            &[
                ("dangling", 999, 0, 0),
                ("looped", loop_a, 64, 0),
                ("", far_outer, 0, 0),
            ],
        );
        b.compound(STRUCT, "net_device", 8, &[("", anon_self, 0, 0)]);
        b.head("kfree_skb_reason", FUNC, 0, false, 999);
        b.head("skb_drop_reason", ENUM, 0, false, 4);
        let btf = KernelBtf::from_vmlinux_bytes(&b.build()).expect("parses: the lies are in the types");

        let err = |ty: &str, path: &str| btf.offset_of(ty, path).unwrap_err().to_string();
        assert_eq!(
            err("sk_buff", "dangling.len"),
            "cannot find `sk_buff.dangling.len`: the kernel's BTF is malformed: a type refers to a type id that is not in the BTF"
        );
        assert_eq!(
            err("sk_buff", "looped.len"),
            "cannot find `sk_buff.looped.len`: the kernel's BTF is malformed: typedefs and qualifiers refer to each other in a loop"
        );
        assert_eq!(
            err("net_device", "ifindex"),
            "cannot find `net_device.ifindex`: the kernel's BTF is malformed: anonymous members nest without end"
        );
        assert_eq!(
            err("sk_buff", "far"),
            "cannot find `sk_buff.far`: the kernel's BTF is malformed: the offset is past the end of the struct"
        );
        assert_eq!(btf.offset_of("sk_buff", "dangling").unwrap(), 0);
        assert_eq!(
            btf.params("kfree_skb_reason").unwrap_err().to_string(),
            "function `kfree_skb_reason` is not in the kernel's BTF"
        );
        assert_eq!(btf.enum_values("skb_drop_reason").unwrap(), vec![]);
    }

    #[test]
    fn running_kernel_layouts_resolve() {
        let dir = Path::new(KernelBtf::SYSFS);
        if !dir.join("vmlinux").exists() {
            eprintln!("SKIP running_kernel_layouts_resolve: no /sys/kernel/btf/vmlinux");
            return;
        }
        let btf = KernelBtf::load(dir, &KernelBtf::read_vmlinux(dir).unwrap(), &[]).unwrap();
        // Fields the programs need, on whatever kernel runs the suite.
        for (ty, field) in [
            ("sk_buff", "dev"),
            ("sk_buff", "head"),
            ("sk_buff", "network_header"),
            ("net_device", "nd_net.net"),
            ("net", "ns.inum"),
        ] {
            let off = btf.offset_of(ty, field).unwrap_or_else(|e| panic!("{e}"));
            assert!(off < 4096, "{ty}.{field} at {off}");
        }
        // `dev` shares its slot with other members of an anonymous union; `head` comes later.
        assert!(btf.offset_of("sk_buff", "dev").unwrap() < btf.offset_of("sk_buff", "head").unwrap());
        assert!(
            btf.enum_values("skb_drop_reason")
                .unwrap()
                .iter()
                .any(|(n, _)| n == "SKB_DROP_REASON_NETFILTER_DROP")
        );
        assert!(matches!(
            KernelBtf::read_vmlinux(Path::new("/nonexistent")),
            Err(BtfError::NoVmlinux(_))
        ));
    }
}
