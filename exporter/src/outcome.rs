//! How a probe ended, in the three forms the rest of tracepkt speaks of it: what its socket
//! said ([`Outcome`]), the reason a failure is counted under ([`ErrorReason`]), and the one word
//! a journey's ending is shown as ([`Ending`]). Words are made here, at the edge, and nowhere
//! else: everything in between passes the enums.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::export::metrics::ErrorReason;

/// How a probe ended, as its socket saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply {
        rtt: Duration,
    },
    Timeout,
    /// Answered by an ICMP error instead of a reply (host unreachable, time exceeded...).
    IcmpError(String),
    /// TCP: answered by RST; UDP: by ICMP port unreachable.
    Refused,
    /// TCP or UDP: the kernel reported the destination unreachable.
    Unreachable(String),
    /// The probe could not be sent (no route, permission...).
    SendError(String),
}

impl Outcome {
    /// The reason a failed probe is counted under; `None` for a reply.
    pub fn error(&self) -> Option<ErrorReason> {
        match self {
            Outcome::Reply { .. } => None,
            Outcome::Timeout => Some(ErrorReason::timeout),
            Outcome::IcmpError(_) => Some(ErrorReason::icmp_error),
            Outcome::Refused => Some(ErrorReason::refused),
            Outcome::Unreachable(_) => Some(ErrorReason::unreachable),
            Outcome::SendError(_) => Some(ErrorReason::send),
        }
    }
}

/// How a journey ended, in one word: the page's, the API's and the spans' `outcome`. A timeout
/// whose journey shows where the packet was dropped is `Dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Replied,
    Timeout,
    Refused,
    Unreachable,
    IcmpError,
    SendError,
    Dropped,
    /// Never sent: its address did not resolve.
    ResolveError,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Replied => "replied",
            Ending::Timeout => "timeout",
            Ending::Refused => "refused",
            Ending::Unreachable => "unreachable",
            Ending::IcmpError => "icmp_error",
            Ending::SendError => "send_error",
            Ending::Dropped => "dropped",
            Ending::ResolveError => "resolve_error",
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_the_serialised_names() {
        for e in [
            Ending::Replied,
            Ending::Timeout,
            Ending::Refused,
            Ending::Unreachable,
            Ending::IcmpError,
            Ending::SendError,
            Ending::Dropped,
            Ending::ResolveError,
        ] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
    }
}
