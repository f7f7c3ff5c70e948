//! What each source has done and found, as the metrics read it at scrape time.

/// Why an address a source found is not a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejected {
    /// Not a valid target: a bad address, port or label in a file, or one the template's
    /// checks refuse.
    Invalid,
    /// An SRV record whose target has no address.
    Unresolved,
    /// The same probe as an earlier target (listed, or of an earlier source, or earlier in
    /// the same answer).
    Duplicate,
    /// Past the most one source may give.
    Capped,
    /// Past the most targets tracepkt runs in all.
    OverLimit,
}

impl Rejected {
    pub const ALL: [Rejected; 5] = [
        Rejected::Invalid,
        Rejected::Unresolved,
        Rejected::Duplicate,
        Rejected::Capped,
        Rejected::OverLimit,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Invalid => "invalid",
            Rejected::Unresolved => "unresolved",
            Rejected::Duplicate => "duplicate",
            Rejected::Capped => "capped",
            Rejected::OverLimit => "over_limit",
        }
    }
}

/// Counts by [`Rejected`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections([u64; Rejected::ALL.len()]);

impl Rejections {
    pub fn add(&mut self, why: Rejected, n: u64) {
        self.0[why as usize] += n;
    }

    pub fn get(&self, why: Rejected) -> u64 {
        self.0[why as usize]
    }

    /// Both sets of counts added up.
    pub fn plus(self, other: Rejections) -> Rejections {
        let mut sum = self;
        for why in Rejected::ALL {
            sum.add(why, other.get(why));
        }
        sum
    }
}

/// One source's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Lookups (DNS) or looks for changed files, since start.
    pub lookups: u64,
    /// Lookups that failed, and files that could not be read or parsed, since start.
    pub failures: u64,
    /// Whether the source is failing now, and so keeps the last targets it had.
    pub failing: bool,
    /// Targets it gives now, after the limits and the duplicates of other sources.
    pub targets: usize,
    /// Left out by the source's last answer.
    pub rejected: Rejections,
    /// Left out when joined with the listed targets and the other sources'.
    pub merged_out: Rejections,
    /// With `peers: true`: (peers discovered, peers probed).
    pub peers: Option<(usize, usize)>,
}

impl SourceStatus {
    /// Everything left out now, by why.
    pub fn left_out(&self) -> Rejections {
        self.rejected.plus(self.merged_out)
    }
}
