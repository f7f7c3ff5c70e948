//! `tracepkt serve`: probes every configured target on its schedule and serves what the
//! journeys showed on `/metrics`, the page and its API.
//!
//! Start-up builds the engine, the exporters and the server (`start`), each target runs in
//! a task of its own with an echo id of its own (`target`), SIGHUP reloads the config: targets
//! that stay keep their tag, so their kernel counters continue (`fleet`); SIGTERM and SIGINT
//! end it all (`shutdown`).

mod fleet;
mod shutdown;
mod start;
mod target;

use std::sync::Arc;

use probe_common::Mechanism;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use self::fleet::Fleet;
use self::shutdown::shutdown_signal;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::export::board::Board;
use crate::export::health::Health;
use crate::export::web::Web;
use crate::export::{http, server};

/// Runs the exporter. `mechanisms` from the command line, when given, override the config's.
pub async fn run(args: ServeArgs, mechanisms: Vec<Mechanism>) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if !config.discovery.is_empty() {
        warn!("discovery: is checked, but this build does not run its sources: only targets: are probed");
    }
    if let Some(ip) = args.listen_address {
        config.listen.set_ip(ip);
    }
    let web = args.web_config.as_deref().map(Web::load).transpose()?;
    let health = Health::new();
    health.watch_panics();
    let node = start::build(&config, mechanisms).await?;
    let listener = start::listen(&config, web.as_deref())?;
    let board = Arc::new(Board::new(config.otlp.as_ref().and_then(|o| o.trace_url.clone())));
    let mut fleet = Fleet::new(
        node.kit.clone(),
        node.metrics.clone(),
        board.clone(),
        node.tracer.clone(),
        health.clone(),
    );
    fleet.apply(&config.targets)?;
    let mut server = server::serve(listener, http::router(node.metrics.clone(), board), health, web)?;

    let mut hup = signal(SignalKind::hangup())?;
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = hup.recv() => fleet.reload(&args.config, &config, args.listen_address),
            () = &mut shutdown => break,
            ended = &mut server.task => {
                // Probing on while nothing can be scraped would look healthy from the node and
                // be blind from outside: stop, and say why.
                let why = match ended {
                    Ok(Ok(())) => "it ended".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                let listen = config.listen;
                error!("the HTTP server on {listen} stopped ({why}); exiting");
                shutdown::stop(fleet, &node, &server).await;
                anyhow::bail!("the HTTP server on {listen} stopped: {why}");
            }
        }
    }
    info!("shutting down");
    shutdown::stop(fleet, &node, &server).await;
    shutdown::drain(server).await;
    Ok(())
}
