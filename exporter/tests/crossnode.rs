//! Cross-node journeys: a tracepkt that did not send a probe follows it anyway (`cross_node:`)
//! and adds the hops it saw to the sender's trace, within its foreign-probe budget.
//!
//! On one kernel, two tracepkts stand in for two nodes: each has its own kernel maps, so the
//! sender's probes are foreign to the other one. The two-kernel case (this machine and a VM
//! on a bridge, with and without VXLAN) is `across_two_kernels_*` below.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::otlp::{Receiver, Span};
use common::*;

/// `tracepkt serve` with `K8S_NODE_NAME` set, as the chart's downward API sets it.
fn serve_as(node: &str, config: &Path, log: &Path) -> Proc {
    serve_with_env(config, log, &[("K8S_NODE_NAME", node)])
}

fn config(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path(name);
    write(&path, body);
    path
}

/// The spans of the trace whose root span is named `probe TARGET` and satisfies `root_ok`,
/// with at least one span from node `remote` under it.
fn trace_with_remote<'a>(
    spans: &'a [Span],
    target: &str,
    remote: &str,
    root_ok: impl Fn(&Span) -> bool,
) -> Option<(&'a Span, Vec<&'a Span>)> {
    spans
        .iter()
        .filter(|s| s.name == format!("probe {target}") && s.parent_span_id.is_empty() && root_ok(s))
        .find_map(|root| {
            let trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == root.trace_id).collect();
            trace
                .iter()
                .any(|s| s.resource_str("k8s.node.name").as_deref() == Some(remote))
                .then_some((root, trace))
        })
}

/// The sum of every sample whose line starts with `prefix`.
fn sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn node_of(s: &Span) -> String {
    s.resource_str("k8s.node.name").unwrap_or_default()
}

#[test]
fn another_tracepkt_adds_what_it_saw_to_the_senders_trace() {
    let test = "another_tracepkt_adds_what_it_saw_to_the_senders_trace";
    require_privileges!(test);
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-xnode", "tpkxn0", "198.18.160");
    let rx = Receiver::grpc();
    let dir = TempDir::new("crossnode-one-kernel");
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let otlp = |service: &str| format!("otlp:\n  endpoint: {}\n  service_name: {service}\n", rx.endpoint);
    // A sends; B follows A's probes with room to spare; C with a budget of 1 event a second.
    let a = config(
        &dir,
        "a.yaml",
        &format!(
            "listen: 127.0.0.1:{port_a}\ninterval: 500ms\ntimeout: 400ms\ntargets:\n  - {{name: pod, address: 198.18.160.2}}\n{}",
            otlp("sender")
        ),
    );
    let b = config(
        &dir,
        "b.yaml",
        &format!(
            "listen: 127.0.0.1:{port_b}\ntargets: []\ncross_node: {{enabled: true}}\n{}",
            otlp("follower")
        ),
    );
    let c_cfg = config(
        &dir,
        "c.yaml",
        &format!("listen: 127.0.0.1:{port_c}\ntargets: []\ncross_node: {{enabled: true, budget: 1}}\n"),
    );
    let (log_a, log_b, log_c) = (dir.path("a.log"), dir.path("b.log"), dir.path("c.log"));
    let _b = serve_as("node-b", &b, &log_b);
    let _c = serve_as("node-c", &c_cfg, &log_c);
    wait_for(60, "the follower serving", &log_b, || {
        http_get(&format!("http://127.0.0.1:{port_b}/metrics"))
    });
    wait_for(60, "the budgeted follower serving", &log_c, || {
        http_get(&format!("http://127.0.0.1:{port_c}/metrics"))
    });
    let _a = serve_as("node-a", &a, &log_a);

    let spans = rx.wait_for(Duration::from_secs(60), |spans| {
        trace_with_remote(spans, "pod", "node-b", |r| {
            r.attr_str("tracepkt.outcome").as_deref() == Some("replied")
        })
        .is_some_and(|(_, t)| t.iter().filter(|s| node_of(s) == "node-b").count() >= 4)
    });
    let Some((root, trace)) = trace_with_remote(&spans, "pod", "node-b", |r| {
        r.attr_str("tracepkt.outcome").as_deref() == Some("replied")
    }) else {
        panic!(
            "no answered trace of the sender with the follower's spans in it; {} spans\nsender log:\n{}\nfollower log:\n{}",
            spans.len(),
            std::fs::read_to_string(&log_a).unwrap_or_default(),
            std::fs::read_to_string(&log_b).unwrap_or_default()
        );
    };
    let remote: Vec<&&Span> = trace.iter().filter(|s| node_of(s) == "node-b").collect();
    println!(
        "trace {}: {} spans from the sender, {} from the follower: {:?}",
        root.trace_id,
        trace.iter().filter(|s| node_of(s) == "node-a").count(),
        remote.len(),
        remote.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(node_of(root), "node-a");
    for s in &remote {
        assert_eq!(
            s.parent_span_id, root.span_id,
            "{} is not a child of the sender's probe span",
            s.name
        );
        assert_eq!(s.resource_str("service.name").as_deref(), Some("follower"));
        assert_eq!(
            s.attributes.get("tracepkt.remote").and_then(|v| v.as_bool()),
            Some(true)
        );
        assert_eq!(s.attr_str("tracepkt.origin").as_deref(), Some("198.18.160.1"));
    }
    // The follower saw the probe go out and its reply come back, in the pod's namespace too.
    let pod_inode = netns_inode(&ns) as i64;
    for dir in ["request", "reply"] {
        assert!(
            remote
                .iter()
                .any(|s| s.attr_str("tracepkt.direction").as_deref() == Some(dir)
                    && s.attr_int("tracepkt.netns.inode") == Some(pod_inode)),
            "no {dir} hop of the follower in the pod's namespace: {:?}",
            remote
                .iter()
                .map(|s| (&s.name, s.attr_str("tracepkt.direction")))
                .collect::<Vec<_>>()
        );
    }

    // Following other nodes' probes takes more of the programs' code and stack: every hook
    // that attaches without it must attach with it too.
    let attached = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("tracepkt_program_attached{"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let metrics_b = scrape(port_b);
    assert_eq!(
        attached(&metrics_b),
        attached(&scrape(port_a)),
        "{}",
        std::fs::read_to_string(&log_b).unwrap_or_default()
    );
    let hops = sum(&metrics_b, "tracepkt_remote_hops_total{origin_node=\"198.18.160.1\"");
    assert!(hops >= 4.0, "follower's remote hops: {hops}\n{metrics_b}");
    assert_eq!(
        sample(&metrics_b, "tracepkt_foreign_events_over_budget_total"),
        Some(0.0)
    );

    // One event a second is less than one probe's crossing: the rest is counted, not sent.
    let over = wait_for(30, "events over the budget counted", &log_c, || {
        sample(&scrape(port_c), "tracepkt_foreign_events_over_budget_total").filter(|v| *v > 0.0)
    });
    let metrics_c = scrape(port_c);
    let kept = sum(&metrics_c, "tracepkt_remote_hops_total{");
    let probes = sample(&scrape(port_a), "tracepkt_probes_sent_total{").unwrap_or(0.0);
    println!("budget 1/s: {kept} hops kept, {over} events over the budget, after {probes} probes");
    assert!(kept >= 1.0, "the budget lets one event a second through\n{metrics_c}");
}

// ---- two kernels: this machine and a VM on a bridge ----------------------------------------
//
// scripts/test.sh runs this with TRACEPKT_CROSSNODE_VM set to the VM's kernel series. The VM
// joins bridge tpkxnbr0 at 198.18.61.2 (this machine: .1) and holds three pods:
//   pod-b 198.18.163.2, routed over the bridge;
//   pod-c 198.18.164.2, routed through VXLAN 42 (198.18.64.0/24) both ways;
//   pod-d 198.18.165.2, whose input chain drops echo requests.
// This machine's pod-a (198.18.162.2) probes all three; both tracepkts export to one receiver
// here, each as its node (K8S_NODE_NAME).

const BRIDGE: &str = "tpkxnbr0";
const HOST_IP: &str = "198.18.61.1";
const VM_IP: &str = "198.18.61.2";

/// What the VM runs: its side of the topology, then `tracepkt serve` with cross_node on, until
/// this machine's tracepkt stops answering on the bridge (or 10 minutes pass).
const GUEST: &str = r#"set -x
io=$1; bin=$2; host_metrics=$3
ip link set lo up
ip addr add 198.18.61.2/24 dev eth0 && ip link set eth0 up
sysctl -qw net.ipv4.ip_forward=1
pod() { # name hostif net
    ip netns add "$1"
    ip link add "$2" type veth peer name eth0 netns "$1"
    ip addr add "$3.1/24" dev "$2" && ip link set "$2" up
    ip -n "$1" link set lo up
    ip -n "$1" addr add "$3.2/24" dev eth0 && ip -n "$1" link set eth0 up
    ip -n "$1" route add default via "$3.1"
}
pod tpk-xn-b tpkxnb0 198.18.163
pod tpk-xn-c tpkxnc0 198.18.164
pod tpk-xn-d tpkxnd0 198.18.165
ip route add 198.18.162.0/24 via 198.18.61.1
ip link add tpkxvx0 type vxlan id 42 dstport 4789 local 198.18.61.2 remote 198.18.61.1 dev eth0
ip addr add 198.18.64.2/24 dev tpkxvx0 && ip link set tpkxvx0 up
# pod-c's replies go back through the tunnel they came from
ip rule add iif tpkxnc0 table 100
ip route add 198.18.162.0/24 via 198.18.64.1 dev tpkxvx0 table 100
ip netns exec tpk-xn-d nft add table inet tpk
ip netns exec tpk-xn-d nft 'add chain inet tpk input { type filter hook input priority 0; }'
ip netns exec tpk-xn-d nft add rule inet tpk input icmp type echo-request drop
K8S_NODE_NAME=node-vm "$bin" serve --config "$io/vm.yaml" 2>"$io/vm-serve.log" &
serve=$!
set +x
for i in $(seq 600); do
    curl -sf -o /dev/null --max-time 2 http://127.0.0.1:19978/metrics && break
    kill -0 $serve || exit 1
    sleep 0.5
done
touch "$io/ready"
seen=0
for i in $(seq 1200); do
    kill -0 $serve || exit 1
    if curl -sf -o /dev/null --max-time 2 "$host_metrics"; then seen=1
    elif [ $seen = 1 ]; then break
    fi
    sleep 0.5
done
echo "this machine's tracepkt is gone: stopping"
curl -sf --max-time 5 http://127.0.0.1:19978/metrics >"$io/vm-metrics.txt"
kill -TERM $serve
wait $serve
"#;

#[test]
fn across_two_kernels_one_trace_holds_both_nodes_hops() {
    let test = "across_two_kernels_one_trace_holds_both_nodes_hops";
    require_privileges!(test);
    if std::env::var_os("TRACEPKT_VM_KERNEL").is_some() {
        skip(test, "runs on the host, which boots the VM for its other side");
        return;
    }
    let Ok(series) = std::env::var("TRACEPKT_CROSSNODE_VM") else {
        skip(
            test,
            "needs a VM on a bridge of this machine: scripts/test.sh runs it (TRACEPKT_CROSSNODE_VM=6.1)",
        );
        return;
    };
    if !have_tool(test, "nft") {
        return;
    }
    let mut c = Cleanup::new();
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    c.on_exit(&format!("sysctl -qw net.ipv4.ip_forward={}", forward.trim()));
    sh("sysctl -qw net.ipv4.ip_forward=1");
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    sh(&format!(
        "ip link add {BRIDGE} type bridge && ip addr add {HOST_IP}/24 dev {BRIDGE} && ip link set {BRIDGE} up"
    ));
    c.host_link(BRIDGE);
    sh(&format!(
        "mkdir -p /etc/qemu && (grep -qx 'allow {BRIDGE}' /etc/qemu/bridge.conf 2>/dev/null || echo 'allow {BRIDGE}' >>/etc/qemu/bridge.conf)"
    ));
    let pod_a = c.veth_ns("tpk-xn-a", "tpkxna0", "198.18.162");
    sh(&format!("ip -n {pod_a} route add default via 198.18.162.1"));
    c.host_link("tpkxvx0");
    sh(&format!(
        "ip link add tpkxvx0 type vxlan id 42 dstport 4789 local {HOST_IP} remote {VM_IP} dev {BRIDGE} && \
         ip addr add 198.18.64.1/24 dev tpkxvx0 && ip link set tpkxvx0 up"
    ));
    sh(&format!(
        "ip route add 198.18.163.0/24 via {VM_IP} && ip route add 198.18.165.0/24 via {VM_IP} && \
         ip route add 198.18.164.0/24 via 198.18.64.2 dev tpkxvx0"
    ));

    let rx = Receiver::grpc_on(HOST_IP.parse().unwrap());
    let dir = TempDir::new("crossnode-two-kernels");
    let port = free_port();
    write(
        &dir.path("vm.yaml"),
        &format!(
            "listen: 127.0.0.1:19978\ntargets: []\ncross_node: {{enabled: true}}\notlp:\n  endpoint: {}\n",
            rx.endpoint
        ),
    );
    write(&dir.path("guest.sh"), GUEST);
    let vm_log = dir.path("vm.log");
    let vm_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/vm.sh");
    let mut vm = Proc(
        Command::new(vm_script)
            .args(["run", "--bridge", BRIDGE, "--rwdir"])
            .arg(dir.path(""))
            .arg("--")
            .arg("bash")
            .arg(dir.path("guest.sh"))
            .arg(dir.path(""))
            .arg(env!("CARGO_BIN_EXE_tracepkt"))
            .arg(format!("http://{HOST_IP}:{port}/metrics"))
            .env("TRACEPKT_VM_SERIES", &series)
            .stdout(std::fs::File::create(&vm_log).unwrap())
            .stderr(std::fs::File::create(dir.path("vm.err")).unwrap())
            .spawn()
            .expect("start scripts/vm.sh"),
    );
    let guest_log = || {
        format!(
            "vm.sh:\n{}{}\nguest tracepkt:\n{}",
            std::fs::read_to_string(&vm_log).unwrap_or_default(),
            std::fs::read_to_string(dir.path("vm.err")).unwrap_or_default(),
            std::fs::read_to_string(dir.path("vm-serve.log")).unwrap_or_default()
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(400);
    while !dir.path("ready").exists() {
        if let Ok(Some(status)) = vm.0.try_wait() {
            panic!("the VM ended ({status}) before its tracepkt served\n{}", guest_log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the VM's tracepkt did not serve in time\n{}",
            guest_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let host_cfg = config(
        &dir,
        "host.yaml",
        &format!(
            "listen: {HOST_IP}:{port}\ninterval: 1s\ntimeout: 900ms\ncross_node: {{enabled: true}}\n\
             otlp:\n  endpoint: {}\ntargets:\n\
             \x20 - {{name: pod-b, address: 198.18.163.2, from: {{netns: {pod_a}}}}}\n\
             \x20 - {{name: pod-c, address: 198.18.164.2, from: {{netns: {pod_a}}}}}\n\
             \x20 - {{name: pod-d, address: 198.18.165.2, from: {{netns: {pod_a}}}}}\n",
            rx.endpoint
        ),
    );
    let host_log = dir.path("host.log");
    let host = serve_as("node-host", &host_cfg, &host_log);
    let replied = |r: &Span| r.attr_str("tracepkt.outcome").as_deref() == Some("replied");
    let vm_hops = |t: &[&Span], dir: &str| {
        t.iter()
            .filter(|s| node_of(s) == "node-vm" && s.attr_str("tracepkt.direction").as_deref() == Some(dir))
            .count()
    };
    let dropped_in_vm = |t: &[&Span]| {
        t.iter().any(|s| {
            node_of(s) == "node-vm"
                && (s.attr_str("tracepkt.drop.reason").is_some()
                    || s.attr_str("tracepkt.netfilter.verdict").as_deref() == Some("DROP"))
        })
    };
    let tunnelled = |t: &[&Span], node: &str| {
        t.iter()
            .any(|s| node_of(s) == node && s.attr_str("tracepkt.tunnel").as_deref() == Some("vxlan"))
    };
    let complete = |spans: &[Span]| {
        trace_with_remote(spans, "pod-b", "node-vm", replied).is_some_and(|(_, t)| vm_hops(&t, "reply") > 0)
            && trace_with_remote(spans, "pod-c", "node-vm", replied).is_some_and(|(_, t)| {
                tunnelled(&t, "node-host") && tunnelled(&t, "node-vm") && vm_hops(&t, "reply") > 0
            })
            && trace_with_remote(spans, "pod-d", "node-vm", |r| !replied(r)).is_some_and(|(_, t)| dropped_in_vm(&t))
    };
    let spans = rx.wait_for(Duration::from_secs(240), complete);
    let host_metrics = http_get(&format!("http://{HOST_IP}:{port}/metrics")).unwrap_or_default();
    drop(host);
    let ok = complete(&spans);
    let show = |target: &str| match trace_with_remote(&spans, target, "node-vm", |_| true) {
        Some((root, t)) => format!(
            "{target}: trace {} {}: {}",
            root.trace_id,
            root.attr_str("tracepkt.outcome").unwrap_or_default(),
            t.iter()
                .map(|s| format!(
                    "{}:{}{}",
                    node_of(s),
                    s.name,
                    s.attr_str("tracepkt.tunnel")
                        .map(|t| format!("[{t}]"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("{target}: no trace with the VM's spans"),
    };
    println!("{}\n{}\n{}", show("pod-b"), show("pod-c"), show("pod-d"));
    // The VM's side stops once this machine's tracepkt is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while vm.0.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        ok,
        "not every trace was complete ({} spans)\nthis machine's tracepkt:\n{}\n{}",
        spans.len(),
        std::fs::read_to_string(&host_log).unwrap_or_default(),
        guest_log()
    );

    // Each span carries its node, and the VM's are children of the sender's probe span.
    let (root, t) = trace_with_remote(&spans, "pod-b", "node-vm", replied).unwrap();
    for s in &t {
        let node = node_of(s);
        assert!(
            node == "node-host" || node == "node-vm",
            "span {} without its node",
            s.name
        );
        if node == "node-vm" {
            assert_eq!(s.parent_span_id, root.span_id, "{}", s.name);
            assert_eq!(s.attr_str("tracepkt.origin").as_deref(), Some("198.18.162.2"));
        }
    }
    assert!(vm_hops(&t, "request") > 0 && vm_hops(&t, "reply") > 0);
    // The dropped probe: a failed probe in the sender's metrics, its end in the VM's trace.
    let (_, t) = trace_with_remote(&spans, "pod-d", "node-vm", |r| !replied(r)).unwrap();
    let drop = t
        .iter()
        .find(|s| node_of(s) == "node-vm" && s.attr_str("tracepkt.drop.reason").is_some());
    println!(
        "pod-d's drop in the VM: {:?}",
        drop.map(|s| (&s.name, s.attr_str("tracepkt.drop.reason")))
    );
    assert_eq!(
        sample(&host_metrics, "tracepkt_probe_success{target=\"pod-d\""),
        Some(0.0),
        "{host_metrics}"
    );
    assert!(
        sample(
            &host_metrics,
            "tracepkt_probe_errors_total{target=\"pod-d\",reason=\"timeout\""
        )
        .is_some_and(|v| v > 0.0)
    );
    assert_eq!(
        sample(&host_metrics, "tracepkt_probe_success{target=\"pod-b\""),
        Some(1.0)
    );
    let vm_metrics = std::fs::read_to_string(dir.path("vm-metrics.txt")).unwrap_or_default();
    let remote = sum(&vm_metrics, "tracepkt_remote_hops_total{origin_node=\"198.18.162.2\"");
    println!("the VM counted {remote} hops of probes from 198.18.162.2");
    assert!(remote > 0.0, "the VM's remote hops by origin:\n{vm_metrics}");
}

/// A probe inside each kind of tunnel the programs look into: the tunnel's hop shows the tunnel
/// and its outer addresses, on the way out and back. Two namespaces joined by a veth carry the
/// tunnels; one tracepkt (cross_node on, so tunnels are looked into) probes across each. A
/// tunnel this kernel cannot make is skipped with its reason.
#[test]
fn a_probe_inside_vxlan_geneve_or_ipip_shows_the_tunnel_hop() {
    let test = "a_probe_inside_vxlan_geneve_or_ipip_shows_the_tunnel_hop";
    require_privileges!(test);
    let mut c = Cleanup::new();
    let a = c.netns("tpk-tun-a");
    let b = c.netns("tpk-tun-b");
    sh(&format!("ip -n {a} link add eth0 type veth peer name eth0 netns {b}"));
    addr_up(&a, "eth0", "198.18.166.1/24");
    addr_up(&b, "eth0", "198.18.166.2/24");
    let kinds = [
        (
            "vxlan",
            "type vxlan id 42 dstport 4789 local {l} remote {r} dev eth0",
            167,
        ),
        ("geneve", "type geneve id 42 remote {r}", 168),
        ("ipip", "type ipip local {l} remote {r}", 169),
    ];
    let (mut made, mut missing) = (Vec::new(), Vec::new());
    for (kind, spec, net) in kinds {
        let spec = |l: &str, r: &str| spec.replace("{l}", l).replace("{r}", r);
        let out = Command::new("ip")
            .args(["-n", &a, "link", "add", &format!("t{kind}")])
            .args(spec("198.18.166.1", "198.18.166.2").split_whitespace())
            .output()
            .unwrap();
        if !out.status.success() {
            missing.push(format!("{kind} ({})", String::from_utf8_lossy(&out.stderr).trim()));
            continue;
        }
        sh(&format!(
            "ip -n {b} link add t{kind} {}",
            spec("198.18.166.2", "198.18.166.1")
        ));
        addr_up(&a, &format!("t{kind}"), &format!("198.18.{net}.1/24"));
        addr_up(&b, &format!("t{kind}"), &format!("198.18.{net}.2/24"));
        made.push((kind, net));
    }
    assert!(
        !made.is_empty(),
        "no tunnel at all could be made; vxlan at least should"
    );
    if !missing.is_empty() {
        let kinds: Vec<&str> = missing.iter().filter_map(|m| m.split(' ').next()).collect();
        skip(
            &format!("{test} ({})", kinds.join(", ")),
            &format!("this kernel cannot make the devices: {}", missing.join("; ")),
        );
    }

    let rx = Receiver::grpc();
    let dir = TempDir::new("crossnode-tunnels");
    let port = free_port();
    let targets: String = made
        .iter()
        .map(|(kind, net)| format!("  - {{name: {kind}, address: 198.18.{net}.2, from: {{netns: {a}}}}}\n"))
        .collect();
    let cfg = config(
        &dir,
        "config.yaml",
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 500ms\ntimeout: 400ms\ncross_node: {{enabled: true}}\n\
             otlp:\n  endpoint: {}\ntargets:\n{targets}",
            rx.endpoint
        ),
    );
    let log = dir.path("serve.log");
    let _serve = serve_as("node-a", &cfg, &log);
    let tunnel_hop = |spans: &[Span], root: &Span, dir: &str, kind: &str| -> bool {
        spans.iter().any(|s| {
            s.trace_id == root.trace_id
                && s.attr_str("tracepkt.tunnel").as_deref() == Some(kind)
                && s.attr_str("tracepkt.direction").as_deref() == Some(dir)
                && s.attr_str("network.interface.name").as_deref() == Some("eth0")
        })
    };
    let seen = |spans: &[Span], kind: &str| {
        spans.iter().any(|root| {
            root.name == format!("probe {kind}")
                && root.attr_str("tracepkt.outcome").as_deref() == Some("replied")
                && tunnel_hop(spans, root, "request", kind)
                && tunnel_hop(spans, root, "reply", kind)
        })
    };
    let spans = rx.wait_for(Duration::from_secs(60), |spans| {
        made.iter().all(|(k, _)| seen(spans, k))
    });
    for (kind, _) in &made {
        let root = spans
            .iter()
            .find(|r| r.name == format!("probe {kind}") && seen(&spans, kind))
            .unwrap_or_else(|| {
                panic!(
                    "{kind}: no answered trace with the tunnel's hop both ways; {} spans\n{}",
                    spans.len(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let hops: Vec<String> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id && s.attributes.contains_key("tracepkt.hop.index"))
            .map(|s| {
                format!(
                    "{}{} {}->{}",
                    s.name,
                    s.attr_str("tracepkt.tunnel")
                        .map(|t| format!("[{t}]"))
                        .unwrap_or_default(),
                    s.attr_str("source.address").unwrap_or_default(),
                    s.attr_str("destination.address").unwrap_or_default()
                )
            })
            .collect();
        println!("{kind}: {}", hops.join(", "));
        let outer = spans
            .iter()
            .find(|s| s.trace_id == root.trace_id && s.attr_str("tracepkt.tunnel").as_deref() == Some(*kind))
            .expect("checked above");
        let pair = (outer.attr_str("source.address"), outer.attr_str("destination.address"));
        assert!(
            pair == (Some("198.18.166.1".into()), Some("198.18.166.2".into()))
                || pair == (Some("198.18.166.2".into()), Some("198.18.166.1".into())),
            "{kind}: the tunnel hop shows the outer addresses, not {pair:?}"
        );
    }
}
