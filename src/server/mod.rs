//! Sockets and connections: [`run`] serves an already-bound listener until `shutdown`
//! completes, then stops accepting and lets requests in flight finish (bounded by
//! [`GRACE`]). Each connection speaks HTTP/1.1 (through [`guard`]) or HTTP/2 (prior
//! knowledge, or ALPN over TLS) through hyper. Past `max_connections`, a new connection gets
//! one 503 and is closed. Slow clients are dropped after `header_timeout` without holding up
//! anyone: each connection is its own task. Panics in handlers never reach here:
//! [`crate::http::App::handle`] turns them into 500s.

pub mod guard;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::http::App;
use crate::http::problem::{Problem, Slug};
use crate::store::Store;

/// How long requests in flight may take to finish after shutdown begins.
pub const GRACE: Duration = Duration::from_secs(30);

/// Counts open connections; a slot is freed when its [`Slot`] drops.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` completes.
pub async fn run<S: Store>(
    listener: TcpListener,
    app: Arc<App<S>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let settings = app.settings();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(64 * 1024);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(settings.header_timeout));
    let max_connections = settings.max_connections;
    let open = Arc::new(AtomicUsize::new(0));
    let tls = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = Slot(open.clone());
        let over = open.fetch_add(1, Ordering::Relaxed) >= max_connections;
        let (app, builder, tls, watcher) =
            (app.clone(), builder.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve(stream, peer, app, builder, watcher, over).await,
                Some(tls) => {
                    match tokio::time::timeout(app.settings().header_timeout, tls.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => serve(stream, peer, app, builder, watcher, over).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => tracing::warn!("requests still in flight after {GRACE:?}; stopping"),
    }
    Ok(())
}

/// Serves one connection: every request through `app`, or one 503 when `over` the cap.
async fn serve<S: Store, I>(
    stream: I,
    peer: SocketAddr,
    app: Arc<App<S>>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    over: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(guard::Guard::new(stream, app.settings().header_timeout));
    let result = if over {
        let service = service_fn(|_request| async {
            let mut response =
                Problem::new(Slug::Unavailable, "Too many connections; try again shortly.")
                    .header(RETRY_AFTER, HeaderValue::from_static("1"))
                    .header(CONNECTION, HeaderValue::from_static("close"))
                    .into_response("-");
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, Infallible>(response)
        });
        watcher.watch(builder.serve_connection(io, service).into_owned()).await
    } else {
        let service = service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(request, peer.ip()).await) }
        });
        watcher.watch(builder.serve_connection(io, service).into_owned()).await
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
