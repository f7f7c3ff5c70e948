use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use probe_common::Mechanism;

use super::fields::{MECHANISM_NAMES, check_label_name, parse_address};
use super::locate::{Seg, locate, locate_nearest, path_string};
use super::*;
use crate::probes::dns::AnswerExpect;

const FILE: &str = "conf/tracepkt.yaml";

/// The lines joined: line N of the document is `lines[N - 1]`.
fn yaml(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn parse(lines: &[&str]) -> Config {
    let text = yaml(lines);
    match Config::parse(&text, FILE) {
        Ok(config) => config,
        Err(e) => panic!("unexpected error: {e}\n{text}"),
    }
}

fn assert_contains(message: &str, part: &str) {
    assert!(message.contains(part), "{message:?} does not contain {part:?}");
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Bad configurations: the lines of the file; where the error points, as it prints it
/// (`line:column: path`, or `line:column` for the document itself); and what it says.
const ERRORS: &[(&[&str], &str, &str)] = &[
    // Probe kinds and their keys.
    (
        &["targets:", "  - {address: 198.18.0.1, protocol: tcp}"],
        "2:37: targets[0].protocol",
        "needs a port",
    ),
    (
        &["targets:", "  - {address: 198.18.0.1, port: 80}"],
        "2:33: targets[0].port",
        "an ICMP target has no port",
    ),
    (
        &[
            "targets:",
            "  - {address: 198.18.0.1, protocol: tcp, port: 1, payload: x}",
        ],
        "2:60: targets[0].payload",
        "only UDP targets",
    ),
    (
        &["targets:", "  - {address: 198.18.0.1, size: 59}"],
        "2:33: targets[0].size",
        "size 59 is out of range",
    ),
    (
        &["targets:", "  - {address: 198.18.0.1, size: 65536}"],
        "2:33: targets[0].size",
        "to 65535",
    ),
    (
        &["targets:", "  - {address: 198.18.0.1, size: [1400, 1400]}"],
        "2:33: targets[0].size",
        "size 1400 is listed twice",
    ),
    (
        &["targets:", "  - {address: fd00::1, size: 60}"],
        "2:30: targets[0].size",
        "below the smallest IPv6 probe, 80",
    ),
    (
        &[
            "targets:",
            "  - {address: 198.18.0.1, protocol: tcp, port: 1, size: 1500}",
        ],
        "2:57: targets[0].size",
        "for ICMP targets only",
    ),
    (
        &[
            "targets:",
            "  - {address: 198.18.0.1, protocol: udp, port: 1, dont_fragment: true}",
        ],
        "2:66: targets[0].dont_fragment",
        "for ICMP targets only",
    ),
    (
        &["targets:", "  - {protocol: dns, query: a.example, address: 1.2.3.4}"],
        "2:48: targets[0].address",
        "a DNS target has no address",
    ),
    (
        &["targets:", "  - {protocol: dns}"],
        "2:16: targets[0].protocol",
        "needs query: NAME[/TYPE]",
    ),
    (
        &["targets:", "  - {protocol: dns, query: a.example/BOGUS}"],
        "2:28: targets[0].query",
        "not a DNS record type",
    ),
    (
        &["targets:", "  - {protocol: dns, query: a.example, server: dns.example}"],
        "2:47: targets[0].server",
        "is not an IP address or IP:PORT",
    ),
    (
        &["targets:", "  - {address: 1.2.3.4, query: a.example}"],
        "2:31: targets[0].query",
        "only DNS targets",
    ),
    (
        &["targets:", "  - {address: 1.2.3.4, expect: {answer: any}}"],
        "2:41: targets[0].expect.answer",
        "only DNS targets have an answer",
    ),
    (
        &[
            "targets:",
            "  - {protocol: dns, query: a.example, expect: {answer: yes}}",
        ],
        "2:47: targets[0].expect",
        "neither `any` nor a list",
    ),
    (
        &["targets:", "  - {name: nothing}"],
        "2:5: targets[0]",
        "a target needs address:",
    ),
    (
        &[
            "targets:",
            "  - address: 127.0.0.1",
            "  - name: nowhere",
            "    count: 2",
        ],
        "3:5: targets[1]",
        "a target needs address:",
    ),
    // Where a probe starts.
    (
        &["targets:", "  - {address: 198.18.0.1, from: {netns: a/b}}"],
        "2:41: targets[0].from.netns",
        "neither a namespace name",
    ),
    (
        &["targets:", "  - {address: 198.18.0.1, from: {pod: web}}"],
        "2:39: targets[0].from.pod",
        "\"web\" is not namespace/name",
    ),
    (
        &["targets:", "  - {address: 198.18.0.1, from: {pod: a/b, netns: c}}"],
        "2:33: targets[0].from",
        "netns: or pod:, not both",
    ),
    (
        &["targets:", "  - address: ::1", "    from: {netns: ../etc}"],
        "3:19: targets[0].from.netns",
        "\"../etc\" is neither a namespace name (no '/') nor an absolute path",
    ),
    (
        &["targets:", "  - address: ::1", "    from: {netns: a/b}"],
        "3:19: targets[0].from.netns",
        "\"a/b\" is neither a namespace name",
    ),
    (
        &["targets:", "  - address: ::1", "    from: {netns: ..}"],
        "3:19: targets[0].from.netns",
        "\"..\" is neither a namespace name",
    ),
    (
        &["targets:", "  - address: ::1", "    from: {netns: ''}"],
        "3:19: targets[0].from.netns",
        "the namespace must not be empty",
    ),
    (
        &["targets:", "  - address: ::1", "    from: {netns: \"a\\0b\"}"],
        "3:19: targets[0].from.netns",
        "\"a\\0b\" contains a NUL byte",
    ),
    // Top-level settings.
    (
        &["targets: [{address: 127.0.0.1}]", "attach: sometimes"],
        "2:9: attach",
        "unknown variant `sometimes`, expected `in-flight` or `always`",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "mechanisms: [tracepoint, fentry]"],
        "2:26: mechanisms[1]",
        "unknown attach mechanism \"fentry\"",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "rtt_buckets: [0.01, 0.001]"],
        "2:14: rtt_buckets",
        "RTT bucket bounds must increase: 0.001 comes after 0.01",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "rtt_buckets: [-1]"],
        "2:14: rtt_buckets",
        "RTT bucket -1 is not a positive number of seconds",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "ring_buffer_bytes: 1000"],
        "2:20: ring_buffer_bytes",
        "ring_buffer_bytes 1000 is not a power of two",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "ring_buffer_bytes: 2048"],
        "2:20: ring_buffer_bytes",
        "ring_buffer_bytes 2048 is not a power of two",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "ring_buffer_bytes: 536870912"],
        "2:20: ring_buffer_bytes",
        "ring_buffer_bytes 536870912 is not a power of two",
    ),
    (
        &[
            "targets: [{address: 127.0.0.1}]",
            "attach: in-flight",
            "cross_node: {enabled: true}",
        ],
        "2:9: attach",
        "cross_node needs the kernel programs attached all the time",
    ),
    (
        &[
            "targets: [{address: 127.0.0.1}]",
            "cross_node: {enabled: true, budget: 0}",
        ],
        "2:37: cross_node.budget",
        "budget 0 is out of range",
    ),
    (
        &[
            "targets: [{address: 127.0.0.1}]",
            "cross_node: {enabled: true, budget: 1000001}",
        ],
        "2:37: cross_node.budget",
        "budget 1000001 is out of range",
    ),
    (
        &[
            "targets: [{address: 127.0.0.1}]",
            "cross_node: {enabled: true, budget: -3}",
        ],
        "2:37: cross_node.budget",
        "budget -3 is out of range",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "cross_node: {enabeld: true}"],
        "2:14: cross_node",
        "unknown field `enabeld`",
    ),
    (
        &["listen: localhost:9977", "targets: [{address: 127.0.0.1}]"],
        "1:9: listen",
        "invalid listen address \"localhost:9977\": expected IP:PORT",
    ),
    (
        &["listen: ::1", "targets: [{address: 127.0.0.1}]"],
        "1:9: listen",
        "invalid listen address \"::1\"",
    ),
    // Unknown keys, and a file that is no mapping of settings.
    (
        &["interval: 10s", "targets:", "  - address: 127.0.0.1", "intervall: 5s"],
        "4:1",
        "unknown field `intervall`, expected one of `listen`, `interval`",
    ),
    (
        &[
            "targets:",
            "  - address: 127.0.0.1",
            "  - address: ::1",
            "    name: six",
            "    lables: {a: b}",
        ],
        "5:5: targets[1]",
        "unknown field `lables`",
    ),
    (
        &[
            "targets: [{address: 127.0.0.1}]",
            "otlp:",
            "  endpoint: http://localhost:4317",
            "  headers: {}",
        ],
        "4:3: otlp",
        "unknown field `headers`, expected one of `endpoint`, `protocol`, `timeout`, `sample_ratio`, `service_name`, `trace_url`",
    ),
    (
        &["- address: ::1"],
        "1:1",
        "invalid type: sequence, expected a mapping of tracepkt settings",
    ),
    (
        &["interval: 10s", "targets: []"],
        "2:10: targets",
        "the list of targets is empty",
    ),
    (
        &["targets:", "interval: 10s"],
        "1:9: targets",
        "the list of targets is empty",
    ),
    (&["listen: 127.0.0.1:9000"], "1:1", "missing field `targets`"),
    // Durations, and timeout against interval.
    (
        &[
            "timeout: 1s",
            "targets:",
            "  - address: 127.0.0.1",
            "  - address: 127.0.0.2",
            "    timeout: 10 parsecs",
        ],
        "5:14: targets[1].timeout",
        "invalid duration \"10 parsecs\": unknown time unit \"parsecs\"",
    ),
    (
        &["interval: 10", "targets: [{address: 127.0.0.1}]"],
        "1:11: interval",
        "invalid duration \"10\": time unit needed, for example 10sec or 10ms",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "timeout: [2s]"],
        "2:10: timeout",
        "invalid type: sequence, expected a duration such as 2s",
    ),
    (
        &[
            "targets:",
            "  - address: ::1",
            "    interval: 50ms",
            "    timeout: 10ms",
        ],
        "3:15: targets[0].interval",
        "interval \"50ms\" is too short: the minimum is 100ms",
    ),
    (
        &["timeout: 0s", "targets: [{address: 127.0.0.1}]"],
        "1:10: timeout",
        "timeout \"0s\" must be greater than zero",
    ),
    (
        &[
            "targets:",
            "  - address: 127.0.0.1",
            "  - address: ::1",
            "    interval: 1s",
            "    timeout: 3s",
        ],
        "5:14: targets[1].timeout",
        "timeout 3s is longer than the interval 1s (the target's own interval): a probe's journey must end before the next probe of the same target",
    ),
    (
        &["interval: 1s", "targets:", "  - address: ::1", "    timeout: 1500ms"],
        "4:14: targets[0].timeout",
        "timeout 1s 500ms is longer than the interval 1s (the top-level interval)",
    ),
    (
        &["targets:", "  - address: ::1", "    timeout: 11s"],
        "3:14: targets[0].timeout",
        "(the default interval)",
    ),
    (
        &["targets:", "  - address: ::1", "    interval: 1s"],
        "3:15: targets[0].interval",
        "interval 1s is shorter than the timeout 2s (the default timeout)",
    ),
    (
        &[
            "interval: 5s",
            "timeout: 6s",
            "targets:",
            "  - address: ::1",
            "    interval: 10s",
            "  - address: 127.0.0.1",
        ],
        "2:10: timeout",
        "timeout 6s is longer than the interval 5s (the top-level interval), which targets[1] (\"127.0.0.1\") uses",
    ),
    (
        &["interval: 1s", "targets:", "  - address: ::1"],
        "1:11: interval",
        "interval 1s is shorter than the timeout 2s (the default timeout)",
    ),
    // Addresses and names.
    (
        &["targets:", "  - address: 10.0.0.1", "  - address: 10.0.0.300"],
        "3:14: targets[1].address",
        "invalid address \"10.0.0.300\": not a valid IPv4 address",
    ),
    (
        &["targets:", "  - name: x", "    address: bad host!"],
        "3:14: targets[0].address",
        "invalid address \"bad host!\": not an IP address nor a valid host name: ' ' is not allowed",
    ),
    (
        &["targets:", "  - address: 2001:db8::g"],
        "2:14: targets[0].address",
        "not a valid IPv6 address",
    ),
    (
        &["targets:", "  - address: '[::1]'"],
        "2:14: targets[0].address",
        "write IPv6 addresses without brackets",
    ),
    (
        &[
            "targets:",
            "  - address: 127.0.0.1",
            "    name: lo",
            "  - address: 127.0.0.2",
            "  - address: ::1",
            "    count: 2",
            "    name: lo",
        ],
        "7:11: targets[2].name",
        "duplicate target name \"lo\", already used by targets[0]",
    ),
    (
        &[
            "targets:",
            "  - address: localhost",
            "  - address: localhost",
            "    ip_version: 6",
        ],
        "3:14: targets[1].address",
        "duplicate target name \"localhost\", already used by targets[0] (a target without a name is named after its address",
    ),
    (
        &["targets: [{address: '::1', name: a}, {name: a, address: 127.0.0.1}]"],
        "1:45: targets[1].name",
        "already used by targets[0]",
    ),
    (
        &[
            "targets:",
            "  - address: localhost",
            "    ip_version: 6",
            "  - ip_version: 6",
            "    address: 127.0.0.1",
        ],
        "4:17: targets[1].ip_version",
        "ip_version 6 does not match the address \"127.0.0.1\", which is an IPv4 address",
    ),
    (
        &["targets:", "  - address: ::1", "    ip_version: 4"],
        "3:17: targets[0].ip_version",
        "which is an IPv6 address",
    ),
    (
        &["targets:", "  - address: ::1", "    ip_version: ipv6"],
        "3:17: targets[0].ip_version",
        "unknown variant `ipv6`, expected one of `any`, `4`, `6`",
    ),
    // Counts.
    (
        &["targets:", "  - address: ::1", "    count: 0"],
        "3:12: targets[0].count",
        "count 0 is out of range: expected 1 to 100",
    ),
    (
        &["targets:", "  - address: ::1", "    count: 101"],
        "3:12: targets[0].count",
        "count 101 is out of range: expected 1 to 100",
    ),
    (
        &["targets:", "  - address: ::1", "    count: 4294967297"],
        "3:12: targets[0].count",
        "count 4294967297 is out of range: expected 1 to 100",
    ),
    (
        &["targets:", "  - address: ::1", "    count: -1"],
        "3:12: targets[0].count",
        "invalid type: integer `-1`, expected a whole number from 1 to 100",
    ),
    (
        &["targets:", "  - address: ::1", "    count: many"],
        "3:12: targets[0].count",
        "invalid type: string \"many\", expected a whole number from 1 to 100",
    ),
    (
        &["targets:", "  - address: ::1", "    count: 1.5"],
        "3:12: targets[0].count",
        "invalid type: floating point `1.5`, expected a whole number from 1 to 100",
    ),
    // Labels.
    (
        &[
            "targets:",
            "  - address: ::1",
            "    labels:",
            "      site: paris",
            "      data-center: x",
        ],
        "5:7: targets[0].labels",
        "invalid label name \"data-center\": label names must match [a-zA-Z_][a-zA-Z0-9_]*",
    ),
    (
        &["targets:", "  - address: ::1", "    labels: {9lives: x}"],
        "3:14: targets[0].labels",
        "invalid label name \"9lives\"",
    ),
    (
        &["targets:", "  - address: ::1", "    labels:", "      interface: eth0"],
        "4:7: targets[0].labels",
        "invalid label name \"interface\": tracepkt uses this label itself",
    ),
    (
        &["targets:", "  - address: ::1", "    labels:", "      __meta: x"],
        "4:7: targets[0].labels",
        "invalid label name \"__meta\": names starting with \"__\" are reserved",
    ),
    (
        &[
            "targets:",
            "  - address: ::1",
            "    labels:",
            "      a: x",
            "      a: y",
        ],
        "5:7: targets[0].labels",
        "label \"a\" is given twice",
    ),
    (
        &["targets:", "  - address: ::1", "    labels:", "      a: ''"],
        "4:10: targets[0].labels.a",
        "label \"a\" has an empty value",
    ),
    // OTLP.
    (
        &["targets: [{address: 127.0.0.1}]", "otlp:", "  endpoint: localhost:4317"],
        "3:13: otlp.endpoint",
        "invalid OTLP endpoint \"localhost:4317\": it must start with http://",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "otlp:", "  endpoint: http://"],
        "3:13: otlp.endpoint",
        "no host after the scheme",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "otlp:", "  endpoint: https://c:4317"],
        "3:13: otlp.endpoint",
        "plain-text OTLP only",
    ),
    (
        &["targets: [{address: 127.0.0.1}]", "otlp:", "  sample_ratio: 1.5"],
        "3:17: otlp.sample_ratio",
        "sample_ratio 1.5 is not between 0 and 1",
    ),
    (
        &[
            "targets: [{address: 127.0.0.1}]",
            "otlp:",
            "  endpoint: http://localhost:4318",
            "  protocol: http/json",
        ],
        "4:13: otlp.protocol",
        "unknown variant `http/json`, expected `grpc` or `http/protobuf`",
    ),
];

/// Each bad configuration fails with `FILE:line:column: path: ` and a message that says what
/// is wrong, its position given once.
#[test]
fn errors_point_at_the_node_to_blame() {
    for &(lines, at, says) in ERRORS {
        let text = yaml(lines);
        let e = match Config::parse(&text, FILE) {
            Ok(config) => panic!("expected an error, got {config:?}\n{text}"),
            Err(e) => e,
        };
        let message = e.to_string();
        let (position, path) = at.split_once(": ").unwrap_or((at, ""));
        let (line, column) = position.split_once(':').expect("line:column");
        let start = if path.is_empty() {
            format!("{FILE}:{position}: ")
        } else {
            format!("{FILE}:{position}: {path}: ")
        };
        assert!(message.starts_with(&start), "expected {start:?}..., got {message:?}");
        assert_eq!(e.line(), line.parse().ok(), "{message}");
        assert_eq!(e.column(), column.parse().ok(), "{message}");
        assert!(!message.contains(" at line "), "position given twice: {message:?}");
        assert_contains(&message, says);
    }
}

fn icmp_target(name: &str, address: &str, interval: Duration, timeout: Duration) -> Target {
    Target {
        name: name.into(),
        address: address.into(),
        ip_version: IpVersion::Any,
        interval,
        timeout,
        count: 1,
        labels: BTreeMap::new(),
        probe: Probe::Icmp,
        sizes: vec![],
        dont_fragment: false,
        from: None,
        expect: None,
    }
}

#[test]
fn full_config_with_overrides_applied() {
    let config = parse(&[
        "listen: '[::1]:9000'",
        "interval: 30s",
        "timeout: 3s",
        "targets:",
        "  - address: 192.0.2.1",
        "  - address: gw.example.net",
        "    name: gateway",
        "    ip_version: 6",
        "    interval: 1m",
        "    timeout: 500ms",
        "    count: 5",
        "    labels:",
        "      site: paris",
        "      _rack: \"12\"",
        "      tier: 1",
        "  - address: 2001:db8::1",
        "    ip_version: any",
        "    interval: 5s",
        "otlp:",
        "  endpoint: http://collector.example.net:4318",
        "  protocol: http/protobuf",
        "  timeout: 3s",
        "  sample_ratio: 0.25",
        "  service_name: probes",
    ]);
    let expected = Config {
        listen: "[::1]:9000".parse().unwrap(),
        interval: secs(30),
        timeout: secs(3),
        targets: vec![
            icmp_target("192.0.2.1", "192.0.2.1", secs(30), secs(3)),
            Target {
                ip_version: IpVersion::V6,
                count: 5,
                labels: [("site", "paris"), ("_rack", "12"), ("tier", "1")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..icmp_target("gateway", "gw.example.net", secs(60), ms(500))
            },
            icmp_target("2001:db8::1", "2001:db8::1", secs(5), secs(3)),
        ],
        otlp: Some(Otlp {
            endpoint: Some("http://collector.example.net:4318".into()),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            timeout: Some(secs(3)),
            service_name: Some("probes".into()),
            sample_ratio: 0.25,
            trace_url: None,
        }),
        attach: AttachMode::InFlight,
        rtt_buckets: vec![],
        mechanisms: vec![],
        ring_buffer_bytes: None,
        cross_node: None,
        discovery: vec![],
    };
    assert_eq!(config, expected);
}

#[test]
fn defaults() {
    let config = parse(&["targets:", "  - address: 127.0.0.1"]);
    assert_eq!(
        config,
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            interval: secs(10),
            timeout: secs(2),
            targets: vec![icmp_target("127.0.0.1", "127.0.0.1", secs(10), secs(2))],
            otlp: None,
            attach: AttachMode::InFlight,
            rtt_buckets: vec![],
            mechanisms: vec![],
            ring_buffer_bytes: None,
            cross_node: None,
            discovery: vec![],
        }
    );
    assert_eq!(default_listen().to_string(), format!("127.0.0.1:{DEFAULT_PORT}"));
    // 9100-9999 is the Prometheus exporter range, where no port is free any more.
    assert!(!(9100..=9999).contains(&DEFAULT_PORT));
}

#[test]
fn probe_kinds() {
    let config = parse(&[
        "targets:",
        "  - {address: 198.18.0.1, protocol: tcp, port: 443, from: {netns: client}}",
        "  - {address: 198.18.0.1, protocol: udp, port: 53, payload: hi, from: {netns: /proc/1/ns/net}}",
        "  - address: 198.18.0.1",
        "    protocol: tcp",
        "    port: 80",
        "    expect: {through: [backend, eth0], not_through: [other], no_drop: true}",
        "  - {address: 198.18.0.2, from: {pod: kube-system/coredns-5d78c9869d-abcde}}",
    ]);
    let t = &config.targets;
    assert_eq!(t[0].name, "198.18.0.1:443/tcp");
    assert_eq!(t[0].probe, Probe::Tcp { port: 443 });
    assert_eq!(t[0].from, Some(Origin::Netns("/run/netns/client".into())));
    assert_eq!(t[1].name, "198.18.0.1:53/udp");
    assert_eq!(
        t[1].probe,
        Probe::Udp {
            port: 53,
            payload: Some(b"hi".to_vec())
        }
    );
    assert_eq!(t[1].from, Some(Origin::Netns("/proc/1/ns/net".into())));
    assert_eq!(
        t[2].expect,
        Some(Expect {
            through: vec!["backend".into(), "eth0".into()],
            not_through: vec!["other".into()],
            no_drop: true,
            answer: None,
        })
    );
    assert_eq!(
        t[3].from,
        Some(Origin::Pod("kube-system/coredns-5d78c9869d-abcde".parse().unwrap()))
    );

    let config = parse(&[
        "targets:",
        "  - {address: 198.18.0.1, size: 1500, dont_fragment: true}",
        "  - {address: 198.18.0.2, size: [1300, 1400, 1500]}",
        "  - {address: fd00::1, size: 80}",
    ]);
    let t = &config.targets;
    assert_eq!((t[0].sizes.as_slice(), t[0].dont_fragment), (&[1500][..], true));
    assert_eq!(
        (t[1].sizes.as_slice(), t[1].dont_fragment),
        (&[1300, 1400, 1500][..], false)
    );
    assert_eq!(t[2].sizes, vec![80]);
}

#[test]
fn dns_targets() {
    let config = parse(&[
        "targets:",
        "  - {protocol: dns, query: web.shop.example/AAAA, server: 198.18.0.53, expect: {answer: ['fd00::1']}}",
        "  - {protocol: dns, query: web.shop.example, expect: {answer: any}}",
        "  - {protocol: dns, query: x.example, server: '198.18.0.53:5353'}",
    ]);
    let t = &config.targets;
    assert_eq!(t[0].name, "dns:web.shop.example/AAAA@198.18.0.53:53");
    assert_eq!(t[0].address, "198.18.0.53:53");
    assert_eq!(
        t[0].probe,
        Probe::Dns {
            query: "web.shop.example/AAAA".parse().unwrap(),
            server: Some("198.18.0.53:53".parse().unwrap())
        }
    );
    assert_eq!(
        t[0].expect.as_ref().unwrap().answer,
        Some(AnswerExpect::Holds(vec!["fd00::1".into()]))
    );
    assert!(!t[0].expect.as_ref().unwrap().has_path());
    assert_eq!(t[1].name, "dns:web.shop.example/A");
    assert_eq!(t[1].address, "resolver");
    assert_eq!(t[1].expect.as_ref().unwrap().answer, Some(AnswerExpect::NonEmpty));
    assert_eq!(t[2].probe.port(), Some(5353));
}

#[test]
fn top_level_settings() {
    let t = "targets: [{address: 127.0.0.1}]";
    let config = parse(&["attach: always", t]);
    assert_eq!(config.attach, AttachMode::Always);
    let config = parse(&["attach: in-flight", t]);
    assert_eq!(config.attach, AttachMode::InFlight);

    let config = parse(&["mechanisms: [tracepoint, kprobe]", t]);
    assert_eq!(config.mechanisms, vec![Mechanism::Tracepoint, Mechanism::Kprobe]);

    let config = parse(&["rtt_buckets: [0.0005, 0.001, 2]", t]);
    assert_eq!(config.rtt_buckets, vec![0.0005, 0.001, 2.0]);
    let config = parse(&[t]);
    assert!(config.rtt_buckets.is_empty());

    let config = parse(&["ring_buffer_bytes: 4096", t]);
    assert_eq!(config.ring_buffer_bytes, Some(4096));
}

#[test]
fn cross_node() {
    let t = "targets: [{address: 127.0.0.1}]";
    let config = parse(&[t]);
    assert_eq!((config.cross_node, config.attach), (None, AttachMode::InFlight));
    let config = parse(&[t, "cross_node: {enabled: false, budget: 5}"]);
    assert_eq!(config.cross_node, None);
    let config = parse(&[t, "cross_node: {enabled: true}"]);
    assert_eq!(config.cross_node, Some(CrossNode::default()));
    assert_eq!(
        config.attach,
        AttachMode::Always,
        "another node's probe may come at any time"
    );
    let config = parse(&[
        t,
        "attach: always",
        "cross_node: {enabled: true, budget: 50, tunnels: false}",
    ]);
    assert_eq!(
        config.cross_node,
        Some(CrossNode {
            budget: 50,
            tunnels: false
        })
    );
    let config = parse(&["targets: []", "cross_node: {enabled: true}"]);
    assert!(config.targets.is_empty(), "a node may only follow other nodes' probes");
}

#[test]
fn limits_are_inclusive() {
    // The minimum interval itself is fine.
    let config = parse(&["interval: 100ms", "timeout: 100ms", "targets: [{address: 127.0.0.1}]"]);
    assert_eq!(config.targets[0].interval, MIN_INTERVAL);
    assert_eq!(
        parse(&["targets:", "  - address: ::1", "    count: 100"]).targets[0].count,
        100
    );
    // Fine when every target that inherits both values gets a consistent pair.
    let config = parse(&[
        "interval: 5s",
        "timeout: 6s",
        "targets:",
        "  - address: ::1",
        "    timeout: 1s",
    ]);
    assert_eq!(
        (config.targets[0].interval, config.targets[0].timeout),
        (secs(5), secs(1))
    );
}

#[test]
fn empty_optional_values_mean_defaults() {
    let config = parse(&[
        "targets:",
        "  - address: localhost",
        "    ip_version:",
        "    labels:",
        "otlp:",
    ]);
    assert_eq!(config.targets[0].ip_version, IpVersion::Any);
    assert!(config.targets[0].labels.is_empty());
    assert_eq!(config.otlp, None);
    let config = parse(&[
        "targets: [{address: 127.0.0.1}]",
        "otlp: {endpoint: 'http://[::1]:4317'}",
    ]);
    let otlp = config.otlp.unwrap();
    assert_eq!(otlp.protocol, None);
    assert_eq!(otlp.sample_ratio, 1.0);
}

#[test]
fn address_rules() {
    for good in [
        "127.0.0.1",
        "::1",
        "fe80::1",
        "localhost",
        "example.com.",
        "a-b.c0",
        "1.2.3.example",
        "xn--bcher-kva.example",
        &format!("{}.com", "a".repeat(63)),
    ] {
        assert_eq!(parse_address(good).as_deref(), Ok(good), "{good}");
    }
    for (bad, why) in [
        ("", "must not be empty"),
        ("1.2.3", "not a valid IPv4 address"),
        ("1.2.3.4.5", "not a valid IPv4 address"),
        ("010.0.0.1", "not a valid IPv4 address"),
        ("example..com", "empty label"),
        (".example.com", "empty label"),
        ("-example.com", "starts or ends with '-'"),
        ("example-.com", "starts or ends with '-'"),
        ("under_score.example", "'_' is not allowed"),
        ("host.123", "last label \"123\" is all digits"),
        ("0x7f.1", "last label \"1\" is all digits"),
        ("héllo.example", "'é' is not allowed"),
        (
            &format!("{}.com", "a".repeat(64)),
            "is 64 characters long, the maximum is 63",
        ),
        (
            &format!("{}.com", vec!["a".repeat(60); 5].join(".")),
            "characters long, the maximum is 253",
        ),
    ] {
        match parse_address(bad) {
            Ok(_) => panic!("{bad:?} accepted"),
            Err(message) => assert!(message.contains(why), "{bad:?}: {message:?} lacks {why:?}"),
        }
    }
}

#[test]
fn label_name_rules() {
    for name in RESERVED_LABELS {
        assert!(check_label_name(name).is_err(), "{name}");
    }
    for name in ["site", "_x", "Zone_9", "a"] {
        assert_eq!(check_label_name(name), Ok(()), "{name}");
    }
}

/// `--size`, `--server` and `--mechanism` take what the file takes, with its checks.
#[test]
fn command_line_parsers_share_the_file_checks() {
    assert_eq!(parse_probe_size("1500"), Ok(1500));
    assert_eq!(parse_probe_size("60"), Ok(60));
    for bad in ["59", "65536", "-1"] {
        assert_eq!(
            parse_probe_size(bad),
            Err(format!(
                "size {bad} is out of range: expected an IP packet length from 60 (the smallest probe; 80 over IPv6) to 65535"
            ))
        );
    }
    assert_eq!(
        parse_probe_size("1.5k"),
        Err("size \"1.5k\" is not a whole number of bytes".to_owned())
    );
    assert_eq!(parse_dns_server("198.18.0.53"), Ok("198.18.0.53:53".parse().unwrap()));
    assert_eq!(
        parse_dns_server("[fd00::53]:5353"),
        Ok("[fd00::53]:5353".parse().unwrap())
    );
    assert_eq!(
        parse_dns_server("dns.example"),
        Err("\"dns.example\" is not an IP address or IP:PORT (a DNS server is given by address)".to_owned())
    );
    for m in Mechanism::ALL {
        assert_eq!(parse_mechanism(m.as_str()), Ok(m));
    }
    assert_eq!(parse_mechanism("fentry"), Err(MECHANISM_NAMES));
    // The names the errors list are all there are, in order.
    let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.as_str()).collect();
    let (last, rest) = names.split_last().unwrap();
    assert_eq!(MECHANISM_NAMES, format!("{} or {last}", rest.join(", ")));
}

#[test]
fn empty_file() {
    // Points at the end of the (empty) document.
    for (text, line) in [("", 1), ("# nothing\n", 2), ("\n\n\n", 4)] {
        let e = Config::parse(text, FILE).unwrap_err().to_string();
        assert_eq!(e, format!("{FILE}:{line}:1: missing field `targets`"), "{text:?}");
    }
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let lines = [
        "targets:",
        "  - address: ::1",
        "    name: 'unterminated",
        "interval: 1s",
    ];
    let e = Config::parse(&yaml(&lines), FILE).unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("{FILE}:{}:", e.line().unwrap())),
        "{message}"
    );
    assert!(e.line().unwrap() >= 3, "{message}");
    assert_contains(&message, "found unexpected end of stream");
}

#[test]
fn locate_finds_nodes() {
    let text = yaml(&[
        "# comment",
        "targets:",
        "  - &first",
        "    address: ::1",
        "    name: \"one\"",
        "  - {address: b, name: two}",
        "interval: >-",
        "  10s",
    ]);
    let path = [Seg::Key("targets"), Seg::Index(0), Seg::Key("name")];
    assert_eq!(locate(&text, &path), Some((5, 11)));
    let path = [Seg::Key("targets"), Seg::Index(1), Seg::Key("name")];
    assert_eq!(locate(&text, &path), Some((6, 24)));
    assert_eq!(locate(&text, &[Seg::Key("interval")]), Some((7, 11)));
    assert_eq!(locate(&text, &[]), Some((2, 1)));
    // Missing nodes: not found, then the nearest ancestor.
    let path = [Seg::Key("targets"), Seg::Index(1), Seg::Key("count")];
    assert_eq!(locate(&text, &path), None);
    assert_eq!(locate_nearest(&text, &path), Some((6, 5)));
    let path = [Seg::Key("targets"), Seg::Index(7), Seg::Key("name")];
    // The value of `targets` is the block sequence, which starts at its first "-".
    assert_eq!(locate_nearest(&text, &path), Some((3, 3)));
    assert_eq!(path_string(&path), "targets[7].name");
    assert_eq!(path_string(&[]), ".");
}

#[test]
fn aliases_cannot_expand_a_small_file_into_gigabytes() {
    // 1 MB of file, 2 GB of names once expanded; it loaded (in 20 s) before text was budgeted.
    let text = format!(
        "targets:\n  - address: ::1\n    name: &long '{}'\n    expect: {{through: [{}]}}\n",
        "x".repeat(1 << 20),
        vec!["*long"; 2_000].join(", ")
    );
    let started = std::time::Instant::now();
    let message = Config::parse(&text, FILE).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(
        message.starts_with(&format!("{FILE}:3:11: targets[0].expect.through[")),
        "{message}"
    );
    assert_contains(
        &message,
        "add up to more than 5 MiB of text once its aliases are expanded",
    );
    // Aliases within the budget are fine.
    let config = parse(&[
        "targets:",
        "  - {address: '::1', labels: &l {site: paris}, expect: {through: &n [a, b]}}",
        "  - {address: 127.0.0.1, labels: *l, expect: {through: *n, not_through: *n}}",
    ]);
    assert_eq!(config.targets[1].expect.as_ref().unwrap().not_through, ["a", "b"]);
    assert_eq!(config.targets[1].labels, config.targets[0].labels);
}

#[test]
fn odd_names_are_taken_as_written() {
    // Interface and namespace names are compared with what the kernel reports, never run
    // through a shell: anything the kernel allows is taken verbatim (and what it does not is
    // in ERRORS).
    let config = parse(&[
        "targets:",
        "  - address: ::1",
        "    from: {netns: \"ns with spaces;$(id)`x`\"}",
        "    expect:",
        "      through: ['eth 0', 'vethü✓', '$(rm -rf /)', 'exactly15chars_', '4026531840']",
        "      not_through: ['']",
    ]);
    let t = &config.targets[0];
    assert_eq!(
        t.from,
        Some(Origin::Netns(PathBuf::from("/run/netns/ns with spaces;$(id)`x`")))
    );
    let expect = t.expect.as_ref().unwrap();
    assert_eq!(expect.through[1], "vethü✓");
    assert_eq!(expect.through[3].len(), 15);
}

#[test]
fn not_utf8_points_at_the_first_bad_byte() {
    let dir = std::env::temp_dir().join(format!("tracepkt-config-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latin1.yaml");
    std::fs::write(&path, b"targets:\n  - address: ::1\n    name: \xc3\xa9t\xe9\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((e.line(), e.column()), (Some(3), Some(13)));
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3:13: the file is not UTF-8 text (byte 0xe9): a configuration is YAML in UTF-8",
            path.display()
        )
    );
}

#[test]
fn io_error_for_a_missing_file() {
    let path = Path::new("/nonexistent/tracepkt/config.yaml");
    let e = Config::load(path).unwrap_err();
    assert!(matches!(&e, ConfigError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound));
    let message = e.to_string();
    assert!(
        message.starts_with("cannot read /nonexistent/tracepkt/config.yaml: "),
        "{message}"
    );
    assert_contains(&message, "No such file or directory");
}

#[test]
fn load_names_the_file_in_errors() {
    let dir = std::env::temp_dir().join(format!("tracepkt-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    let bad = dir.join("bad.yaml");
    std::fs::write(&good, yaml(&["targets:", "  - address: ::1"])).unwrap();
    std::fs::write(&bad, yaml(&["targets:", "  - address: ::1", "    count: 0"])).unwrap();
    let loaded = Config::load(&good);
    let failed = Config::load(&bad);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded.unwrap().targets[0].address, "::1");
    let message = failed.unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:3:12: targets[0].count: count 0", bad.display())),
        "{message}"
    );
}

#[test]
fn example_config_parses() {
    let config = Config::parse(include_str!("../../../config.example.yaml"), "config.example.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, default_listen());
    assert_eq!((config.interval, config.timeout), (secs(10), secs(2)));
    let targets: Vec<_> = config
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.address.as_str(), t.ip_version))
        .collect();
    assert_eq!(
        targets,
        [
            ("loopback", "127.0.0.1", IpVersion::Any),
            ("loopback6", "::1", IpVersion::V6),
            ("localhost", "localhost", IpVersion::V4),
        ]
    );
    assert!(config.targets.iter().all(|t| t.count == 1 && t.labels.is_empty()));
    assert_eq!(config.otlp, None);
}

#[test]
fn example_config_commented_examples_are_valid() {
    // In the shipped file, "## " starts prose and "# " a commented-out example: uncommenting
    // every example must give a valid configuration.
    let text = include_str!("../../../config.example.yaml");
    let uncommented: String = text
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            match line.trim_start().strip_prefix("# ") {
                Some(rest) => format!("{indent}{rest}\n"),
                None => format!("{line}\n"),
            }
        })
        .collect();
    assert_ne!(uncommented, text, "no uncommentable example found");
    let config = Config::parse(&uncommented, "uncommented").unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(config.targets.len() > 3);
    assert!(config.targets.iter().any(|t| !t.labels.is_empty()));
    assert!(config.otlp.is_some());
}
