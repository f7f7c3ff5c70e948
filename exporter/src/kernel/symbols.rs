//! Kernel addresses → symbol names, from `/proc/kallsyms` (root sees real addresses).

use std::path::Path;
use std::sync::OnceLock;

pub struct Symbols {
    /// Sorted by address.
    syms: Vec<(u64, String)>,
}

impl Symbols {
    /// `/proc/kallsyms` of this process: read at most once, and only when first asked for
    /// (it is large, and most runs never need it).
    pub fn shared() -> Option<&'static Symbols> {
        static SHARED: OnceLock<Option<Symbols>> = OnceLock::new();
        SHARED.get_or_init(|| Symbols::load().ok()).as_ref()
    }

    pub fn load() -> std::io::Result<Self> {
        Self::from_file(Path::new("/proc/kallsyms"))
    }

    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?;
                let name = it.next()?;
                // Text symbols only: drop locations are code addresses.
                (addr != 0 && matches!(ty, "t" | "T" | "w" | "W")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable_by_key(|s| s.0);
        Symbols { syms }
    }

    /// True when the function is in the running kernel (built in or in a loaded module).
    pub fn contains(&self, name: &str) -> bool {
        self.syms.iter().any(|(_, n)| n == name)
    }

    /// `symbol+0xoffset` for an address, or the bare address when it is unknown.
    pub fn describe(&self, addr: u64) -> String {
        if addr == 0 {
            return String::new();
        }
        match self.syms.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (base, name) = &self.syms[i - 1];
                format!("{name}+{:#x}", addr - base)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_addresses() {
        let s = Symbols::parse(
            "ffffffff81000000 T _stext\nffffffff81a00100 t nf_hook_slow\nffffffff81a00400 T ip_rcv\nffffffff82000000 D some_data\n",
        );
        assert_eq!(s.describe(0xffffffff81a00180), "nf_hook_slow+0x80");
        assert_eq!(s.describe(0xffffffff81a00400), "ip_rcv+0x0");
        assert_eq!(s.describe(0x1000), "0x1000");
        assert!(s.contains("ip_rcv"));
        assert!(!s.contains("some_data"));
    }
}
