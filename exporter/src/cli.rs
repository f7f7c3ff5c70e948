//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use probe_common::Mechanism;

use crate::pods::PodName;
use crate::probes::dns::DnsQuery;

#[derive(Debug, Parser)]
#[command(
    name = "tracepkt",
    version,
    about = "Follow probe packets through the Linux network stack: interfaces, namespaces, netfilter verdicts and drops."
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Attach only by this mechanism (repeat for several): tp_btf, tracepoint or kprobe.
    /// Hooks with no allowed mechanism stay unattached. Overrides `mechanisms:` in the config.
    #[arg(long = "mechanism", global = true, value_name = "MECHANISM", value_parser = mechanism)]
    pub mechanisms: Vec<Mechanism>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send probes to one target and print every hop they take.
    Trace(TraceArgs),
    /// Probe the configured targets on a schedule and export what they see.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// IP address or host name to probe (not with --dns).
    #[arg(required_unless_present = "dns", conflicts_with = "dns")]
    pub target: Option<String>,
    /// Use IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 only.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Number of probes to send.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub count: u16,
    /// Seconds to wait for each reply.
    #[arg(short = 'W', long, default_value_t = 1.0, value_parser = positive_secs)]
    pub timeout: f64,
    /// Seconds between probes.
    #[arg(short, long, default_value_t = 1.0, value_parser = non_negative_secs)]
    pub interval: f64,
    /// One JSON object per hop per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Probe with a TCP connection to this port instead of ICMP echo.
    #[arg(long, value_name = "PORT", conflicts_with = "udp", value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp: Option<u16>,
    /// Probe with a UDP datagram to this port instead of ICMP echo.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp: Option<u16>,
    /// ICMP: the probe's IP packet length in bytes (from the smallest probe, 60 over IPv4 and
    /// 80 over IPv6, to 65535), its payload padded with zeros.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["tcp", "udp"], value_parser = crate::config::parse_probe_size)]
    pub size: Option<u16>,
    /// ICMP: set don't-fragment, and send at the size asked even past a path MTU the kernel
    /// has learned (a probe larger than the outgoing interface's MTU is refused at once).
    #[arg(long, conflicts_with_all = ["tcp", "udp"])]
    pub df: bool,
    /// Probe with a DNS query instead, NAME[/TYPE] (type A unless given), and check its
    /// answer: to --server, or to the resolver of the namespace the probe starts in.
    #[arg(long, value_name = "NAME[/TYPE]", conflicts_with_all = ["tcp", "udp"], value_parser = dns_query)]
    pub dns: Option<DnsQuery>,
    /// The DNS server for --dns: IP or IP:PORT.
    #[arg(long, value_name = "ADDR", requires = "dns", value_parser = crate::config::parse_dns_server)]
    pub server: Option<std::net::SocketAddr>,
    /// Start the probes in this network namespace: a name under /run/netns or an absolute
    /// path (/proc/PID/ns/net).
    #[arg(long, value_name = "NETNS", conflicts_with = "from_pod", value_parser = crate::config::netns_path)]
    pub from: Option<PathBuf>,
    /// Start the probes in the network namespace of this pod on this node: NAMESPACE/NAME,
    /// found through its processes' cgroups and the kubelet's /var/log/pods.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = pod_name)]
    pub from_pod: Option<PodName>,
    /// Also send each journey as an OpenTelemetry trace to this OTLP collector
    /// (http://HOST:PORT) and print its trace id.
    #[arg(long, value_name = "ENDPOINT", value_parser = crate::config::check_otlp_endpoint)]
    pub otlp: Option<String>,
    /// The transport for --otlp.
    #[arg(long, value_name = "PROTOCOL", requires = "otlp", default_value = "grpc",
          value_parser = ["grpc", "http/protobuf"])]
    pub otlp_protocol: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML).
    #[arg(short, long, default_value = "/etc/tracepkt/config.yaml", env = "TRACEPKT_CONFIG")]
    pub config: PathBuf,
    /// TLS and basic auth for the HTTP endpoints: a web configuration file in the format of
    /// the Prometheus exporters (tls_server_config, basic_auth_users).
    #[arg(long, value_name = "FILE", alias = "web.config.file", env = "TRACEPKT_WEB_CONFIG")]
    pub web_config: Option<PathBuf>,
    /// Serve on this address instead of the one `listen:` names, at `listen:`'s port: for a
    /// pod that binds only to its node's own address (the downward API's status.hostIP).
    #[arg(long, value_name = "IP", env = "TRACEPKT_LISTEN_ADDRESS")]
    pub listen_address: Option<std::net::IpAddr>,
}

fn dns_query(s: &str) -> Result<DnsQuery, String> {
    s.parse()
}

fn pod_name(s: &str) -> Result<PodName, String> {
    s.parse()
}

fn mechanism(s: &str) -> Result<Mechanism, String> {
    crate::config::parse_mechanism(s).map_err(|names| format!("`{s}` is not a mechanism ({names})"))
}

fn secs(s: &str, min_exclusive: bool) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 || (min_exclusive && v == 0.0) || v > 3600.0 {
        return Err(format!(
            "`{s}` is out of range (0{}..=3600 seconds)",
            if min_exclusive { " exclusive" } else { "" }
        ));
    }
    Ok(v)
}

fn positive_secs(s: &str) -> Result<f64, String> {
    secs(s, true)
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    secs(s, false)
}
