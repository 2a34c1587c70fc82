//! The API's public listener: axum's router served by hyper with the timeouts `axum::serve` has
//! no setting for. A client that sends its request head slowly (or opens a connection and sends
//! nothing) is closed after `HTTP_HEADER_TIMEOUT_MS`: hyper's own 30 s default takes effect only
//! with a timer, which `axum::serve` does not give it, so such a client held its connection (and
//! its task) for good. Slow bodies are the router's `HTTP_REQUEST_TIMEOUT_MS` (see `http`).
//!
//! Otherwise it does what `axum::serve` does with the features this build has: the peer's address
//! as `ConnectInfo`, HTTP/1.1, upgrades (WebSocket), and on shutdown no new connections while those open finish
//! their request.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish their
/// request (for at most `drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    drain: Duration,
    shutdown: CancellationToken,
) {
    // Closed when the server stops taking connections: each connection then shuts down
    // gracefully. Each connection holds a receiver of `done`, so its closing is awaited.
    let stopping = CancellationToken::new();
    let (done, open) = tokio::sync::watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req.map(Body::new)
        });
        let service = TowerToHyperService::new(service);
        let (stopping, open) = (stopping.clone(), open.clone());
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended");
                    }
                    return;
                }
                _ = stopping.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
            drop(open);
        });
    }
    drop(listener);
    stopping.cancel();
    drop(open);
    // Every connection's receiver is gone once it closed.
    let _ = tokio::time::timeout(drain, done.closed()).await;
}
