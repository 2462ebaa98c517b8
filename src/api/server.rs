//! Serving the router on a listener until shutdown, then stopping the service cleanly.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use super::router;
use crate::agent::Agents;
use crate::service::Service;

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install_metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let latency = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), latency)
                .and_then(|b| b.install_recorder());
            match built {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// Serves the API on `listener` until `shutdown` completes; in-flight requests get the
/// configured grace period, then the service stops its pipeline and saves its indexes.
pub async fn serve(
    service: Service,
    agents: Agents,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(service.config().server.shutdown_grace_secs);
    agents
        .start()
        .await
        .map_err(|e| std::io::Error::other(format!("cannot start agents: {e}")))?;
    let draining = tokio_util::sync::CancellationToken::new();
    let app = router(
        service.clone(),
        agents.clone(),
        install_metrics(),
        draining.clone(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Small answers (JSON, SSE events) go out at once rather than waiting on Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        draining.cancel();
        let _ = stop_tx.send(true);
        tracing::info!("shutting down: finishing in-flight requests");
    });
    let mut stop_rx2 = stop_rx.clone();
    let outcome = tokio::select! {
        r = server => r,
        _ = async move {
            let _ = stop_rx2.wait_for(|v| *v).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("grace period over; dropping remaining connections");
            Ok(())
        }
    };
    drop(stop_rx);
    // No new turn or task; those running finish (or are requeued at the next start) within
    // the grace period, their streams flushed; then the engine, the gateway and the indexes
    // stop and save, and their threads are joined.
    agents.shutdown();
    let supervisor = service.supervisor().clone();
    let left = supervisor.stop_tasks(grace).await;
    agents.release_leases().await;
    let svc = service.clone();
    let _ = tokio::task::spawn_blocking(move || svc.shutdown()).await;
    let threads = supervisor.join_threads(grace).await;
    tracing::info!(tasks_left = left, threads, "stopped");
    outcome
}
