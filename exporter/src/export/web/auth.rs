//! Basic auth against bcrypt hashes, and what keeps bcrypt from being turned against the rest
//! of the server.
//!
//! A bcrypt check costs tens of milliseconds of CPU by design. Checks run one at a time on a
//! thread of their own, never on the runtime's workers or its blocking pool (where `/metrics`
//! is encoded), behind a short queue; each client address gets one check at a time and a few a second. A
//! scraper pays once: credentials that passed are remembered. Credentials that failed are
//! not, so that a flood of wrong ones cannot push a scraper's out of the memory.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, TrySendError};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

/// Remembered credentials that passed; beyond this the memory is emptied and refilled.
const REMEMBERED: usize = 64;
/// Checks waiting for the bcrypt thread; more are answered 503 at once.
const QUEUE: usize = 8;
/// Checks one client address may start: this many at once, then one a second.
const PER_CLIENT_BURST: u32 = 4;
/// Client addresses whose check budget is kept; past this, those of idle clients go.
const CLIENTS_KEPT: usize = 4096;

/// The configured users, and the credentials that passed.
pub(super) struct Users {
    users: BTreeMap<String, String>,
    /// Checked for unknown users, so that the answer's time does not tell which users exist:
    /// a hash of the median cost of the configured ones.
    decoy: String,
    passed: Mutex<HashSet<(String, String)>>,
}

impl Users {
    pub fn new(users: BTreeMap<String, String>) -> Users {
        let mut costs: Vec<u32> = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .collect();
        costs.sort_unstable();
        let cost = costs.get(costs.len() / 2).copied().unwrap_or(bcrypt::DEFAULT_COST);
        Users {
            users,
            decoy: decoy(cost),
            passed: Mutex::new(HashSet::new()),
        }
    }

    fn remembered(&self, user: &str, password: &str) -> bool {
        let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        passed.contains(&(user.to_owned(), password.to_owned()))
    }

    fn remember(&self, user: &str, password: &str) {
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.len() >= REMEMBERED {
            passed.clear();
        }
        passed.insert((user.to_owned(), password.to_owned()));
    }
}

/// A bcrypt hash of nothing anyone knows at `cost`: verifying against it takes as long as
/// against a real hash of that cost. The cheapest hash is made, then given the cost, since
/// making one at cost 12 or more would take a noticeable time at each load.
fn decoy(cost: u32) -> String {
    let salt: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(97).wrapping_add(cost as u8));
    let cheap = bcrypt::hash_with_salt(b"tracepkt: no such user", 4, salt)
        .map(|h| h.format_for_version(bcrypt::Version::TwoB))
        .unwrap_or_default();
    // `$2b$04$` + salt and hash.
    match cheap.get(7..) {
        Some(rest) => format!("$2b${cost:02}${rest}"),
        None => cheap,
    }
}

/// What a check came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Allowed,
    Denied,
    /// This client started too many checks lately.
    ClientTooFast,
    /// The bcrypt queue is full.
    Busy,
}

struct Job {
    password: String,
    hash: String,
    reply: oneshot::Sender<bool>,
}

/// The bcrypt thread, its queue, and each client's budget of checks. One for the process:
/// a reloaded user list keeps them.
pub(super) struct Checker {
    jobs: SyncSender<Job>,
    per_client: DefaultKeyedRateLimiter<IpAddr>,
    /// Clients with a check queued or running: one each, so that a few clients cannot fill
    /// the queue ahead of another.
    in_flight: Mutex<HashSet<IpAddr>>,
}

impl Checker {
    pub fn start() -> std::io::Result<Checker> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("tracepkt-bcrypt".into())
            .spawn(move || {
                for job in queue {
                    // Its request is gone (the client gave up): no one waits for the answer.
                    if job.reply.is_closed() {
                        continue;
                    }
                    let ok = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
                    let _ = job.reply.send(ok);
                }
            })?;
        let burst = NonZeroU32::new(PER_CLIENT_BURST).expect("not zero");
        Ok(Checker {
            jobs,
            per_client: RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN).allow_burst(burst)),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    pub async fn check(&self, users: &Users, client: IpAddr, user: &str, password: &str) -> Verdict {
        if users.remembered(user, password) {
            return Verdict::Allowed;
        }
        if self.per_client.len() > CLIENTS_KEPT {
            self.per_client.retain_recent();
        }
        let client = client_key(client);
        let Some(_turn) = Turn::take(&self.in_flight, client) else {
            return Verdict::ClientTooFast;
        };
        if self.per_client.check_key(&client).is_err() {
            return Verdict::ClientTooFast;
        }
        let known = users.users.get(user);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            password: password.to_owned(),
            hash: known.unwrap_or(&users.decoy).clone(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Verdict::Busy,
            // The thread is gone (it panicked): nobody can be let in.
            Err(TrySendError::Disconnected(_)) => return Verdict::Busy,
        }
        let ok = answer.await.unwrap_or(false) && known.is_some();
        if ok {
            users.remember(user, password);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// A client's check in flight; dropped (answered, or the request gone), the client may
/// start another.
struct Turn<'a> {
    in_flight: &'a Mutex<HashSet<IpAddr>>,
    client: IpAddr,
}

impl<'a> Turn<'a> {
    fn take(in_flight: &'a Mutex<HashSet<IpAddr>>, client: IpAddr) -> Option<Turn<'a>> {
        let mut set = in_flight.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(client).then_some(Turn { in_flight, client })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut set = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.client);
    }
}

/// The address a budget is kept for: an IPv6 client by its /64, which one host can fill.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// `user:password` from an `Authorization: Basic` header value.
pub(super) fn credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::new(BTreeMap::from([(
            "prom".to_owned(),
            bcrypt::hash("s3cret", 4).unwrap(),
        )]))
    }

    #[tokio::test]
    async fn checks_the_password_and_the_user() {
        let c = Checker::start().unwrap();
        let u = users();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(c.check(&u, ip, "prom", "s3cret").await, Verdict::Allowed);
        assert_eq!(c.check(&u, ip, "prom", "wrong").await, Verdict::Denied);
        assert_eq!(c.check(&u, ip, "other", "s3cret").await, Verdict::Denied);
        // Remembered: no check spent.
        for _ in 0..10 {
            assert_eq!(c.check(&u, ip, "prom", "s3cret").await, Verdict::Allowed);
        }
    }

    #[tokio::test]
    async fn a_client_gets_a_few_checks_and_others_keep_theirs() {
        let c = Checker::start().unwrap();
        let u = users();
        let fast: IpAddr = "2001:db8::1".parse().unwrap();
        let same_net: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut verdicts = Vec::new();
        for _ in 0..PER_CLIENT_BURST + 2 {
            verdicts.push(c.check(&u, fast, "prom", "wrong").await);
        }
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Denied).count(),
            PER_CLIENT_BURST as usize
        );
        assert_eq!(verdicts.last(), Some(&Verdict::ClientTooFast));
        assert_eq!(
            c.check(&u, same_net, "prom", "s3cret").await,
            Verdict::ClientTooFast,
            "same /64"
        );
        assert_eq!(c.check(&u, other, "prom", "s3cret").await, Verdict::Allowed);
    }

    #[test]
    fn the_decoy_costs_what_the_configured_hashes_cost() {
        let hashes = [10, 12, 10].map(|cost| {
            let mut h = bcrypt::hash("x", 4).unwrap();
            h.replace_range(4..6, &format!("{cost:02}"));
            h
        });
        let u = Users::new(
            hashes
                .into_iter()
                .enumerate()
                .map(|(i, h)| (format!("u{i}"), h))
                .collect(),
        );
        let parts: bcrypt::HashParts = u.decoy.parse().unwrap();
        assert_eq!(parts.get_cost(), 10);
        assert!(!bcrypt::verify("", &decoy(4)).unwrap());
        assert_eq!(decoy(12).len(), 60);
    }

    #[test]
    fn reads_basic_credentials() {
        assert_eq!(
            credentials("Basic cHJvbTpzM2M6cmV0"),
            Some(("prom".into(), "s3c:ret".into()))
        );
        assert_eq!(credentials("Bearer x"), None);
        assert_eq!(credentials("Basic !!"), None);
    }
}
