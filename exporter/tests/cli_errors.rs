//! Usage and set-up errors: exit status 2 and a message that says what to do.

mod common;

use std::process::Command;

use common::{BIN, describe};

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["trace"],
        vec!["trace", "--count", "0", "127.0.0.1"],
        vec!["trace", "--timeout", "-1", "127.0.0.1"],
        vec!["trace", "-4", "-6", "x"],
        vec!["bogus"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn unresolvable_target_exits_2() {
    let out = Command::new(BIN)
        .args(["trace", "no-such-host.invalid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot resolve no-such-host.invalid"),
        "{}",
        describe(&out)
    );
    let out = Command::new(BIN).args(["trace", "-6", "127.0.0.1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn not_root_is_a_setup_error() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        if !common::have_tool("not_root_is_a_setup_error", "setpriv") {
            return;
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let out = cmd.args(["trace", "127.0.0.1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must run as root"),
        "{}",
        describe(&out)
    );
}
