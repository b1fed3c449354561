//! How a running proxy answers Unix signals: SIGHUP reloads its config file (see `reload`),
//! SIGTERM stops it gracefully and SIGINT fast (see `shutdown`). A second SIGTERM or SIGINT
//! during a graceful stop makes it fast.

use crate::server::Proxy;
use std::path::PathBuf;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

/// Serves signals until the proxy has stopped. `config` is the file SIGHUP reloads (None: SIGHUP
/// is logged and ignored).
pub async fn serve(proxy: Proxy, config: Option<PathBuf>) {
    if let Some(path) = &config {
        proxy.set_config_path(path.clone());
    }
    let mut hup = listen(SignalKind::hangup());
    let mut term = listen(SignalKind::terminate());
    let mut int = listen(SignalKind::interrupt());
    loop {
        tokio::select! {
            _ = next(&mut hup) => match &config {
                Some(path) => match proxy.reload().await {
                    Ok(done) => info!(file = %path.display(), "config reloaded: {done}"),
                    Err(e) => error!(file = %path.display(), "config not reloaded, the running one stays: {e}"),
                },
                None => warn!("SIGHUP: nothing to reload"),
            },
            _ = next(&mut term) => {
                info!("SIGTERM: stopping once open transactions end");
                proxy.begin_stop(true);
                break;
            }
            _ = next(&mut int) => {
                info!("SIGINT: stopping now");
                proxy.begin_stop(false);
                break;
            }
        }
    }
    let stopper = proxy.stopper();
    let hurry = async {
        tokio::select! {
            _ = next(&mut term) => {}
            _ = next(&mut int) => {}
        }
        info!("stopping now");
        crate::shutdown::advance(&stopper, crate::shutdown::Phase::Now);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = proxy.stopped() => {}
        _ = hurry => {}
    }
}

/// Ctrl-C or SIGTERM (for commands that only need to know when to end).
pub async fn wait_for_stop() {
    let mut term = listen(SignalKind::terminate());
    let mut int = listen(SignalKind::interrupt());
    tokio::select! {
        _ = next(&mut term) => {}
        _ = next(&mut int) => {}
    }
}

fn listen(kind: SignalKind) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot listen for signal {}: {e}", kind.as_raw_value());
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
