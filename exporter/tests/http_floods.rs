//! `tracepkt serve` under abuse of its HTTP side, with `/metrics` scraped all the while from
//! another address: connections that never finish their headers, and a flood of connections
//! past the file descriptor limit. `/metrics` must keep answering within a generous bound
//! (5 s a scrape), tracepkt must keep running, and the flood must be cut.
//!
//! The floods come from 127.0.0.2 and up, the scraper from 127.0.0.1, all on loopback.
//! Needs root (the programs load first); skips with a reason otherwise.

mod common;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, TempDir, free_port, write};
use socket2::{Domain, Socket, Type};

const BIN: &str = env!("CARGO_BIN_EXE_tracepkt");
/// The file descriptor limit tracepkt runs with: the usual soft limit.
const NOFILE: u32 = 1024;

/// `tracepkt serve` with its file descriptor limit at [`NOFILE`].
fn serve(dir: &TempDir, port: u16, web: Option<&Path>) -> (Proc, std::path::PathBuf) {
    let config = dir.path("config.yaml");
    write(
        &config,
        &format!("listen: 127.0.0.1:{port}\ninterval: 1s\ntimeout: 500ms\ntargets:\n  - address: 127.0.0.1\n"),
    );
    let log = dir.path("serve.log");
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .args(["--", BIN, "serve", "--config"])
        .arg(&config);
    if let Some(web) = web {
        cmd.arg("--web-config").arg(web);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Proc(child), log)
}

/// A connection to the server from `from`.
fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
        Duration::from_secs(5),
    )?;
    Ok(s.into())
}

/// curl's answer to one scrape: (HTTP status, seconds taken).
fn scrape(port: u16, scheme_args: &[&str]) -> (String, f64) {
    scrape_within(port, scheme_args, 5)
}

fn scrape_within(port: u16, scheme_args: &[&str], secs: u32) -> (String, f64) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            &secs.to_string(),
        ])
        .args(scheme_args)
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

fn wait_serving(port: u16, log: &Path) {
    common::wait_for(120, "tracepkt answering /metrics", log, || {
        let (status, _) = scrape(port, &[]);
        (status == "200" || status == "401").then_some(())
    });
}

/// Scrapes `n` times a second apart; each must answer 200 in time.
fn scrapes_answer(port: u16, n: usize, args: &[&str], during: &str, log: &Path) {
    for i in 0..n {
        let (status, took) = scrape(port, args);
        println!("{during}: scrape {i}: {status} in {took:.2} s");
        assert_eq!(
            status,
            "200",
            "{during}: scrape {i} got {status:?} after {took:.2} s (curl gives up at 5 s)\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn socket_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Whether the server closed `s` (EOF or reset).
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let mut reader = s;
    match reader.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => closed(s),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn slow_headers_and_a_connection_flood_leave_metrics_answering() {
    let test = "slow_headers_and_a_connection_flood_leave_metrics_answering";
    require_privileges!(test);
    if !common::have_tool(test, "prlimit") || !common::have_tool(test, "curl") {
        return;
    }
    let dir = TempDir::new(test);
    let port = free_port();
    let (serve, log) = serve(&dir, port, None);
    wait_serving(port, &log);
    let pid = serve.0.id();

    // Slow headers: connections that start a request and never finish its headers, a byte
    // now and then.
    let mut slow: Vec<TcpStream> = (2..6u8)
        .flat_map(|host| (0..20).filter_map(move |_| connect_from(Ipv4Addr::new(127, 0, 0, host), port).ok()))
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    }
    scrapes_answer(port, 3, &[], "80 slow-header connections open", &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        let open = slow.iter().filter(|s| !closed(s)).count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} slow-header connections still open after 60 s",
            slow.len()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("every slow-header connection was closed by the server");
    drop(slow);

    // A flood of connections, twice the file descriptor limit, held open, from 4 addresses.
    let mut flood = Vec::new();
    let mut refused = 0;
    for host in 2..6u8 {
        for _ in 0..(2 * NOFILE / 4) {
            match connect_from(Ipv4Addr::new(127, 0, 0, host), port) {
                Ok(s) => flood.push(s),
                Err(_) => refused += 1,
            }
        }
    }
    println!(
        "flood: {} connections made, {refused} refused by the kernel",
        flood.len()
    );
    scrapes_answer(port, 5, &[], "connection flood", &log);
    let fds = socket_fds(pid);
    println!("tracepkt holds {fds} sockets");
    assert!(
        fds < NOFILE as usize / 2,
        "tracepkt holds {fds} sockets under the flood: connections are not bounded"
    );
    let closed_by_server = flood.iter().filter(|s| closed(s)).count();
    println!(
        "{closed_by_server} of {} flood connections already closed by the server",
        flood.len()
    );
    assert!(closed_by_server > 0, "no flood connection was closed");
    drop(flood);
    scrapes_answer(port, 2, &[], "after the flood", &log);
    let mut serve = serve;
    assert!(serve.0.try_wait().unwrap().is_none(), "tracepkt stopped");
}
