//! DNS probes: a small DNS responder in a namespace answers `web.shop.test` with one address;
//! a target expecting that address passes, one expecting another fails, and a server whose
//! namespace drops DNS times out with the query's last hop shown.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

const NAME: &str = "web.shop.test";
const ANSWER: [u8; 4] = [198, 18, 134, 10];

/// Answers A queries for `NAME` with `ANSWER` (TTL 30), anything else with NXDOMAIN, from
/// inside network namespace `ns`, until dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(ns: &str, addr: &str) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let ns_file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let (addr, flag) = (addr.to_owned(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on a file this thread owns; it changes only this thread's namespace,
            // and the thread ends with the responder.
            assert_eq!(unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let socket = UdpSocket::bind((addr.as_str(), 53)).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.queries = q.queries.clone();
                match q.queries.first() {
                    Some(query)
                        if query.query_type() == RecordType::A
                            && query.name().to_string().trim_end_matches('.') == NAME =>
                    {
                        let [a, b, c, d] = ANSWER;
                        r.answers.push(Record::from_rdata(
                            query.name().clone(),
                            30,
                            RData::A(A::new(a, b, c, d)),
                        ));
                    }
                    _ => r.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = socket.send_to(&r.to_vec().unwrap(), from);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the responder started");
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One test at a time: they share the namespaces.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The responder's namespace (198.18.134.2) and a silent one whose input drops DNS
/// (198.18.135.2).
fn topology(c: &mut Cleanup) -> Responder {
    let answering = c.veth_ns("tpkdns-a", "tpkdnsa", "198.18.134");
    let silent = c.veth_ns("tpkdns-b", "tpkdnsb", "198.18.135");
    nft_input_rule(&silent, "udp dport 53 drop");
    Responder::start(&answering, "198.18.134.2")
}

#[test]
fn trace_asks_and_checks_the_answer_and_shows_where_an_unanswered_query_stopped() {
    let test = "trace_asks_and_checks_the_answer_and_shows_where_an_unanswered_query_stopped";
    require_privileges!(test);
    if !have_tool(test, "nft") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cleanup::new();
    let _responder = topology(&mut c);

    let (out, hops) = trace_json(None, &["--dns", NAME, "--server", "198.18.134.2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains(&format!("{NAME}/A: NOERROR [198.18.134.10], ttl 30s")),
        "{}",
        describe(&out)
    );
    // The padded query is followed into the server's namespace.
    let server_ns = netns_inode("tpkdns-a");
    assert!(
        path(&hops).contains(&hop("request", "rx", "eth0", server_ns)),
        "the query was not followed to the server: {}",
        describe(&out)
    );

    let (out, _) = trace_json(None, &["--dns", "nothing.shop.test", "--server", "198.18.134.2"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NXDOMAIN"),
        "{}",
        describe(&out)
    );

    let (out, hops) = trace_json(None, &["--dns", NAME, "--server", "198.18.135.2", "--timeout", "0.5"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let silent_ns = netns_inode("tpkdns-b");
    assert!(
        stderr.contains(&format!("no reply; last seen in netns {silent_ns}")),
        "{}",
        describe(&out)
    );
    assert!(
        path(&hops).contains(&hop("request", "rx", "eth0", silent_ns)),
        "{}",
        describe(&out)
    );
}

#[test]
fn serve_exports_the_answer_check() {
    let test = "serve_exports_the_answer_check";
    require_privileges!(test);
    if !have_tool(test, "nft") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cleanup::new();
    let _responder = topology(&mut c);
    let dir = TempDir::new(test);
    let port = free_port();
    let config = dir.path("config.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 500ms\ntimeout: 400ms\ntargets:\n\
             \x20 - {{name: right, protocol: dns, query: {NAME}, server: 198.18.134.2, expect: {{answer: [198.18.134.10]}}}}\n\
             \x20 - {{name: wrong, protocol: dns, query: {NAME}, server: 198.18.134.2, expect: {{answer: [198.18.134.99]}}}}\n\
             \x20 - {{name: any, protocol: dns, query: {NAME}, server: 198.18.134.2, expect: {{answer: any}}}}\n\
             \x20 - {{name: silent, protocol: dns, query: {NAME}, server: 198.18.135.2}}\n"
        ),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    let get = |t: &str, s: &str| sample(t, s);
    let t = wait_for(120, "every DNS target probed", &log, || {
        let t = scrape(port);
        (get(&t, "tracepkt_dns_answer_ok{target=\"right\"}").is_some()
            && get(&t, "tracepkt_dns_answer_ok{target=\"wrong\"}").is_some()
            && get(&t, "tracepkt_dns_answer_ok{target=\"any\"}").is_some()
            && get(&t, "tracepkt_probe_errors_total{target=\"silent\",reason=\"timeout\"}").unwrap_or(0.0) >= 1.0)
            .then_some(t)
    });
    println!(
        "{}",
        t.lines()
            .filter(|l| l.starts_with("tracepkt_dns") || l.starts_with("tracepkt_probe_success"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(get(&t, "tracepkt_dns_answer_ok{target=\"right\"}"), Some(1.0), "{t}");
    assert_eq!(get(&t, "tracepkt_dns_answer_ok{target=\"any\"}"), Some(1.0), "{t}");
    assert_eq!(get(&t, "tracepkt_dns_answer_ok{target=\"wrong\"}"), Some(0.0), "{t}");
    // The wrong answer still came: the probe itself succeeded.
    assert_eq!(get(&t, "tracepkt_probe_success{target=\"wrong\"}"), Some(1.0), "{t}");
    assert_eq!(
        get(&t, "tracepkt_dns_answer_ttl_seconds{target=\"right\"}"),
        Some(30.0),
        "{t}"
    );
    assert!(get(&t, "tracepkt_dns_responses_total{target=\"right\",rcode=\"NOERROR\"}").unwrap_or(0.0) >= 1.0);
    assert_eq!(get(&t, "tracepkt_probe_success{target=\"silent\"}"), Some(0.0), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("tracepkt_last_hop_info{target=\"silent\"") && l.contains("netns=\"tpkdns-b\"")),
        "the silent server's last hop is not its namespace:\n{t}"
    );
    let journeys: serde_json::Value = serde_json::from_str(
        &http_get(&format!("http://127.0.0.1:{port}/api/targets/wrong/journeys")).expect("journeys"),
    )
    .unwrap();
    let violation = journeys["journeys"][0]["expect_violation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        violation,
        format!("DNS {NAME}/A: the answer [198.18.134.10] lacks 198.18.134.99"),
        "{journeys:#}"
    );
}
