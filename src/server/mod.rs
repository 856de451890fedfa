//! Listeners, connections and shutdown.
//!
//! Every worker accepts from every listener; each connection is its own task speaking HTTP/1.1
//! or HTTP/2 (ALPN on TLS, prior knowledge on plain TCP). Each request is answered by the
//! gateway in force when it arrives ([`reload::Live`]), so a configuration reload applies to the
//! next request of an open connection. Shutdown stops accepting at once, asks every connection
//! to finish its in-flight requests, and gives up after `shutdown_grace`.

mod balance;
mod connection;
pub mod control;
pub(crate) mod framing;
mod parking;
pub mod reload;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::StoreBackend;
use crate::runtime::{coarse_timer, workers};
use crate::store::postgres::PgStore;
use crate::store::redb::RedbStore;
use connection::{Connection, Hold};
use reload::Live;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS or upstream set-up failed.
    #[error("{0}")]
    Setup(String),
}

/// A started gateway: its bound addresses and the means to stop it.
///
/// Dropping it starts the same graceful shutdown as [`RunningGateway::stop`], without waiting
/// for it: a gateway nobody holds any more must not keep its listeners, its worker threads or the
/// database lock (which a parked connection would otherwise keep alive through the settings it
/// holds).
pub struct RunningGateway {
    /// Where plain HTTP is served, if configured.
    pub http_addr: Option<SocketAddr>,
    /// Where HTTPS is served, if configured.
    pub https_addr: Option<SocketAddr>,
    /// Where `/metrics` is served, if `[metrics] listen` is configured.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    live: Arc<Live>,
}

impl RunningGateway {
    /// The gateway in force, to reload its configuration or rotate its session key.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// A token that, when cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts a graceful shutdown and waits for it to finish. When it returns, the listeners and
    /// the control socket are closed, the worker threads have ended and the database is
    /// released (unless the caller still holds a [`RunningGateway::live`] handle).
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the gateway has shut down (after its token was cancelled), with everything it
    /// held released, as after [`RunningGateway::stop`].
    pub async fn wait(mut self) {
        if let Err(e) = (&mut self.task).await {
            tracing::error!(error = %e, "gateway task failed");
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The store `[store] backend` names. Opening PostgreSQL connects and migrates, which waits on
/// the network: it runs on a blocking thread.
async fn open_store(config: &Config) -> Result<Arc<dyn crate::store::Store>, StartError> {
    match &config.store.backend {
        StoreBackend::Redb => {
            let store =
                RedbStore::open(&config.data_dir).map_err(|e| StartError::Setup(e.to_string()))?;
            tracing::info!(path = %store.path().display(), "database open");
            Ok(Arc::new(store))
        }
        StoreBackend::Postgres(pg) => {
            let pg = pg.clone();
            let store = tokio::task::spawn_blocking(move || PgStore::open(&pg))
                .await
                .map_err(|e| StartError::Setup(format!("opening the database: {e}")))?
                .map_err(|e| StartError::Setup(e.to_string()))?;
            tracing::info!(database = %store.name(), "database open");
            Ok(Arc::new(store))
        }
    }
}

/// Binds the listeners and starts serving. Returns once the sockets are bound, so callers (and
/// tests using port 0) can read the real addresses.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    let http = match config.server.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let https = match config.server.tls_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let store = open_store(&config).await?;
    let workers = workers::Workers::start(config.server.workers, config.server.pin_workers)
        .map_err(|e| StartError::Setup(format!("cannot start the connection workers: {e}")))?;
    let shutdown = CancellationToken::new();
    let settings = Arc::new(
        ConnectionSettings::new(&config, workers, &shutdown).map_err(|e| {
            StartError::Setup(format!("cannot set up idle connection keeping: {e}"))
        })?,
    );
    for (worker, lot) in settings.lots.iter().enumerate() {
        settings
            .workers
            .spawn_on(worker, lot.clone().run(Connection::resume));
    }
    let data_dir = config.data_dir.clone();
    // Everything besides the connections that holds the state (and so the store): the shutdown
    // waits for all of it before the gateway counts as stopped.
    let background = TaskTracker::new();
    // The metrics listener is bound once, so its token is the one read at start.
    let metrics_exporter = metrics_listener
        .is_some()
        .then(|| crate::metrics::Exporter::new(config.metrics.token.as_ref(), Some(store.clone())));
    // Redirects to HTTPS name the port actually bound, which differs from the config's for ":0".
    let live = Arc::new(
        Live::new(config, store, https_addr.map(|a| a.port())).map_err(StartError::Setup)?,
    );
    control::serve(live.clone(), &data_dir, shutdown.clone(), &background)
        .await
        .map_err(|e| StartError::Setup(format!("control socket in {}: {e}", data_dir.display())))?;
    // The workers accept on the listeners themselves (`accept_on_worker`): they leave this
    // runtime's event loop for theirs.
    let http = http.map(for_workers).transpose()?;
    let https = https.map(for_workers).transpose()?;
    let https = match https {
        Some(listener) => {
            let tls = tls::server_config(&live).map_err(StartError::Setup)?;
            Some((listener, TlsAcceptor::from(Arc::new(tls))))
        }
        None => None,
    };

    if let (Some(listener), Some(exporter)) = (metrics_listener, metrics_exporter) {
        background.spawn(crate::metrics::serve(
            listener,
            Arc::new(exporter),
            shutdown.clone(),
        ));
    }
    let task = tokio::spawn(serve(
        live.clone(),
        http,
        https,
        settings,
        background,
        shutdown.clone(),
    ));
    if let Some(addr) = http_addr {
        tracing::info!("listening on http://{addr}");
    }
    if let Some(addr) = https_addr {
        tracing::info!("listening on https://{addr}");
    }
    if let Some(addr) = metrics_addr {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    Ok(RunningGateway {
        http_addr,
        https_addr,
        metrics_addr,
        shutdown,
        task,
        live,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn for_workers(listener: TcpListener) -> Result<std::net::TcpListener, StartError> {
    listener
        .into_std()
        .map_err(|e| StartError::Setup(format!("cannot hand the listener to the workers: {e}")))
}

/// Per-connection protocol settings, built once: a reload does not change them (the TLS
/// handshake timeout and the shutdown grace are read from the configuration in force instead).
struct ConnectionSettings {
    /// HTTP/1.1 or HTTP/2, for TLS and HTTP/2 connections.
    builder: auto::Builder<TokioExecutor>,
    /// The same HTTP/1.1 settings, for plain HTTP/1.1 connections, which are served by a new
    /// hyper connection after each idle period (`connection.rs`).
    http1: hyper::server::conn::http1::Builder,
    /// How long a connection may wait for its next request (`header_read_timeout`).
    idle_timeout: Duration,
    /// One permit per open client connection, shared by all listeners.
    connection_slots: Arc<tokio::sync::Semaphore>,
    /// Where connections are served.
    workers: workers::Workers,
    /// Each worker's quiet keep-alive connections, by worker.
    lots: Vec<Arc<parking::Lot<Connection>>>,
    /// Each worker's open connections, by which a worker that accepted a connection decides
    /// whether to serve it itself.
    load: Arc<balance::WorkerLoad>,
}

/// The HTTP/1.1 settings, applied alike to hyper-util's auto builder and to hyper's own: the two
/// share no setter trait, and connections must not behave differently by which one served them.
macro_rules! http1_settings {
    ($builder:expr, $config:expr) => {
        $builder
            .timer(coarse_timer::CoarseTimer)
            .header_read_timeout($config.server.header_read_timeout)
            .keep_alive(true)
            .max_buf_size(64 * 1024)
    };
}

impl ConnectionSettings {
    fn new(
        config: &Config,
        workers: workers::Workers,
        shutdown: &CancellationToken,
    ) -> std::io::Result<ConnectionSettings> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        http1_settings!(builder.http1(), config);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1_settings!(http1, config);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .max_header_list_size(64 * 1024)
            .adaptive_window(true);
        // A shutdown token per worker: connections poll theirs often, and one token shared by
        // every worker would be a lock they all take.
        let lots = (0..workers.count())
            .map(|_| {
                parking::Lot::new(config.server.header_read_timeout, shutdown.child_token())
                    .map(Arc::new)
            })
            .collect::<std::io::Result<_>>()?;
        Ok(ConnectionSettings {
            builder,
            http1,
            idle_timeout: config.server.header_read_timeout,
            connection_slots: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
            load: balance::WorkerLoad::new(workers.count()),
            workers,
            lots,
        })
    }
}

async fn serve(
    live: Arc<Live>,
    http: Option<std::net::TcpListener>,
    https: Option<(std::net::TcpListener, TlsAcceptor)>,
    settings: Arc<ConnectionSettings>,
    background: TaskTracker,
    shutdown: CancellationToken,
) {
    // Dropped unfinished (its runtime ending first), it still ends the worker threads, and with
    // them the lots and every connection: nothing would be left to stop them.
    let _workers_end_with_this = settings.workers.stop_on_drop();
    // Every connection, whichever worker serves it; waited for at shutdown.
    let connections = TaskTracker::new();
    // Every worker's accept loops; waited for at shutdown, when they drop their listeners.
    let accepting = TaskTracker::new();
    let listeners = http
        .map(|listener| (listener, None))
        .into_iter()
        .chain(https.map(|(listener, acceptor)| (listener, Some(acceptor))));
    for (listener, tls) in listeners {
        for worker in 0..settings.workers.count() {
            let listener = match listener.try_clone() {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(worker = worker + 1, error = %e, "cannot share the listener with this worker");
                    continue;
                }
            };
            settings.workers.spawn_on(
                worker,
                accepting.track_future(accept_on_worker(
                    listener,
                    tls.clone(),
                    worker,
                    Arc::downgrade(&live),
                    settings.clone(),
                    connections.clone(),
                )),
            );
        }
    }
    {
        let (stop, live) = (shutdown.clone(), live.clone());
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let state = live.load();
                        let closed = state.gateway.prune_idle_upstreams();
                        if closed > 0 {
                            tracing::debug!(closed, "idle upstream connections closed");
                        }
                        // The sign-in state in force, with the limits and settings of now.
                        let Some(auth) = state.gateway.auth().cloned() else { continue };
                        let _ = tokio::task::spawn_blocking(move || auth.housekeeping()).await;
                    }
                }
            }
        });
    }
    tokio::spawn(crate::access_log::report_drops(shutdown.clone()));
    // Runs on through the shutdown: downloads finishing in the grace period stay watched.
    let watching = CancellationToken::new();
    background.spawn(watch_access(live.clone(), watching.clone()));
    shutdown.cancelled().await;
    if let Some(auth) = live.load().gateway.auth() {
        // Mail waiting for a retry is dropped rather than waited for.
        auth.mailer().close();
    }
    accepting.close();
    accepting.wait().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    // Each connection saw the shutdown token: idle ones close, busy ones finish their requests.
    connections.close();
    let grace = live.config().server.shutdown_grace;
    tokio::select! {
        () = connections.wait() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
        }
    }
    watching.cancel();
    settings.workers.stop().await;
    // The control socket, the metrics listener, the housekeeping tick and the access watch end
    // on the same token; once they have, nothing of this gateway holds the store.
    background.close();
    background.wait().await;
    // Every request that ended has its line queued by now; none is lost to the stop.
    let flushed = tokio::task::spawn_blocking(|| {
        crate::access_log::flush(crate::access_log::EXIT_FLUSH_LIMIT)
    })
    .await;
    if !matches!(flushed, Ok(true)) {
        tracing::warn!("the access log could not be written out before the stop");
    }
}

/// Every second, ends the open tunnels and long downloads whose visitor lost access since they
/// were last checked (`auth::watch`): the store changed, or an access period or session reached
/// its end. The checks read the store, so they run on the blocking pool, all in one task.
async fn watch_access(live: Arc<Live>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The sign-in state in force: its configuration decides, its store answers. Every
        // state shares one registry.
        let Some(auth) = live.load().gateway.auth().cloned() else {
            continue;
        };
        auth.watch_registry().tick();
        if auth.watch_registry().is_empty() {
            continue;
        }
        if let Err(e) = tokio::task::spawn_blocking(move || auth.recheck_watched()).await {
            tracing::warn!(error = %e, "checking the access of open requests failed");
        }
    }
}

/// Accepts connections on the worker it runs on, for the rest of the gateway's life.
///
/// Every worker accepts from every listener (each through its own descriptor of the one
/// listening socket, registered with its own event loop), as nginx's workers do: a connection is
/// served where it was accepted, with no hand-over between threads, unless that worker already
/// serves clearly more than another ([`balance`]). A new connection wakes every worker waiting
/// on the socket; the first to call `accept` takes it, the others find nothing and go back to
/// their work. (Separate sockets per worker with `SO_REUSEPORT` would spare those wake-ups, but
/// would also let a second process of the same user bind the same port without an error and
/// take a share of the connections.)
async fn accept_on_worker(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    worker: usize,
    // Weak: a loop runs on its worker until the worker ends, which may be after everything else
    // of a gateway whose runtime ended under it let go of the state (and so of the store).
    live: std::sync::Weak<Live>,
    settings: Arc<ConnectionSettings>,
    connections: TaskTracker,
) {
    let Some(lot) = settings.lots.get(worker).cloned() else {
        return;
    };
    // This worker's token, so that waiting on it never contends with another worker.
    let shutdown = lot.shutdown().clone();
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(worker = worker + 1, error = %e, "cannot accept connections on this worker");
            return;
        }
    };
    loop {
        // At the connection limit, wait for a slot; new clients queue in the listen backlog.
        let slot = tokio::select! {
            () = shutdown.cancelled() => return,
            slot = settings.connection_slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(live) = live.upgrade() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let serving = settings.load.pick(worker);
        let Some(serving_lot) = settings.lots.get(serving) else {
            continue;
        };
        let conn = Connection {
            live,
            settings: settings.clone(),
            worker: serving,
            peer,
            hold: Arc::new(Hold {
                shutdown: serving_lot.shutdown().clone(),
                _slot: slot,
                _open: crate::metrics::global().connection_opened(),
                _on_worker: settings.load.open(serving),
                _tracked: connections.token(),
            }),
        };
        let tls = tls.clone();
        if serving == worker {
            tokio::spawn(conn.serve(stream, tls));
            continue;
        }
        // Handed to a less busy worker: the socket leaves this worker's event loop for that
        // one's.
        match stream.into_std() {
            Ok(stream) => settings.workers.spawn_on(serving, async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => conn.serve(stream, tls).await,
                    Err(e) => {
                        tracing::debug!(peer = %conn.peer, error = %e, "cannot register the connection");
                    }
                }
            }),
            Err(e) => tracing::debug!(peer = %peer, error = %e, "cannot hand the connection over"),
        }
    }
}
