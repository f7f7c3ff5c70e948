//! `tracepkt serve` from start to stop: it leaves nothing in the kernel after SIGTERM or SIGINT
//! and stops promptly even with a scraper hanging on it; a second instance on the node; and
//! `/metrics` over TLS with basic auth and client certificates, scraped by a real Prometheus.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::prom::Prometheus;
use common::*;

fn config(dir: &TempDir, port: u16, target: &str) -> std::path::PathBuf {
    let path = dir.path("config.yaml");
    write(
        &path,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 300ms\ntimeout: 250ms\nattach: always\ntargets:\n  - address: {target}\n"
        ),
    );
    path
}

fn up(port: u16, log: &Path) {
    wait_for(120, "a successful probe", log, || {
        (sample(&scrape(port), "tracepkt_probe_success{target=\"127.0.0.1\"}") == Some(1.0)).then_some(())
    });
}

/// The ids of the kernel objects of one kind (`prog`, `map`, `link`) that process `pid` holds
/// file descriptors for, from `/proc/PID/fdinfo` (the kernel's own account).
fn bpf_objects(kind: &str, pid: u32) -> Vec<u64> {
    let key = format!("{kind}_id:");
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn bpf_ids(kind: &str) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    all.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

fn stops_cleanly_on(signal: &str, test: &str) {
    require_privileges!(test);
    if !have_tool(test, "bpftool") {
        return;
    }
    let dir = TempDir::new(test);
    let port = free_port();
    let log = dir.path("serve.log");
    let mut serve = common::serve(&config(&dir, port, "127.0.0.1"), &log);
    up(port, &log);
    let pid = serve.0.id();
    let held: Vec<(&str, Vec<u64>)> = ["prog", "map", "link"]
        .into_iter()
        .map(|k| (k, bpf_objects(k, pid)))
        .collect();
    println!("tracepkt (pid {pid}) holds: {held:?}");
    assert!(
        !held[0].1.is_empty(),
        "bpftool shows no program held by tracepkt: the check would prove nothing"
    );
    // A scraper that sent half a request and hangs: shutting down must not wait for it.
    let mut hung = TcpStream::connect(("127.0.0.1", port)).unwrap();
    hung.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();

    let start = Instant::now();
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = serve.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIG{signal}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    println!("exited with {status} {took:?} after SIG{signal}");
    assert!(
        status.success(),
        "{status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Shutting down is bounded (3 s for open connections and span exports); the bound is
    // what is checked here, not the speed.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    for (kind, ids) in held {
        let left: Vec<u64> = bpf_ids(kind).into_iter().filter(|id| ids.contains(id)).collect();
        assert!(left.is_empty(), "{kind} {left:?} still in the kernel after exit");
    }
    let pinned = std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tracepkt"))
        .count();
    assert_eq!(pinned, 0, "pinned objects left in /sys/fs/bpf");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn sigterm_leaves_nothing_in_the_kernel() {
    stops_cleanly_on("TERM", "sigterm_leaves_nothing_in_the_kernel");
}

#[test]
fn sigint_leaves_nothing_in_the_kernel() {
    stops_cleanly_on("INT", "sigint_leaves_nothing_in_the_kernel");
}

/// Hops counted per probe sent, over all of a target's series.
fn hops_per_probe(text: &str) -> f64 {
    let hops: f64 = text
        .lines()
        .filter(|l| l.starts_with("tracepkt_hops_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    hops / sample(text, "tracepkt_probes_sent_total{target=\"127.0.0.1\"}").unwrap_or(f64::NAN)
}

#[test]
fn a_second_instance_coexists_on_another_port_and_is_refused_on_the_same_one() {
    let test = "a_second_instance_coexists_on_another_port_and_is_refused_on_the_same_one";
    require_privileges!(test);
    let (a_dir, b_dir, c_dir) = (
        TempDir::new("second-a"),
        TempDir::new("second-b"),
        TempDir::new("second-c"),
    );
    let (a_port, b_port) = (free_port(), free_port());
    let a_log = a_dir.path("serve.log");
    let _a = common::serve(&config(&a_dir, a_port, "127.0.0.1"), &a_log);
    up(a_port, &a_log);
    let alone = hops_per_probe(&scrape(a_port));

    // Same port: refused at start, with the reason; the first one goes on.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config(&c_dir, a_port, "127.0.0.1"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on 127.0.0.1:{a_port}")),
        "{}",
        describe(&out)
    );

    // Another port: both probe the same target, and neither counts the other's packets.
    let b_log = b_dir.path("serve.log");
    let _b = common::serve(&config(&b_dir, b_port, "127.0.0.1"), &b_log);
    up(b_port, &b_log);
    let sent = |port| sample(&scrape(port), "tracepkt_probes_sent_total{target=\"127.0.0.1\"}").unwrap_or(0.0);
    let (a0, b0) = (sent(a_port), sent(b_port));
    wait_for(120, "ten more probes from each", &b_log, || {
        (sent(a_port) >= a0 + 10.0 && sent(b_port) >= b0 + 10.0).then_some(())
    });
    let (a, b) = (scrape(a_port), scrape(b_port));
    assert_eq!(sample(&a, "tracepkt_probe_success{target=\"127.0.0.1\"}"), Some(1.0));
    assert_eq!(sample(&b, "tracepkt_probe_success{target=\"127.0.0.1\"}"), Some(1.0));
    let (a_per, b_per) = (hops_per_probe(&a), hops_per_probe(&b));
    println!("hops per probe: alone {alone:.2}, then side by side {a_per:.2} and {b_per:.2}");
    for per in [a_per, b_per] {
        assert!(
            per <= alone * 1.2,
            "{per:.2} hops per probe against {alone:.2} alone:\nA:\n{a}\nB:\n{b}"
        );
    }
}

// ---- TLS and basic auth ----

/// A CA, a server certificate for 127.0.0.1, a client certificate from that CA, and one from
/// a CA the server does not trust.
fn pki(dir: &TempDir) {
    let d = dir.path("");
    let run = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(&d).output().unwrap();
        assert!(out.status.success(), "{cmd}\n{}", describe(&out));
    };
    for ca in ["ca", "rogue-ca"] {
        run(&format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN={ca} -keyout {ca}.key -out {ca}.crt"
        ));
    }
    let issue = |name: &str, ca: &str, ext: &str| {
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        run(&format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN={name} \
             -keyout {name}.key -out {name}.csr && \
             openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 2 \
             -extfile {name}.ext -out {name}.crt"
        ));
    };
    issue(
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    let client = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";
    issue("client", "ca", client);
    issue("rogue", "rogue-ca", client);
}

/// curl over TLS to `/metrics`: (curl's exit code, HTTP status).
fn curl(dir: &TempDir, port: u16, args: &[String]) -> (i32, String, Output) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(dir.path("ca.crt"))
        .args(args)
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out,
    )
}

#[test]
fn metrics_over_tls_with_basic_auth_and_client_certificates() {
    let test = "metrics_over_tls_with_basic_auth_and_client_certificates";
    require_privileges!(test);
    if !have_tool(test, "openssl") || !have_tool(test, "curl") {
        return;
    }
    let dir = TempDir::new(test);
    pki(&dir);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.path("web.yml");
    write(
        &web,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
             basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    );
    let port = free_port();
    let log = dir.path("serve.log");
    let logfile = std::fs::File::create(&log).unwrap();
    let _serve = Proc(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config(&dir, port, "127.0.0.1"))
            .arg("--web-config")
            .arg(&web)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .unwrap(),
    );
    let cert = ["--cert", "client.crt", "--key", "client.key"].map(|a| {
        if a.starts_with("--") {
            a.to_owned()
        } else {
            dir.path(a).display().to_string()
        }
    });
    let with = |extra: &[&str]| -> Vec<String> {
        cert.iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    wait_for(120, "an answer over TLS", &log, || {
        (curl(&dir, port, &with(&["-u", "prometheus:s3cret"])).1 == "200").then_some(())
    });

    let (_, status, out) = curl(&dir, port, &with(&["-u", "prometheus:wrong"]));
    assert_eq!(status, "401", "wrong password: {}", describe(&out));
    let (_, status, out) = curl(&dir, port, &with(&["-u", "nobody:s3cret"]));
    assert_eq!(status, "401", "unknown user: {}", describe(&out));
    let (_, status, out) = curl(&dir, port, &with(&[]));
    assert_eq!(status, "401", "no credentials: {}", describe(&out));
    // Without a client certificate, or with one from another CA, the handshake fails: no HTTP
    // status at all.
    let (code, status, out) = curl(&dir, port, &["-u".to_owned(), "prometheus:s3cret".to_owned()]);
    assert!(
        code != 0 && status == "000",
        "no client certificate: {}",
        describe(&out)
    );
    let rogue = [
        "--cert",
        &dir.path("rogue.crt").display().to_string(),
        "--key",
        &dir.path("rogue.key").display().to_string(),
        "-u",
        "prometheus:s3cret",
    ]
    .map(|s| s.to_owned());
    let (code, status, out) = curl(&dir, port, &rogue);
    assert!(
        code != 0 && status == "000",
        "client certificate from another CA: {}",
        describe(&out)
    );
    // Plain HTTP is not served.
    assert!(http_get(&format!("http://127.0.0.1:{port}/metrics")).is_none());

    // A real Prometheus scrapes it the way a user would configure it.
    let d = |f: &str| dir.path(f).display().to_string();
    let job = [
        "scheme: https".to_owned(),
        format!(
            "tls_config: {{ca_file: '{}', cert_file: '{}', key_file: '{}'}}",
            d("ca.crt"),
            d("client.crt"),
            d("client.key")
        ),
        "basic_auth: {username: prometheus, password: s3cret}".to_owned(),
    ];
    let job: Vec<&str> = job.iter().map(String::as_str).collect();
    let prom = match Prometheus::start_with(&format!("127.0.0.1:{port}"), Duration::from_millis(500), &job) {
        Ok(p) => p,
        Err(reason) => {
            skip(test, &reason);
            return;
        }
    };
    prom.wait_up(Duration::from_secs(120));
    let r = prom.query("tracepkt_probe_success{target=\"127.0.0.1\"}");
    println!("prometheus over TLS with basic auth: {r}");
    assert_eq!(r[0]["value"][1], "1", "{r}");
}

#[test]
fn a_bad_web_config_is_refused_at_start() {
    let dir = TempDir::new("bad-web-config");
    let web = dir.path("web.yml");
    write(
        &web,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    );
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config(&dir, free_port(), "127.0.0.1"))
        .arg("--web-config")
        .arg(&web)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "web configuration {}: cert_file {}",
            web.display(),
            dir.path("missing.crt").display()
        )),
        "{}",
        describe(&out)
    );
}

/// The capability bits tracepkt keeps when it has them (`kernel::caps::KEPT`): DAC_READ_SEARCH,
/// NET_ADMIN, NET_RAW, SYS_PTRACE, SYS_ADMIN, SYS_RESOURCE, SYSLOG, PERFMON, BPF.
const KEPT_BITS: [u32; 9] = [2, 12, 13, 19, 21, 24, 34, 38, 39];

fn cap_sets(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.starts_with("Cap")
                .then(|| (k.to_owned(), u64::from_str_radix(v.trim(), 16).unwrap_or(u64::MAX)))
        })
        .collect()
}

#[test]
fn serve_gives_up_the_capabilities_it_never_uses() {
    let test = "serve_gives_up_the_capabilities_it_never_uses";
    require_privileges!(test);
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpklc-caps", "tpklccaps", "198.18.136");
    let dir = TempDir::new(test);
    let port = free_port();
    let config = dir.path("config.yaml");
    // One probe from another namespace: entering it needs CAP_SYS_ADMIN, which stays.
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 300ms\ntimeout: 250ms\ntargets:\n  - address: 127.0.0.1\n  \
             - {{name: from-ns, address: 198.18.136.1, from: {{netns: {ns}}}}}\n"
        ),
    );
    let log = dir.path("serve.log");
    let serve = common::serve(&config, &log);
    wait_for(120, "both targets answered", &log, || {
        let t = scrape(port);
        (sample(&t, "tracepkt_probe_success{target=\"127.0.0.1\"}") == Some(1.0)
            && sample(&t, "tracepkt_probe_success{target=\"from-ns\"}") == Some(1.0))
        .then_some(())
    });
    let kept: u64 = KEPT_BITS.iter().map(|b| 1u64 << b).sum();
    let mine = cap_sets(&std::fs::read_to_string("/proc/self/status").unwrap());
    let my_eff = mine.iter().find(|(k, _)| k == "CapEff").unwrap().1;
    assert!(
        my_eff & (1 << 16) != 0,
        "the test itself lacks CAP_SYS_MODULE: the check would prove nothing"
    );
    let pid = serve.0.id();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let sets: std::collections::BTreeMap<String, u64> = cap_sets(&status).into_iter().collect();
        threads += 1;
        for set in ["CapEff", "CapPrm"] {
            assert_eq!(
                sets[set],
                my_eff & kept,
                "thread {:?}: {set} {:#x}, expected {:#x}",
                task.file_name(),
                sets[set],
                my_eff & kept
            );
        }
        assert_eq!(sets["CapInh"], 0);
        assert_eq!(sets.get("CapAmb").copied().unwrap_or(0), 0);
    }
    println!(
        "{threads} threads, each with CapEff = CapPrm = {:#x} (the test's own: {my_eff:#x})",
        my_eff & kept
    );
}
