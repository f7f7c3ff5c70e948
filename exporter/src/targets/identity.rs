//! Which node a peer is: every `tracepkt serve` says its node name at `/api/identity`, and the
//! mesh asks each peer it probes, so that the `peer` label reads `node-b` rather than an
//! address. A peer that does not answer in time (not up yet, behind TLS or basic auth, not a
//! tracepkt) is named by its address, and asked again at the next refresh; a name once learned
//! is kept while the address stays a peer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// The path of the identity document.
pub const IDENTITY_PATH: &str = "/api/identity";
/// How long a peer may take to say who it is.
const FETCH_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of a peer's answer that is read: a name and a version.
const MAX_ANSWER_BYTES: usize = 1024;

/// What `/api/identity` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub version: u32,
    /// The node's name: `K8S_NODE_NAME`, else the host name.
    pub node: String,
}

impl Identity {
    /// This node's.
    pub fn own() -> Identity {
        let node = std::env::var("K8S_NODE_NAME")
            .ok()
            .filter(|n| valid_name(n))
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|n| valid_name(n))
            .unwrap_or_else(|| "unknown".to_owned());
        Identity { version: 1, node }
    }
}

/// A node name as Kubernetes allows one (a DNS subdomain), or a host name.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The peers' names learned so far.
pub(super) struct Names {
    /// The port peers serve on: this node's own, as every node of a DaemonSet listens alike.
    port: u16,
    known: HashMap<IpAddr, String>,
    client: reqwest::Client,
}

impl Names {
    pub fn new(port: u16) -> Names {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client without TLS or proxies always builds");
        Names {
            port,
            known: HashMap::new(),
            client,
        }
    }

    /// The name of each peer, in order: its node name where it says it, else its address.
    pub async fn of(&mut self, peers: &[IpAddr]) -> Vec<String> {
        self.known.retain(|ip, _| peers.contains(ip));
        let mut asks = JoinSet::new();
        for &ip in peers.iter().filter(|ip| !self.known.contains_key(ip)) {
            let (client, addr) = (self.client.clone(), SocketAddr::new(ip, self.port));
            asks.spawn(async move { (ip, fetch(&client, addr).await) });
        }
        while let Some(done) = asks.join_next().await {
            if let Ok((ip, Some(name))) = done {
                self.known.insert(ip, name);
            }
        }
        peers
            .iter()
            .map(|ip| self.known.get(ip).cloned().unwrap_or_else(|| ip.to_string()))
            .collect()
    }
}

/// A peer's node name, if it says one in time. Its answer is untrusted: bounded and checked.
async fn fetch(client: &reqwest::Client, addr: SocketAddr) -> Option<String> {
    let mut response = client
        .get(format!("http://{addr}{IDENTITY_PATH}"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return None;
        }
    }
    let identity: Identity = serde_json::from_slice(&body).ok()?;
    valid_name(&identity.node).then_some(identity.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("node-a.example"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("<script>"));
        assert!(!valid_name(&"a".repeat(254)));
    }
}
