//! Sockets and connections: [`run`] serves an already-bound listener until `shutdown`
//! completes, then stops accepting and lets requests in flight finish (bounded by
//! `shutdown_grace`); an HTTP/1.1 answer written meanwhile says `Connection: close`. Each connection speaks HTTP/1.1 (through [`guard`]) or HTTP/2 (prior
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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http::header::{CONNECTION, HeaderValue, RETRY_AFTER};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::http::problem::{Problem, Slug};
use crate::http::{App, Body};
use crate::store::Store;
use crate::zerocopy;

/// Counts open connections; a slot is freed when its [`Slot`] drops.
struct Slot(prometheus::IntGauge);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` completes.
pub async fn run<S: Store>(
    listener: TcpListener,
    app: Arc<App<S>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_on(Loops::start()?, listener, app, tls, shutdown).await
}

/// [`run`] on loops already started.
pub async fn run_on<S: Store>(
    loops: Loops,
    listener: TcpListener,
    app: Arc<App<S>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let settings = app.settings();
    let protocols = Arc::new(Protocols::new(settings.header_timeout));
    let (max_connections, grace) = (settings.max_connections, settings.shutdown_grace);
    let open = app.metrics().connections().clone();
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
        // Handed to a loop, whose own reactor then watches it.
        let Ok(stream) = stream.into_std() else { continue };
        let over = usize::try_from(open.get()).unwrap_or(0) >= max_connections;
        open.inc();
        let slot = Slot(open.clone());
        let (app, protocols, tls, watcher) =
            (app.clone(), protocols.clone(), tls.clone(), graceful.watcher());
        loops.spawn(async move {
            let _slot = slot;
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { return };
            match tls {
                None => {
                    let stream = zerocopy::Stream(stream);
                    serve(stream, peer, app, protocols, watcher, over, true).await
                }
                // Boxed, like HTTP/2 in `serve`: the task of a plain HTTP/1 connection then
                // holds only what HTTP/1 needs.
                Some(tls) => {
                    Box::pin(async move {
                        match tokio::time::timeout(
                            app.settings().header_timeout,
                            tls.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => {
                                serve(stream, peer, app, protocols, watcher, over, false).await
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("requests still in flight after {grace:?}; stopping"),
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one, as Go's runtime does (nginx has
/// `worker_rlimit_nofile` for it): each connection takes a descriptor, and so does each
/// cached file kept open for sendfile, and the usual soft limit (1,024) is below the default
/// `max_connections`. Returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // (`None` is unlimited: a hard limit of none is left alone, as Linux refuses it.)
    if limit.maximum.is_some() && limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The event loops that serve connections: one thread per core (as the process may use
/// them), each running a single-threaded runtime, as nginx runs one worker per core. A
/// connection lives on one loop from accept to close, so waking its task for a read never
/// wakes another thread; with tokio's work-stealing scheduler instead, a small GET cost about
/// 10% more when server and clients share the cores. The accept loop deals new connections out
/// in turn. Dropping the loops stops them, and drops whatever they still run.
pub struct Loops {
    handles: Vec<tokio::runtime::Handle>,
    next: std::cell::Cell<usize>,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Loops {
    /// Starts the loops.
    pub fn start() -> io::Result<Loops> {
        let count = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new().name(format!("larder-loop-{i}")).spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        }
        Ok(Loops { handles, next: std::cell::Cell::new(0), _stop: stops })
    }

    /// Runs `connection` on the next loop.
    fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let next = self.next.get();
        self.next.set((next + 1) % self.handles.len());
        self.handles[next].spawn(connection);
    }
}

/// How connections are spoken: built once, shared by every connection task (a connection's
/// future keeps only what its own protocol needs, which is what an idle keep-alive
/// connection costs in memory).
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(header_timeout: Duration) -> Self {
        let mut http1 = http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
        // A write strategy that copies every body into hyper's own buffer: the case that must
        // not send what stands in for a file's bytes (see `zerocopy`), forced by a test.
        #[cfg(feature = "failpoints")]
        if fail::eval("http1-flatten", |_| ()).is_some() {
            http1.writev(false);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new()).keep_alive_interval(Some(header_timeout));
        Protocols { http1, http2 }
    }
}

/// Serves one connection: every request through `app`, or one 503 when `over` the cap.
/// Over `plain` TCP ([`zerocopy::Stream`]), HTTP/1 answers send file content with sendfile.
async fn serve<S: Store, I>(
    stream: I,
    peer: SocketAddr,
    app: Arc<App<S>>,
    protocols: Arc<Protocols>,
    watcher: hyper_util::server::graceful::Watcher,
    over: bool,
    plain: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut guard = guard::Guard::new(stream, app.settings().header_timeout);
    let h2 = guard.sniff_h2().await;
    let io = TokioIo::new(guard);
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
        match h2 {
            true => Box::pin(watcher.watch(protocols.http2.serve_connection(io, service))).await,
            false => watcher.watch(protocols.http1.serve_connection(io, service)).await,
        }
    } else {
        let app_sendfile = app.settings().sendfile;
        // The request's future is boxed: hyper keeps one slot of the service future's size
        // for the whole life of a connection, so an unboxed handler future (several KiB) would
        // cost every idle keep-alive connection that much memory.
        let service = service_fn(move |request| {
            let app = app.clone();
            Box::pin(async move { Ok::<_, Infallible>(app.handle(request, peer.ip()).await) })
                as Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>
        });
        match h2 {
            true => Box::pin(watcher.watch(protocols.http2.serve_connection(io, service))).await,
            false if plain && app_sendfile => {
                zerocopy::scope(watcher.watch(protocols.http1.serve_connection(io, service))).await
            }
            false => watcher.watch(protocols.http1.serve_connection(io, service)).await,
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
