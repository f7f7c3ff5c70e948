//! Work done inside another network namespace: a short-lived thread enters the namespace,
//! does the work (creates a socket, most often), and ends. A socket keeps the namespace it was
//! created in, so everything after (binding, connecting, sending) happens there, while no
//! thread of tracepkt's own ever runs in a namespace other than tracepkt's.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context as _;

/// Runs `make` in the network namespace `ns` (a file such as `/run/netns/NAME`), or here.
pub async fn in_netns<T: Send + 'static>(
    ns: Option<&Path>,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let Some(ns) = ns else {
        return Ok(make()?);
    };
    let path = ns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tracepkt-netns".into())
        .spawn(move || {
            // This thread enters the namespace and ends there: it never comes back to run
            // anything else of tracepkt's.
            let r = enter(&path).and_then(|()| make());
            let _ = tx.send(r);
        })
        .context("starting a thread to enter the namespace")?;
    let made = rx.await.context("the namespace thread ended without an answer")?;
    made.with_context(|| format!("in network namespace {}", ns.display()))
}

fn enter(ns: &Path) -> io::Result<()> {
    let f = std::fs::File::open(ns)?;
    // SAFETY: setns on a file descriptor this thread owns; CLONE_NEWNET only changes this
    // thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
