//! The operational surface around a bound [`Server`]: the admin listener, the reload
//! triggers (SIGHUP, file watch, `POST /reload`) and readiness during shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::admin::{AdminListener, AdminState, Readiness};
use crate::reload::{Reloader, Trigger};
use crate::server::{BindError, Server};

/// Serves `server` until `shutdown` completes, with the admin listener and hot reload
/// of the config file at `path`. `on_admin_bound` receives the admin listener's
/// address, when the config has one, once the gateway is ready and before serving
/// starts.
///
/// Fails only when the admin listener cannot be bound.
pub async fn serve(
    server: Server,
    path: &Path,
    shutdown: impl Future<Output = ()>,
    on_admin_bound: impl FnOnce(SocketAddr),
) -> Result<(), BindError> {
    let gateway = server.gateway();
    let metrics = server.metrics();
    let admin_config = gateway.load().config().admin.clone();
    let tls = server.tls();
    let reloader = Arc::new(
        Reloader::new(path, Arc::clone(&gateway), Arc::clone(&metrics)).with_tls(Arc::clone(&tls)),
    );
    let readiness = Arc::new(Readiness::default());

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut admin_address = None;
    tasks.push(tokio::spawn(tls.watch(Arc::clone(&gateway))));
    if let Some(admin) = admin_config {
        let bind_error = |source| BindError {
            listener: "admin".to_owned(),
            address: admin.address.clone(),
            source,
        };
        // The core already rejected an invalid admin address.
        let address: SocketAddr = admin.address.parse().map_err(|_| {
            bind_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "invalid socket address",
            ))
        })?;
        let listener = AdminListener::bind(address).await.map_err(bind_error)?;
        tracing::info!(address = %listener.address(), "admin listener bound");
        admin_address = Some(listener.address());
        let state = Arc::new(AdminState {
            gateway,
            metrics,
            clock: server.clock(),
            cache: server.response_cache(),
            purge_caches: server.all_response_caches(),
            key_value: server.key_value(),
            reloader: Arc::clone(&reloader),
            readiness: Arc::clone(&readiness),
        });
        tasks.push(tokio::spawn(listener.serve(state)));
    }
    tasks.push(tokio::spawn(Arc::clone(&reloader).watch()));
    tasks.push(tokio::spawn(crate::discovery::supervise(
        Arc::clone(&reloader),
        server.metrics(),
        server.key_value(),
    )));
    tasks.push(tokio::spawn(crate::health_check::supervise(
        server.gateway(),
        server.metrics(),
        reloader.reloaded(),
    )));
    // The handler is installed before the gateway reports ready, because SIGHUP's
    // default action ends the process.
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => tasks.push(tokio::spawn(reload_on_sighup(
            hangup,
            Arc::clone(&reloader),
        ))),
        Err(error) => tracing::error!(
            %error,
            "failed to listen for SIGHUP; reload through the admin listener or the file watch"
        ),
    }

    readiness.set_ready();
    // Announced only once ready, so that a supervisor reading the address finds
    // `/readyz` already returning 200.
    if let Some(address) = admin_address {
        on_admin_bound(address);
    }
    let draining = Arc::clone(&readiness);
    server
        .serve(async move {
            shutdown.await;
            draining.set_draining();
        })
        .await;
    // The admin listener keeps responding to `/readyz` with 503 during the drain,
    // and stops only now.
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Reloads the config on every SIGHUP, the usual signal for it in Unix daemons.
#[cfg(unix)]
async fn reload_on_sighup(mut hangup: tokio::signal::unix::Signal, reloader: Arc<Reloader>) {
    while hangup.recv().await.is_some() {
        tracing::info!("received SIGHUP, reloading the config");
        let reloader = Arc::clone(&reloader);
        // The outcome is logged and counted by `reload` itself.
        let _ = tokio::task::spawn_blocking(move || reloader.reload(Trigger::Signal)).await;
    }
}
