//! MTU black holes: sized, don't-fragment probes through a path whose second link is smaller.
//!
//! Three namespaces: `a` (the prober) -- 1500 -- `m` (a router) -- 1400 -- `b` (the target).
//! A 1500-byte don't-fragment probe cannot cross into the small link: `m` drops it and sends
//! back ICMP "fragmentation needed" naming 1400, unless its output chain drops that message
//! too, which makes the path a black hole. Needs root; skips with a reason otherwise.
//!
//! Addresses come from 198.18.150.0/24 to 198.18.155.0/24 and exist only inside namespaces these
//! tests create.

mod common;

use common::{
    Cleanup, TempDir, addr_up, describe, free_port, hop, netns_inode, path, sample, scrape, serve, sh, trace_json,
    wait_for, write,
};

/// The namespaces of one topology, and the target's address.
struct Path {
    a: String,
    m: String,
    b: String,
    target: String,
}

/// Builds `a` -- `m` -- `b` on `<net>.0/24` and `<net+1>.0/24`; with `black_hole`, `m`'s output
/// chain drops every ICMP "fragmentation needed".
fn topology(c: &mut Cleanup, tag: &str, net: u8, black_hole: bool) -> Path {
    let (a, m, b) = (
        c.netns(&format!("tpkmtu-{tag}-a")),
        c.netns(&format!("tpkmtu-{tag}-m")),
        c.netns(&format!("tpkmtu-{tag}-b")),
    );
    let (n1, n2) = (format!("198.18.{net}"), format!("198.18.{}", net + 1));
    sh(&format!("ip -n {a} link add eth0 type veth peer name mtua netns {m}"));
    sh(&format!("ip -n {b} link add eth0 type veth peer name mtub netns {m}"));
    sh(&format!(
        "ip -n {m} link set dev mtub mtu 1400 && ip -n {b} link set dev eth0 mtu 1400"
    ));
    addr_up(&a, "eth0", &format!("{n1}.2/24"));
    addr_up(&m, "mtua", &format!("{n1}.1/24"));
    addr_up(&m, "mtub", &format!("{n2}.1/24"));
    addr_up(&b, "eth0", &format!("{n2}.2/24"));
    sh(&format!("ip netns exec {m} sysctl -qw net.ipv4.ip_forward=1"));
    sh(&format!("ip -n {a} route add default via {n1}.1"));
    sh(&format!("ip -n {b} route add default via {n2}.1"));
    if black_hole {
        sh(&format!(
            "ip netns exec {m} nft add table inet tpkmtu && \
             ip netns exec {m} nft 'add chain inet tpkmtu output {{ type filter hook output priority 0; }}' && \
             ip netns exec {m} nft add rule inet tpkmtu output icmp type destination-unreachable icmp code frag-needed drop"
        ));
    }
    Path {
        a,
        m,
        b,
        target: format!("{n2}.2"),
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_black_hole_shows_where_the_full_size_probe_dies() {
    let test = "a_black_hole_shows_where_the_full_size_probe_dies";
    require_privileges!(test);
    if !common::have_tool(test, "nft") {
        return;
    }
    let mut c = Cleanup::new();
    let p = topology(&mut c, "bh", 150, true);
    let (ia, im, ib) = (netns_inode(&p.a), netns_inode(&p.m), netns_inode(&p.b));

    // Small enough for the small link: the whole way and back.
    let (out, hops) = trace_json(None, &["--from", &p.a, "--size", "1300", "--df", &p.target]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "eth0", ia),
            hop("request", "rx", "mtua", im),
            hop("request", "tx", "mtub", im),
            hop("request", "rx", "eth0", ib),
            hop("reply", "tx", "eth0", ib),
            hop("reply", "rx", "mtub", im),
            hop("reply", "tx", "mtua", im),
            hop("reply", "rx", "eth0", ia),
        ],
        "{}",
        describe(&out)
    );

    // Full size with don't-fragment: it reaches m and goes no further, and nothing comes back.
    let (out, hops) = trace_json(None, &["--from", &p.a, "--size", "1500", "--df", &p.target]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        path(&hops)[..2],
        [hop("request", "tx", "eth0", ia), hop("request", "rx", "mtua", im)],
        "{}",
        describe(&out)
    );
    assert!(
        hops.iter()
            .all(|h| h["netns"].as_u64() != Some(ib) && h["direction"] == "request"),
        "{}",
        describe(&out)
    );
    let last = hops.last().expect("hops");
    assert_eq!(
        (last["netns"].as_u64(), last["ifname"].as_str()),
        (Some(im), Some("mtua")),
        "the last hop is m's interface toward a, where the probe arrived: {}",
        describe(&out)
    );
    if last["kind"] == "drop" {
        // The kernel names why (PKT_TOO_BIG from ip_forward on Debian's 6.1 and on 6.18).
        assert!(last["reason"].as_str().is_some_and(|r| !r.is_empty()), "{last}");
    }
    let err = stderr(&out);
    assert!(err.contains("no reply;"), "{}", describe(&out));
    assert!(
        !err.contains("fragmentation needed"),
        "nothing comes back: {}",
        describe(&out)
    );

    // The table, as a user reads it.
    let out = std::process::Command::new(common::BIN)
        .args(["trace", "--from", &p.a, "--size", "1500", "--df", &p.target])
        .output()
        .expect("run tracepkt");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert!(rows.len() >= 2, "{}", describe(&out));
    assert!(
        rows.last().unwrap().starts_with(&format!("[{im:>10}] {}", p.m)) && rows.last().unwrap().contains(" mtua "),
        "{}",
        describe(&out)
    );
    assert!(!text.contains(&format!("[{ib:>10}]")), "{}", describe(&out));
    let summary = text.lines().last().unwrap();
    assert!(
        summary.contains(&format!("to {} (id ", p.target))
            && summary.contains(", 1500 bytes, don't fragment): no reply; last seen in netns ")
            && summary.contains(&format!("{im} ({}) on mtua", p.m)),
        "{}",
        describe(&out)
    );

    // Without don't-fragment m fragments it, and the fragments are not followed: the journey
    // stops where the probe was whole, yet the reply (reassembled) comes back.
    let (out, hops) = trace_json(None, &["--from", &p.a, "--size", "1500", &p.target]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        path(&hops),
        vec![hop("request", "tx", "eth0", ia), hop("request", "rx", "mtua", im)],
        "{}",
        describe(&out)
    );
}

#[test]
fn fragmentation_needed_names_the_mtu() {
    let test = "fragmentation_needed_names_the_mtu";
    require_privileges!(test);
    let mut c = Cleanup::new();
    let p = topology(&mut c, "fn", 152, false);
    let im = netns_inode(&p.m);

    let (out, _) = trace_json(None, &["--from", &p.a, "--size", "1300", "--df", &p.target]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Twice: the second probe goes out at full size although a has learned the smaller path
    // MTU, and meets the same answer.
    for _ in 0..2 {
        let (out, hops) = trace_json(None, &["--from", &p.a, "--size", "1500", "--df", &p.target]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no reply: fragmentation needed from 198.18.152.1 (type 3 code 4): next-hop MTU 1400"),
            "{}",
            describe(&out)
        );
        let last = hops.last().expect("hops");
        assert_eq!(
            (last["netns"].as_u64(), last["ifname"].as_str()),
            (Some(im), Some("mtua")),
            "{}",
            describe(&out)
        );
    }
}

#[test]
fn a_sweep_exports_the_path_mtu() {
    let test = "a_sweep_exports_the_path_mtu";
    require_privileges!(test);
    let mut c = Cleanup::new();
    let p = topology(&mut c, "sw", 154, false);
    let dir = TempDir::new("mtu-sweep");
    let port = free_port();
    let config = dir.path("config.yaml");
    let log = dir.path("serve.log");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 1s\ntimeout: 200ms\ntargets:\n\
             \x20 - {{name: sweep, address: {}, from: {{netns: {}}}, size: [1300, 1400, 1450, 1500], dont_fragment: true}}\n\
             \x20 - {{name: plain, address: {}, from: {{netns: {}}}}}\n",
            p.target, p.a, p.target, p.a
        ),
    );
    let _serve = serve(&config, &log);
    let text = wait_for(90, "a sweep's path MTU", &log, || {
        let text = scrape(port);
        (sample(&text, "tracepkt_path_mtu_bytes{target=\"sweep\"}").is_some()
            && sample(&text, "tracepkt_probe_success{target=\"plain\"}").is_some())
        .then_some(text)
    });
    let at = |prefix: &str| sample(&text, prefix);
    for l in text
        .lines()
        .filter(|l| l.starts_with("tracepkt_path_mtu_bytes{") || l.starts_with("tracepkt_probe_size_success{"))
    {
        println!("{l}");
    }
    assert_eq!(at("tracepkt_path_mtu_bytes{target=\"sweep\"}"), Some(1400.0), "{text}");
    for (size, ok) in [(1300, 1.0), (1400, 1.0), (1450, 0.0), (1500, 0.0)] {
        assert_eq!(
            at(&format!(
                "tracepkt_probe_size_success{{target=\"sweep\",size=\"{size}\"}}"
            )),
            Some(ok),
            "{text}"
        );
    }
    // The target answers: success is any size's; the MTU is its own series.
    assert_eq!(at("tracepkt_probe_success{target=\"sweep\"}"), Some(1.0), "{text}");
    assert_eq!(at("tracepkt_probe_success{target=\"plain\"}"), Some(1.0), "{text}");
    assert!(
        !text.contains("tracepkt_probe_size_success{target=\"plain\"")
            && !text.contains("tracepkt_path_mtu_bytes{target=\"plain\""),
        "an unsized target has no per-size series: {text}"
    );
    assert!(
        text.contains("tracepkt_last_hop_info{target=\"sweep\"") && text.contains("interface=\"mtua\""),
        "where the too-big probes were last seen: {text}"
    );
}
