//! The local server's listener: HTTP/1.1 on hyper, with the bounds a server facing untrusted
//! clients needs and `axum::serve` does not have.
//!
//! - Headers must arrive within the header timeout (from accept, or on a reused connection from
//!   the request's first byte); a reused connection waits at most the idle timeout for that byte.
//! - A request body may pause for at most the body timeout, and after that grace must keep an
//!   average of at least the minimum rate; a response the client stops reading is given up after
//!   the same timeout.
//! - At most `max_connections` are open; further clients wait in the kernel's backlog.
//! - On shutdown idle connections are closed at once, and requests in flight get a short grace.
//! - Sockets get `TCP_NODELAY`: a response's body, written after its headers, must not wait for
//!   the client's delayed ACK of the headers (Nagle), which cost ~40 ms per reused connection.
//! - A connection answered before its request body was read (a 413) is closed the way nginx's
//!   lingering close does it: the write side is shut, and what the client still sends is read and
//!   discarded for a bounded time and size. Closing with unread bytes makes the kernel send a
//!   reset, and clients still sending the body then report EPIPE instead of the answer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::app::{App, StartError};
use crate::config::{AuthMode, Config};
use crate::http::{Dispatcher, RouteGroup};

/// After answering a request whose body was left unread, the longest the server keeps reading
/// and discarding what the client still sends (nginx's `lingering_time`).
const LINGER_TIME: Duration = Duration::from_secs(30);
/// ... and the longest it waits for more of it (nginx's `lingering_timeout`).
const LINGER_QUIET: Duration = Duration::from_secs(5);
/// ... and the most it discards: a multiple of the largest body (a refused publish is usually only
/// somewhat over the limit), and at least `LINGER_MIN_BYTES` for small limits.
const LINGER_BODY_MULTIPLE: u64 = 4;
/// The least the lingering close discards, whatever the body limit.
const LINGER_MIN_BYTES: u64 = 64 << 20;

/// How long a stopping server waits for its connections' requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the local server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The application could not be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] io::Error),
}

/// The bounds the listener puts on each connection, from the configuration.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Time for a request's headers; `None` for no limit.
    pub header_timeout: Option<Duration>,
    /// Time a reused connection waits for its next request; `None` for no limit.
    pub idle_timeout: Option<Duration>,
    /// Longest pause in a request body or in the client's reading of a response.
    pub body_timeout: Option<Duration>,
    /// Least average rate of a request body after `body_timeout`, in bytes per second (0: none).
    pub body_min_bytes_per_second: u64,
    /// Most connections open at once (0: no cap).
    pub max_connections: usize,
    /// Most bytes discarded after answering a request whose body was not read.
    pub linger_bytes: u64,
}

impl ListenerSettings {
    /// The listener's settings in `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_timeout: config.server.header_timeout,
            idle_timeout: config.server.idle_timeout,
            body_timeout: config.server.body_timeout,
            body_min_bytes_per_second: config.server.body_min_bytes_per_second,
            max_connections: config.server.max_connections,
            linger_bytes: (config.limits.max_body_bytes as u64)
                .saturating_mul(LINGER_BODY_MULTIPLE)
                .max(LINGER_MIN_BYTES),
        }
    }
}

/// The local server, bound and ready to serve every route group.
pub struct LocalServer {
    listener: TcpListener,
    app: Dispatcher,
    settings: ListenerSettings,
    /// With local storage, the socket `registry-server sweep` asks through (`app::control`).
    #[cfg(unix)]
    control: Option<crate::app::control::ControlSocket>,
}

impl LocalServer {
    /// Binds the configured address and builds the application. With port 0 the public URL,
    /// unless configured, is the bound address.
    pub async fn bind(mut config: Config) -> Result<Self, ServeError> {
        // Warm reads of documents of tens of kilobytes are sent from sealed files, by reference.
        crate::zero_copy::enable();
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener.local_addr()?;
        config
            .server
            .public_url
            .get_or_insert_with(|| format!("http://{bound}"));
        if !bound.ip().is_loopback() && config.auth.mode == AuthMode::Open {
            tracing::warn!(%bound, "open mode on a non-loopback address: anyone who can reach it may publish");
        }
        let settings = ListenerSettings::from_config(&config);
        let data_dir = match &config.storage {
            crate::config::StorageConfig::Local { data_dir, .. } => Some(data_dir.clone()),
            crate::config::StorageConfig::Aws(_) => None,
        };
        let state = App::builder(config).build().await?;
        // After the build: the database is ours now, so a socket file there is a dead server's.
        #[cfg(unix)]
        let control = data_dir.and_then(|dir| {
            crate::app::control::ControlSocket::bind(&dir, state.clone())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, data_dir = %dir.display(), "no control socket: `registry-server sweep` needs this server stopped");
                })
                .ok()
        });
        #[cfg(not(unix))]
        drop(data_dir);
        Ok(Self {
            listener,
            app: Dispatcher::new(state, &RouteGroup::ALL),
            settings,
            #[cfg(unix)]
            control,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets open connections finish their requests
    /// (within a short grace).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        #[cfg(unix)]
        let control = self.control.map(|c| tokio::spawn(c.serve()));
        let served = serve(self.listener, self.app, self.settings, shutdown).await;
        #[cfg(unix)]
        if let Some(control) = control {
            // Dropping the socket removes its file.
            control.abort();
            let _ = control.await;
        }
        served?;
        Ok(())
    }
}

/// Completes on SIGTERM or ctrl-c (SIGINT). The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives in between (a supervisor's SIGTERM right after start-up) would otherwise
/// end the process at once, without closing the database, whose next open then repairs it.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut interrupt) = signals;
            let term = async {
                match term.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! { () = term => {}, () = interrupt => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What the listener hands each request to: the application's dispatch (what `LocalServer`
/// serves), or a whole router.
pub trait Serve: Clone + Send + Sync + Unpin + 'static {
    /// The response to `request`.
    fn respond(&self, request: axum::extract::Request) -> ResponseFuture;
}

impl Serve for Dispatcher {
    fn respond(&self, request: axum::extract::Request) -> ResponseFuture {
        Box::pin(futures_util::FutureExt::map(self.clone().call(request), Ok))
    }
}

impl Serve for Router {
    fn respond(&self, request: axum::extract::Request) -> ResponseFuture {
        let app = TowerToHyperService::new(self.clone());
        Box::pin(hyper::service::Service::call(&app, request))
    }
}

/// Serves `app` on `listener` with the bounds in `settings` until `shutdown` completes; then
/// stops accepting, closes idle connections, and waits (for a short grace at most) for the others
/// to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: impl Serve,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let settings = Arc::new(settings);
    let permits = Arc::new(Semaphore::new(match settings.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n.min(Semaphore::MAX_PERMITS),
    }));
    // Connections watch `signal` to start their graceful shutdown; each holds a `close`
    // receiver, so `close_tx.closed()` completes when the last one has ended.
    let (signal_tx, signal_rx) = watch::channel(());
    let (close_tx, close_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to be released rather than spin.
                tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let connection = Connection {
            app: app.clone(),
            settings: settings.clone(),
            signal: signal_rx.clone(),
        };
        let close = close_rx.clone();
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(permit);
            drop(close);
        });
    }
    drop(listener);
    signal_tx.send_replace(());
    drop(close_rx);
    // Idle connections close at once and requests in flight finish; a client still sending
    // (a slow publish may legitimately take minutes) is not waited for past the grace.
    if tokio::time::timeout(SHUTDOWN_GRACE, close_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = close_tx.receiver_count(),
            "connections still open after the shutdown grace are dropped"
        );
    }
    Ok(())
}

/// Errors of one incoming connection that leave the listener fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What the connection's IO wrapper, its timer and its request bodies share.
#[derive(Default)]
struct ConnShared {
    /// Reads that returned bytes: the timer tells an idle connection from one receiving headers.
    reads: AtomicU64,
    /// The last request's body was dropped before its end (answered without reading it).
    unread_body: AtomicBool,
}

struct Connection<S> {
    app: S,
    settings: Arc<ListenerSettings>,
    signal: watch::Receiver<()>,
}

/// A response in progress, boxed: taking the socket back (`poll_without_shutdown`) needs the
/// service's future to be `Unpin`.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl<S: Serve> Connection<S> {
    async fn run(mut self, stream: TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let shared = Arc::new(ConnShared::default());
        let settings = self.settings.clone();
        let io = TokioIo::new(Monitored::new(
            stream,
            shared.clone(),
            settings.body_timeout,
        ));
        let app = self.app.clone();
        let body_shared = shared.clone();
        let body_limits = BodyLimits {
            timeout: settings.body_timeout,
            min_bytes_per_second: settings.body_min_bytes_per_second,
        };
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            body_shared.unread_body.store(false, Ordering::Relaxed);
            // Most requests (every read) have no body: nothing to time or to leave unread.
            let request = request.map(|body| {
                if body.is_end_stream() {
                    Body::empty()
                } else {
                    Body::new(TimedBody::new(body, body_limits, &body_shared))
                }
            });
            app.respond(request)
        });
        let mut builder = http1::Builder::new();
        match settings.header_timeout.or(settings.idle_timeout) {
            // hyper arms its header timer whenever it waits for a request head; `HeadTimer`
            // turns that into the header and idle timeouts (hyper's own deadline is ignored).
            Some(any) => builder
                .timer(HeadTimer {
                    shared: shared.clone(),
                    header: settings.header_timeout,
                    idle: settings.idle_timeout,
                })
                .header_read_timeout(any),
            None => builder.header_read_timeout(None),
        };
        let mut conn = builder.serve_connection(io, service);
        let mut shutting_down = false;
        let result = loop {
            tokio::select! {
                result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break result,
                _ = self.signal.changed(), if !shutting_down => {
                    Pin::new(&mut conn).graceful_shutdown();
                    shutting_down = true;
                }
            }
        };
        match result {
            // A server shutting down does not wait for clients to finish sending.
            Ok(()) if shared.unread_body.load(Ordering::Relaxed) && !shutting_down => {
                let parts = conn.into_parts();
                let already = parts.read_buf.len() as u64;
                let stream = parts.io.into_inner().stream;
                linger(
                    stream,
                    settings.linger_bytes.saturating_sub(already),
                    self.signal,
                )
                .await;
            }
            Ok(()) => {}
            // Timeouts end up here too: a half-sent request, a client that stopped reading.
            Err(e) => tracing::debug!(error = %error_chain(&e), "connection closed"),
        }
    }
}

/// An error and its sources, `: `-separated (hyper's own message names only the stage).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Shuts the write side (the client has its whole answer), then reads and discards what the
/// client still sends, until it closes, goes quiet, or a bound is reached. Only then is the socket
/// closed: closing it with unread bytes would reset the connection under the client's feet.
async fn linger(mut stream: TcpStream, limit: u64, mut signal: watch::Receiver<()>) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 << 10];
    let mut discarded = 0u64;
    while discarded < limit {
        let quiet = (tokio::time::Instant::now() + LINGER_QUIET).min(until);
        tokio::select! {
            read = tokio::time::timeout_at(quiet, stream.read(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => discarded += n as u64,
                // Closed by the client, failed, or quiet for too long.
                _ => break,
            },
            _ = signal.changed() => break,
        }
    }
    tracing::debug!(discarded, "lingering close done");
}

/// The TCP stream, counting reads for the header timer and bounding how long a write may wait
/// for the client to read.
struct Monitored {
    stream: TcpStream,
    shared: Arc<ConnShared>,
    write_timeout: Option<Duration>,
    /// Armed while a write is pending.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Monitored {
    fn new(stream: TcpStream, shared: Arc<ConnShared>, write_timeout: Option<Duration>) -> Self {
        Self {
            stream,
            shared,
            write_timeout,
            write_stall: None,
        }
    }

    /// Passes a write's result on; a write that has waited past the timeout fails instead.
    fn bound_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_stall = None;
            return poll;
        }
        let Some(timeout) = self.write_timeout else {
            return poll;
        };
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Monitored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.reads.fetch_add(1, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Monitored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.bound_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A file-backed body (`zero_copy`) goes with `sendfile`, after what is queued before it.
        #[cfg(target_os = "linux")]
        if let Some((i, file, offset)) = bufs.iter().enumerate().find_map(|(i, buf)| {
            crate::zero_copy::region_of(buf).map(|(file, offset)| (i, file, offset))
        }) {
            let poll = poll_send_file(&self.stream, cx, &bufs[..i], &file, offset, bufs[i].len());
            return self.bound_write(cx, poll);
        }
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.bound_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper queues headers and body chunks and sends them in one writev only if this holds.
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.bound_write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Writes `head` and then `len` bytes of `file` from `offset` with `sendfile`, as far as the
/// socket takes them now; the count written, as `poll_write_vectored` answers.
#[cfg(target_os = "linux")]
fn poll_send_file(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    head: &[io::IoSlice<'_>],
    file: &std::os::fd::OwnedFd,
    offset: u64,
    len: usize,
) -> Poll<io::Result<usize>> {
    use rustix::net::{SendAncillaryBuffer, SendFlags};
    let head_len: usize = head.iter().map(|b| b.len()).sum();
    loop {
        std::task::ready!(stream.poll_write_ready(cx))?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let mut written = 0;
            if head_len > 0 {
                // MSG_MORE: the head waits for the body rather than going in a segment of its own
                // (the socket has TCP_NODELAY).
                written = rustix::net::sendmsg(
                    stream,
                    head,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::MORE | SendFlags::NOSIGNAL,
                )?;
                if written < head_len {
                    return Ok(written);
                }
            }
            let mut offset = offset;
            match rustix::fs::sendfile(stream, file, Some(&mut offset), len) {
                Ok(n) => {
                    crate::zero_copy::record_sent(n);
                    Ok(written + n)
                }
                // The head went: report it, and meet the error (or the full socket) again on the
                // next call.
                Err(_) if written > 0 => Ok(written),
                Err(e) => Err(e.into()),
            }
        });
        // On WouldBlock `try_io` has cleared the readiness: poll it again, which registers
        // this task to be woken when the socket drains.
        if !matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return Poll::Ready(sent);
        }
    }
}

/// hyper's timer for one connection. hyper arms it whenever it starts waiting for a request
/// head; the sleep it returns ends at the header timeout after accept for the first request, and
/// on a reused connection at the idle timeout until a byte arrives, then at the header timeout
/// after that byte (as nginx's keepalive and client_header timeouts do).
#[derive(Clone)]
struct HeadTimer {
    shared: Arc<ConnShared>,
    header: Option<Duration>,
    idle: Option<Duration>,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, _duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep::arm(self))
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep::arm(self))
    }
}

struct HeadSleep {
    shared: Arc<ConnShared>,
    header: Option<Duration>,
    /// `reads` when armed, while still waiting for the request's first byte.
    idle_since_reads: Option<u64>,
    /// `None`: no limit in the current phase.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HeadSleep {
    fn arm(timer: &HeadTimer) -> Self {
        let reads = timer.shared.reads.load(Ordering::Relaxed);
        // Nothing read yet: the connection's first request, timed from accept.
        let (idle_since_reads, limit) = match reads {
            0 => (None, timer.header),
            n => (Some(n), timer.idle),
        };
        Self {
            shared: timer.shared.clone(),
            header: timer.header,
            idle_since_reads,
            sleep: limit.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this right after each read that left the head incomplete, so the first
        // byte of a request is seen here when it arrives.
        if let Some(reads) = self.idle_since_reads
            && self.shared.reads.load(Ordering::Relaxed) != reads
        {
            self.idle_since_reads = None;
            self.sleep = self.header.map(|d| Box::pin(tokio::time::sleep(d)));
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// Bounds on how slowly a request body may arrive.
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    /// Longest pause, and the grace before the minimum rate applies.
    timeout: Option<Duration>,
    min_bytes_per_second: u64,
}

/// A request body too slow for the listener's bounds, or broken.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Read(#[from] hyper::Error),
    #[error(
        "the request body arrived too slowly ({received} bytes in {elapsed_s} s): this registry \
         waits at most {timeout_s} s for more of it and then needs an average of at least \
         {min_rate} bytes/s (REGISTRY_BODY_TIMEOUT_SECONDS, REGISTRY_BODY_MIN_BYTES_PER_SECOND)"
    )]
    TooSlow {
        received: u64,
        elapsed_s: u64,
        timeout_s: u64,
        min_rate: u64,
    },
}

/// A request body under `BodyLimits`, which also records on the connection whether it was
/// dropped before its end. Its clock starts when the handler first reads it, so time spent
/// before (deciding authorisation) is not charged to the client.
struct TimedBody {
    inner: Incoming,
    limits: BodyLimits,
    shared: Arc<ConnShared>,
    started: Option<Instant>,
    last_data: Option<Instant>,
    received: u64,
    finished: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, limits: BodyLimits, shared: &Arc<ConnShared>) -> Self {
        let finished = inner.is_end_stream();
        Self {
            inner,
            limits,
            shared: shared.clone(),
            started: None,
            last_data: None,
            received: 0,
            finished,
            sleep: None,
        }
    }

    /// When the body must have made progress by: at most `timeout` after the last data, and
    /// `timeout` plus the time `received` bytes take at the minimum rate after the start.
    fn deadline(&self, started: Instant, timeout: Duration) -> Instant {
        let stall = self.last_data.unwrap_or(started) + timeout;
        match self.limits.min_bytes_per_second {
            0 => stall,
            rate => {
                // Byte counts and rates stay far below 2^52, where f64 is exact.
                #[allow(clippy::cast_precision_loss)]
                let earned = Duration::from_secs_f64(self.received as f64 / rate as f64);
                stall.min(started + timeout + earned)
            }
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        let started = *this.started.get_or_insert(now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.last_data = Some(now);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => {
                this.finished = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let Some(timeout) = this.limits.timeout else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(this.deadline(started, timeout));
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // The client is too slow to be worth a lingering close: it is simply closed.
                this.finished = true;
                Poll::Ready(Some(Err(BodyError::TooSlow {
                    received: this.received,
                    elapsed_s: now.duration_since(started).as_secs(),
                    timeout_s: timeout.as_secs(),
                    min_rate: this.limits.min_bytes_per_second,
                })))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if !self.finished && !self.inner.is_end_stream() {
            self.shared.unread_body.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_configuration() {
        let config = Config::from_lookup(|key| match key {
            "REGISTRY_HEADER_TIMEOUT_SECONDS" => Some("5".into()),
            "REGISTRY_IDLE_TIMEOUT_SECONDS" => Some("0".into()),
            "REGISTRY_MAX_BODY_BYTES" => Some("1000".into()),
            _ => None,
        })
        .unwrap();
        let settings = ListenerSettings::from_config(&config);
        assert_eq!(settings.header_timeout, Some(Duration::from_secs(5)));
        assert_eq!(settings.idle_timeout, None);
        assert_eq!(settings.body_timeout, Some(Duration::from_secs(30)));
        assert_eq!(settings.body_min_bytes_per_second, 16 << 10);
        assert_eq!(settings.max_connections, 512);
        assert_eq!(settings.linger_bytes, 64 << 20);
    }

    /// Reads one response with a `Content-Length` from `client`: its head and its body.
    async fn read_response(client: &mut TcpStream, buffered: &mut Vec<u8>) -> (String, Vec<u8>) {
        let mut chunk = vec![0u8; 64 << 10];
        let head_end = loop {
            if let Some(i) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the head ended");
            buffered.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buffered.drain(..head_end).collect()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a content-length")
            .parse()
            .unwrap();
        while buffered.len() < length {
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the body ended");
            buffered.extend_from_slice(&chunk[..n]);
        }
        let body = buffered.drain(..length).collect();
        (head, body)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_file_backed_body_is_sent_whole_with_sendfile_across_partial_writes() {
        crate::zero_copy::enable();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let backed = crate::zero_copy::file_backed(&[&body]).expect("file-backed");
        let app = Router::new().route(
            "/big",
            axum::routing::get(move || std::future::ready(backed.clone())),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = ListenerSettings::from_config(&Config::from_lookup(|_| None).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, settings, async {
            let _ = stopped.await;
        }));
        let before = crate::zero_copy::sent();

        // A small receive window: the server's socket fills, its writes come back partial and
        // are resumed when the client reads. Two requests on one connection: the head of the
        // second response follows the first body.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        client
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\nGET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffered = Vec::new();
        for _ in 0..2 {
            let (head, got) = read_response(&mut client, &mut buffered).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(got == body, "the body arrives whole and in order");
        }
        assert!(buffered.is_empty());
        // The bodies went by sendfile, but for a last piece shorter than the least looked up
        // (the count is process-wide: at least ours).
        let least = body.len() - crate::zero_copy::MIN_SENT_BYTES;
        assert!(crate::zero_copy::sent() - before >= 2 * least as u64);

        drop(client);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
