//! The REST API's listener: accepts TCP connections, runs the TLS handshake
//! when TLS is on, and serves HTTP/1.1 on each connection with what the
//! connection negotiated ([`Connection`]) in every request's extensions.
//! On stop, the listener closes and open connections finish their requests.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::tls::{Connection, TlsServer};

/// A request's headers must arrive whole in this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `router` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsServer>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or memory: back off and keep serving
                    // the connections already open.
                    tracing::warn!(error = %e, "cannot accept a REST connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => http1(TokioIo::new(tcp), router, Connection::default(), watcher).await,
                Some(tls) => {
                    if let Some((stream, connection)) = tls.accept(tcp, peer).await {
                        http1(TokioIo::new(stream), router, connection, watcher).await;
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serve HTTP/1.1 on one connection until it closes (or, once stop is
/// asked for, until its request in progress is answered).
async fn http1<I>(io: I, router: Router, connection: Connection, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(connection.clone());
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(service));
    // An error here is the client's (a reset, a malformed request hyper
    // answered itself); nothing to do but close.
    let _ = watcher.watch(conn).await;
}
