//! Bad input to the real binary: config files, command lines, namespace names and targets that
//! are wrong in every way a person or a broken tool could make them. Each case must end, in
//! bounded time, with exit status 2 and a message that says what is wrong: never a panic,
//! never a hang.

mod common;

use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, TempDir, describe};

/// Longest any case may take: parsing a 10 MB config in a debug build included, and loading
/// the programs for a trace under a VM's software emulation, where the verifier alone can take
/// half a minute. It catches a case that hangs, not one that is slow.
const BOUND: Duration = Duration::from_secs(120);

/// Runs tracepkt with `args`, killing it if it outlives `BOUND`.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tracepkt");
    // Drained on threads: a chatty child must not block on a full pipe while we wait.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tracepkt {:?} still running after {BOUND:?}\nstderr:\n{}",
                shorten(&args.join(" ")),
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_owned();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Asserts a usage or set-up error: exit status 2, no panic, and `expected` on stderr.
fn assert_error(what: &str, out: &Output, expected: &str) {
    if let Err(e) = check_error(what, out, expected) {
        panic!("{e}");
    }
}

fn check_error(what: &str, out: &Output, expected: &str) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = || shorten(&describe(out));
    if stderr.contains("panicked") {
        return Err(format!("{what}: panicked\n{}", shown()));
    }
    if out.status.code() != Some(2) {
        return Err(format!("{what}: not exit status 2\n{}", shown()));
    }
    if !stderr.contains(expected) {
        return Err(format!("{what}: expected {expected:?}\n{}", shown()));
    }
    Ok(())
}

/// `serve --config FILE` on `content`: the config is loaded before anything else starts, so a
/// bad one ends the process at once (and a case that wrongly passed would be caught by BOUND
/// instead of serving).
fn serve_with(dir: &TempDir, name: &str, content: &[u8]) -> Output {
    let path = dir.path(name);
    std::fs::write(&path, content).unwrap();
    run(&["serve", "--config", path.to_str().unwrap()])
}

#[test]
fn bad_config_files() {
    let dir = TempDir::new("bad-config");
    let target = "targets:\n  - address: 127.0.0.1\n";
    let nested = format!("targets: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    // Billion laughs: each level doubles, so the last alias would be 2^40 strings.
    let mut laughs = String::from("[&a0 [lol, lol]");
    for i in 1..=40 {
        laughs.push_str(&format!(", &a{i} [*a{p}, *a{p}]", p = i - 1));
    }
    laughs.push(']');
    let laughs = format!("targets: [{{address: 127.0.0.1, expect: {{through: {laughs}}}}}]\n");
    // A long value named many times: 1 MB of file, 20 GB once expanded.
    let long_value = format!(
        "targets:\n  - address: 127.0.0.1\n    name: &long '{}'\n    expect: {{through: [{}]}}\n",
        "x".repeat(1 << 20),
        vec!["*long"; 20_000].join(", ")
    );
    let aliased_targets = format!(
        "targets: [&t {{address: 127.0.0.1}}, {}]\n",
        vec!["*t"; 20_000].join(", ")
    );
    let many_targets: String = std::iter::once("targets:\n".to_owned())
        .chain((0..10_001).map(|i| format!("  - {{address: 127.0.0.1, name: t{i}}}\n")))
        .collect();
    let mut huge = String::from("# 10 MB of comment, then a mistake\n");
    while huge.len() < 10 << 20 {
        huge.push_str("# tracepkt tracepkt tracepkt tracepkt tracepkt tracepkt tracepkt tracepkt\n");
    }
    huge.push_str("targets:\n  - address: 127.0.0.1\n    count: 0\n");
    let mut huge_value = String::from("targets:\n  - address: 127.0.0.1\n    labels: {site: '");
    huge_value.push_str(&"x".repeat(10 << 20));
    huge_value.push_str("'}\n    count: 0\n");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty file", b"".to_vec(), ":1:1: missing field `targets`"),
        (
            "only white space",
            b" \n\n  \n".to_vec(),
            ":4:1: missing field `targets`",
        ),
        (
            "a tab for indentation",
            b"targets:\n\t- address: ::1\n".to_vec(),
            ":2:1: found character that cannot start any token",
        ),
        (
            "syntax error",
            b"targets:\n  - address: ::1\n    name: 'unterminated\n".to_vec(),
            "found unexpected end of stream",
        ),
        (
            "bad indentation",
            b"targets:\n  - address: ::1\n   name: x\n".to_vec(),
            ":3:",
        ),
        (
            "targets is a number",
            b"targets: 5\n".to_vec(),
            ":1:10: targets: invalid type: integer `5`, expected a list of targets",
        ),
        (
            "interval is a list",
            format!("interval: [1, 2]\n{target}").into_bytes(),
            ":1:11: interval: invalid type: sequence, expected a duration such as 10s",
        ),
        (
            "a huge count",
            format!("{target}    count: 99999999999999999999999999\n").into_bytes(),
            ":3:12: targets[0].count: invalid type: integer `99999999999999999999999999` as u128, expected a whole number from 1 to 100",
        ),
        (
            "a huge duration",
            format!("interval: 99999999999999999999999s\n{target}").into_bytes(),
            ":1:11: interval: invalid duration \"99999999999999999999999s\": number is too large",
        ),
        (
            "a huge port",
            b"targets:\n  - address: 127.0.0.1\n    protocol: tcp\n    port: 4294967296\n".to_vec(),
            ":4:11: targets[0].port: invalid value: integer `4294967296`, expected u16",
        ),
        (
            "an infinite bucket",
            format!("rtt_buckets: [1e999]\n{target}").into_bytes(),
            ":1:15: rtt_buckets[0]: invalid type: string \"1e999\", expected f64",
        ),
        (
            "binary garbage",
            (0..=255u8).cycle().take(4096).collect(),
            ":2:118: the file is not UTF-8 text (byte 0x80): a configuration is YAML in UTF-8",
        ),
        (
            "Latin-1 text",
            b"targets:\n  - address: 127.0.0.1\n    name: caf\xe9\n".to_vec(),
            ":3:14: the file is not UTF-8 text (byte 0xe9)",
        ),
        (
            "a NUL byte",
            b"targets:\n  - address: \"127.0.0.1\x00\"\n".to_vec(),
            "control characters are not allowed",
        ),
        (
            "an escaped NUL in a namespace",
            format!("{target}    from: {{netns: \"a\\0b\"}}\n").into_bytes(),
            "targets[0].from.netns: \"a\\0b\" contains a NUL byte",
        ),
        (
            "10 MB of comment",
            huge.into_bytes(),
            "targets[0].count: count 0 is out of range: expected 1 to 100",
        ),
        (
            "a 10 MB label value",
            huge_value.into_bytes(),
            "targets[0].count: count 0 is out of range: expected 1 to 100",
        ),
        (
            "10,000 nested lists",
            nested.into_bytes(),
            ":1:11: targets[0]: invalid type: sequence, expected a target: a mapping with at least an address",
        ),
        (
            "billion laughs",
            laughs.into_bytes(),
            "targets[0].expect.through[0]: invalid type: sequence, expected a string",
        ),
        (
            "a long value aliased 20,000 times",
            long_value.into_bytes(),
            "once its aliases are expanded",
        ),
        (
            "a target aliased 20,000 times",
            aliased_targets.into_bytes(),
            "targets: more than 10000 targets",
        ),
        (
            "10,001 targets",
            many_targets.into_bytes(),
            "targets: more than 10000 targets: split them over several tracepkt instances",
        ),
        (
            "an alias to nothing",
            b"targets: [*nothing]\n".to_vec(),
            ":1:11: unknown anchor",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, content, expected)) in cases.iter().enumerate() {
        let started = Instant::now();
        let out = serve_with(&dir, &format!("{i}.yaml"), content);
        eprintln!(
            "{what} ({:.1?}): {}",
            started.elapsed(),
            shorten(String::from_utf8_lossy(&out.stderr).trim())
        );
        failures.extend(check_error(what, &out, expected).err());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn config_files_that_cannot_be_read() {
    let out = run(&["serve", "--config", "/nonexistent/tracepkt.yaml"]);
    assert_error(
        "missing file",
        &out,
        "cannot read /nonexistent/tracepkt.yaml: No such file or directory",
    );
    let out = run(&["serve", "--config", "/"]);
    assert_error("a directory", &out, "cannot read /: Is a directory");
}

#[test]
fn bad_command_lines() {
    // Linux caps one argument at 128 KiB.
    let long_target = "a".repeat(100_000);
    let cases: &[(&[&str], &str)] = &[
        (
            &["trace", "--count", "abc", "127.0.0.1"],
            "invalid value 'abc' for '--count <COUNT>'",
        ),
        (
            &["trace", "--count", "-1", "127.0.0.1"],
            "unexpected argument '-1' found",
        ),
        (
            &["trace", "--count", "99999999999", "127.0.0.1"],
            "99999999999 is not in 1..=65535",
        ),
        (&["trace", "--count", "0", "127.0.0.1"], "0 is not in 1..=65535"),
        (
            &["trace", "--timeout", "nan", "127.0.0.1"],
            "`nan` is out of range (0 exclusive..=3600 seconds)",
        ),
        (&["trace", "--timeout", "inf", "127.0.0.1"], "`inf` is out of range"),
        (&["trace", "--timeout", "1e309", "127.0.0.1"], "`1e309` is out of range"),
        (
            &["trace", "--timeout", "0", "127.0.0.1"],
            "`0` is out of range (0 exclusive..=3600 seconds)",
        ),
        (
            &["trace", "--interval", "3601", "127.0.0.1"],
            "`3601` is out of range (0..=3600 seconds)",
        ),
        (
            &["trace", "--interval", "1s", "127.0.0.1"],
            "`1s` is not a number of seconds",
        ),
        (
            &["trace", "--bogus", "127.0.0.1"],
            "unexpected argument '--bogus' found",
        ),
        (
            &["trace", "-4", "-6", "::1"],
            "the argument '-4' cannot be used with '-6'",
        ),
        (
            &["trace", "--tcp", "80", "--udp", "53", "127.0.0.1"],
            "cannot be used with '--udp <PORT>'",
        ),
        (&["trace", "--tcp", "0", "127.0.0.1"], "0 is not in 1..=65535"),
        (&["trace", "--udp", "65536", "127.0.0.1"], "65536 is not in 1..=65535"),
        (
            &["trace", "--from", "a", "--from-pod", "ns/p", "127.0.0.1"],
            "cannot be used with",
        ),
        (&["trace", "--from-pod", "no-slash", "127.0.0.1"], "namespace/name"),
        (
            &["trace", "--mechanism", "ebpf", "127.0.0.1"],
            "`ebpf` is not a mechanism (tp_btf, tracepoint or kprobe)",
        ),
        (
            &["trace", "--otlp", "https://c:4317", "127.0.0.1"],
            "plain-text OTLP only",
        ),
        (&["trace", "--otlp-protocol", "grpc", "127.0.0.1"], "--otlp <ENDPOINT>"),
        (&["trace", "127.0.0.1", "::1"], "unexpected argument '::1' found"),
        (&["serve", "--config"], "a value is required for '--config <CONFIG>'"),
        (&["trace", &long_target], "cannot resolve aaaa"),
    ];
    for (args, expected) in cases {
        let what = shorten(&args.join(" "));
        assert_error(&what, &run(args), expected);
    }
}

#[test]
fn bad_namespace_names() {
    for (from, expected) in [
        (
            "../../proc/1/ns/net",
            "is neither a namespace name (no '/') nor an absolute path",
        ),
        ("a/b", "\"a/b\" is neither a namespace name"),
        ("..", "\"..\" is neither a namespace name"),
        (".", "\".\" is neither a namespace name"),
        ("", "the namespace must not be empty"),
        (
            "no such ns",
            "network namespace not found: /run/netns/no such ns does not exist",
        ),
        (
            "$(touch tpk-pwned);`id`>x",
            "/run/netns/$(touch tpk-pwned);`id`>x does not exist",
        ),
        ("ünïcödé-ns", "/run/netns/ünïcödé-ns does not exist"),
        (
            "/nonexistent/ns",
            "network namespace not found: /nonexistent/ns does not exist",
        ),
    ] {
        let out = run(&["trace", "--from", from, "127.0.0.1"]);
        assert_error(&format!("--from {from:?}"), &out, expected);
    }
    assert!(!std::path::Path::new("tpk-pwned").exists() && !std::path::Path::new("x").exists());
}

#[test]
fn targets_that_resolve_to_nothing() {
    for (args, expected) in [
        (
            vec!["trace", "no-such-host.invalid"],
            "cannot resolve no-such-host.invalid",
        ),
        (
            vec!["trace", "-6", "no-such-host.invalid"],
            "cannot resolve no-such-host.invalid",
        ),
        (
            vec!["trace", "--tcp", "443", "x.y.invalid"],
            "cannot resolve x.y.invalid",
        ),
        (vec!["trace", "ünïcödé.invalid"], "cannot resolve ünïcödé.invalid"),
        (
            vec!["trace", "white space.invalid"],
            "cannot resolve white space.invalid",
        ),
        (vec!["trace", ""], "cannot resolve"),
        (vec!["trace", "-4", "::1"], "is an IPv6 address but IPv4 was asked for"),
        (
            vec!["trace", "-6", "127.0.0.1"],
            "is an IPv4 address but IPv6 was asked for",
        ),
    ] {
        let started = Instant::now();
        let out = run(&args);
        assert_error(&format!("{args:?}"), &out, expected);
        // Without a network, .invalid fails at once; a resolver that waited would show here.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Names the kernel allows but a careless tool would not survive: a namespace named with a
/// space, shell metacharacters and a non-ASCII letter, an interface name of the full 15 bytes
/// and one in Unicode. The probe must cross them and report them as they are.
#[test]
fn odd_namespace_and_interface_names() {
    require_privileges!("odd_namespace_and_interface_names");
    let mut c = common::Cleanup::new();
    let ns = c.netns("tpk odd;$(id)`x`é");
    let host_if = "tpkodd012345678"; // IFNAMSIZ - 1 bytes
    let peer = "eth-ü✓";
    c.host_link(host_if);
    common::sh(&format!(
        "ip link add {host_if} type veth peer name '{peer}' netns '{ns}'"
    ));
    common::sh(&format!(
        "ip addr add 198.18.91.1/24 dev {host_if} && ip link set dev {host_if} up"
    ));
    common::sh(&format!(
        "ip -n '{ns}' addr add 198.18.91.2/24 dev '{peer}' && ip -n '{ns}' link set dev '{peer}' up"
    ));
    let out = run(&["trace", "--json", "--from", &ns, "198.18.91.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let hops: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let seen = |ifname: &str, netns_name: Option<&str>| {
        hops.iter()
            .any(|h| h["ifname"] == ifname && h["netns_name"].as_str() == netns_name)
    };
    assert!(seen(peer, Some(ns.as_str())), "{}", describe(&out));
    assert!(seen(host_if, None), "{}", describe(&out));
    // The table prints them verbatim too.
    let out = run(&["trace", "--from", &ns, "198.18.91.1"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&ns) && table.contains(peer) && table.contains(host_if),
        "{table}"
    );
}
