//! The Kubernetes objects behind a rule, read from what kube-proxy writes: the comments of its
//! iptables mode (`pkg/proxy/iptables/proxier.go`) and the chain names of its nftables mode
//! (`pkg/proxy/nftables/proxier.go`, table `kube-proxy`). Each known shape is one entry of
//! [`COMMENT_SHAPES`]; a comment of another shape gives no fact (the row still shows it).

use std::net::{IpAddr, SocketAddr};

/// A Service port as kube-proxy names it: `namespace/name` and, when the port is named,
/// `:port`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub port: Option<String>,
}

impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        match &self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub(crate) enum Fact {
    /// The rule handles traffic of this Service.
    Service { service: ServicePort },
    /// The rule sends the packet to this endpoint of the Service.
    Endpoint { service: ServicePort, endpoint: SocketAddr },
    /// The Service has no endpoints (kube-proxy rejects), or none on this node for its
    /// traffic policy (`local`; kube-proxy drops).
    NoEndpoints { service: ServicePort, local: bool },
}

/// What a comment of one shape says.
#[derive(Debug, Clone, Copy)]
enum Says {
    Service,
    Endpoint,
    NoEndpoints,
    NoLocalEndpoints,
}

/// kube-proxy's iptables-mode comments, as `(before, after, what)`: the Service port name
/// sits between `before` and `after`. For `Endpoint`, `after` is followed by the endpoint.
const COMMENT_SHAPES: &[(&str, &str, Says)] = &[
    ("", " cluster IP", Says::Service),
    ("", " external IP", Says::Service),
    ("", " loadbalancer IP", Says::Service),
    ("", " health check node port", Says::Service),
    ("", " has no endpoints", Says::NoEndpoints),
    ("", " has no local endpoints", Says::NoLocalEndpoints),
    ("masquerade traffic for ", " external destinations", Says::Service),
    ("pod traffic for ", " external destinations", Says::Service),
    ("masquerade LOCAL traffic for ", " external destinations", Says::Service),
    ("route LOCAL traffic for ", " external destinations", Says::Service),
    (
        "other traffic to ",
        " will be dropped by KUBE-PROXY-FIREWALL",
        Says::Service,
    ),
    ("", " -> ", Says::Endpoint),
];

/// The facts a rule's comment and chain give.
pub(crate) fn facts(table: &str, chain: &str, comment: Option<&str>) -> Vec<Fact> {
    let mut out = Vec::new();
    if let Some(c) = comment {
        out.extend(from_comment(chain, c));
    }
    if table == "kube-proxy" {
        out.extend(from_nft_chain(chain));
    }
    out
}

fn from_comment(chain: &str, c: &str) -> Option<Fact> {
    for (before, after, says) in COMMENT_SHAPES {
        let Some(rest) = c.strip_prefix(before) else { continue };
        let (svc, tail) = match says {
            Says::Endpoint => match rest.split_once(after) {
                Some(parts) => parts,
                None => continue,
            },
            _ => match rest.strip_suffix(after) {
                Some(svc) => (svc, ""),
                None => continue,
            },
        };
        // "%s traffic not accepted by %s" and the like carry a chain name after the Service;
        // only shapes that end where the table says are read.
        let Some(service) = service_port(svc) else { continue };
        return Some(match says {
            Says::Service => Fact::Service { service },
            Says::Endpoint => Fact::Endpoint {
                service,
                endpoint: tail.parse().ok()?,
            },
            Says::NoEndpoints => Fact::NoEndpoints { service, local: false },
            Says::NoLocalEndpoints => Fact::NoEndpoints { service, local: true },
        });
    }
    // A bare Service port name: kube-proxy's comment on the rules of its KUBE-SEP-… and
    // KUBE-NODEPORTS chains. Elsewhere a bare `a/b` could be anyone's.
    if chain.starts_with("KUBE-") {
        return service_port(c).map(|service| Fact::Service { service });
    }
    None
}

/// `namespace/name[:port]`, each part as Kubernetes allows it (lower-case letters, digits and
/// `-`; names up to 63 characters, port names up to 15).
fn service_port(s: &str) -> Option<ServicePort> {
    let (namespace, rest) = s.split_once('/')?;
    let (name, port) = match rest.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    let label = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label(namespace, 63) || !label(name, 63) || !port.is_none_or(|p| label(p, 15)) {
        return None;
    }
    Some(ServicePort {
        namespace: namespace.to_string(),
        name: name.to_string(),
        port: port.map(str::to_string),
    })
}

/// kube-proxy's nftables mode names its chains `PREFIX-HASH-namespace/name/protocol/port`,
/// and endpoint chains `endpoint-HASH-namespace/name/protocol/port__IP/PORT` (an IPv6
/// address with `.` for `:`). A name it had to truncate (`...`) is not read.
fn from_nft_chain(chain: &str) -> Option<Fact> {
    let (prefix, rest) = chain.split_once('-')?;
    if !matches!(prefix, "service" | "local" | "external" | "firewall" | "endpoint") || chain.ends_with("...") {
        return None;
    }
    let (hash, rest) = rest.split_once('-')?;
    if hash.len() != 8 {
        return None;
    }
    let (svc, endpoint) = match rest.split_once("__") {
        Some((s, e)) => (s, Some(e)),
        None => (rest, None),
    };
    let mut parts = svc.split('/');
    let (namespace, name, _proto, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let port = if port.is_empty() {
        String::new()
    } else {
        format!(":{port}")
    };
    let service = service_port(&format!("{namespace}/{name}{port}"))?;
    match (prefix, endpoint) {
        ("endpoint", Some(e)) => {
            let (ip, port) = e.rsplit_once('/')?;
            let ip: IpAddr = ip.parse().or_else(|_| ip.replace('.', ":").parse()).ok()?;
            Some(Fact::Endpoint {
                service,
                endpoint: SocketAddr::new(ip, port.parse().ok()?),
            })
        }
        ("endpoint", None) => None,
        _ => Some(Fact::Service { service }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(s: &str) -> ServicePort {
        service_port(s).unwrap()
    }

    #[test]
    fn iptables_mode_comments() {
        let f = |c| facts("nat", "KUBE-SERVICES", Some(c));
        assert_eq!(
            f("shop/cart:http cluster IP"),
            vec![Fact::Service {
                service: svc("shop/cart:http")
            }]
        );
        assert_eq!(
            f("shop/cart:http -> 10.1.2.3:80"),
            vec![Fact::Endpoint {
                service: svc("shop/cart:http"),
                endpoint: "10.1.2.3:80".parse().unwrap()
            }]
        );
        assert_eq!(
            f("shop/cart -> [fd00::5]:8080"),
            vec![Fact::Endpoint {
                service: svc("shop/cart"),
                endpoint: "[fd00::5]:8080".parse().unwrap()
            }]
        );
        assert_eq!(
            f("shop/cart:http has no endpoints"),
            vec![Fact::NoEndpoints {
                service: svc("shop/cart:http"),
                local: false
            }]
        );
        assert_eq!(
            f("shop/cart:http has no local endpoints"),
            vec![Fact::NoEndpoints {
                service: svc("shop/cart:http"),
                local: true
            }]
        );
        assert_eq!(
            f("masquerade traffic for shop/cart:http external destinations"),
            vec![Fact::Service {
                service: svc("shop/cart:http")
            }]
        );
        assert_eq!(
            f("shop/cart:http"),
            vec![Fact::Service {
                service: svc("shop/cart:http")
            }]
        );
    }

    #[test]
    fn comments_of_other_shapes_give_nothing() {
        for c in [
            "kubernetes service portals",
            "kubernetes service traffic requiring SNAT",
            "Shop/Cart cluster IP",
            "shop/cart:http -> not-an-address",
            "shop/cart:a-port-name-far-too-long cluster IP",
            "\"/><script> cluster IP",
            "",
        ] {
            assert_eq!(facts("nat", "KUBE-SERVICES", Some(c)), vec![], "{c}");
        }
        // A bare name outside kube-proxy's chains is not taken for a Service.
        assert_eq!(facts("filter", "INPUT", Some("shop/cart")), vec![]);
    }

    #[test]
    fn nftables_mode_chain_names() {
        assert_eq!(
            facts("kube-proxy", "service-ULMVA6XW-ns1/svc1/tcp/p80", None),
            vec![Fact::Service {
                service: svc("ns1/svc1:p80")
            }]
        );
        assert_eq!(
            facts("kube-proxy", "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80", None),
            vec![Fact::Endpoint {
                service: svc("ns1/svc1:p80"),
                endpoint: "10.180.0.1:80".parse().unwrap()
            }]
        );
        assert_eq!(
            facts("kube-proxy", "endpoint-5OJB2KTY-ns1/svc1/tcp/__fd00.10..1/80", None),
            vec![Fact::Endpoint {
                service: svc("ns1/svc1"),
                endpoint: "[fd00:10::1]:80".parse().unwrap()
            }]
        );
        assert_eq!(facts("kube-proxy", "services", None), vec![]);
        assert_eq!(facts("kube-proxy", "service-ULMVA6XW-ns1/svc1/tcp/p8...", None), vec![]);
        // The same name in someone else's table is theirs.
        assert_eq!(facts("filter", "service-ULMVA6XW-ns1/svc1/tcp/p80", None), vec![]);
    }
}
