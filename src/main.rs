//! The `pagegate` command line: serve, check a config, manage clients, back up and restore the
//! database, reload a running gateway, rotate its session key, check its health, or run the
//! built-in demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pagegate",
    version,
    about = "Protects pages of any site with email one-time codes"
)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sites of a configuration file.
    Serve {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit: 0 when valid.
    Check {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Manage a page's clients, whether or not the gateway is running.
    Clients {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Ask a running gateway whether it serves: exit 0 when `{prefix}/healthz` answers 200.
    ///
    /// For container health checks, where the image has no HTTP client. Without `--url`, it
    /// asks the plain-HTTP listener of the configuration on the loopback address.
    Healthcheck {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
        /// Ask this URL instead (http:// only).
        #[arg(long)]
        url: Option<http::Uri>,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Write a consistent copy of the database to FILE, whether or not the gateway is running.
    ///
    /// The copy holds client lists with their emails and the audit log: keep it private.
    Backup {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Where to write the backup.
        file: PathBuf,
    },
    /// Replace the database with a backup; the gateway must be stopped.
    ///
    /// The current database is kept aside as pagegate.redb.before-restore-TIME in data_dir.
    Restore {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
        /// The backup to restore.
        file: PathBuf,
    },
    /// Make a running gateway read its configuration file again (as SIGHUP does) and report
    /// the outcome: exit 0 when the new configuration is in force, 1 with the error when it was
    /// refused (the running configuration then stays).
    Reload {
        /// The configuration file; only its `data_dir` is read here, to find the running
        /// gateway. The gateway reads the file it was started with.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Replace the generated session secret; sessions, codes and links made with the old one
    /// stay valid for `auth.key_grace`. Works whether or not the gateway is running.
    RotateKey {
        /// The configuration file.
        #[arg(long, short, env = "PAGEGATE_CONFIG", default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Run a complete local demo: a sample site behind pagegate, nothing else needed.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo keeps its database.
        #[arg(long, default_value = "pagegate-demo-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClientsAction {
    /// Add a client, or change the name and access period of one already listed.
    Add {
        /// Page id.
        #[arg(long)]
        page: String,
        /// Email address.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Last day of access (YYYY-MM-DD, UTC); without it and --days, access is unlimited.
        #[arg(long, conflicts_with = "days")]
        until: Option<String>,
        /// Days of access from now.
        #[arg(long)]
        days: Option<u32>,
    },
    /// List a page's clients.
    List {
        /// Page id.
        #[arg(long)]
        page: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a client: their access ends on their next request.
    Remove {
        /// Page id.
        #[arg(long)]
        page: String,
        /// Email address.
        #[arg(long)]
        email: String,
    },
}

/// jemalloc in place of the C library's allocator. A burst of busy connections takes memory for
/// a moment (hyper's buffers, upstream connections); glibc keeps most of it after they go quiet,
/// since it only gives back the top of each heap, while jemalloc gives back any page unused for
/// a while. With 10,000 quiet keep-alive connections left by a burst, that is the difference
/// between about 4 KiB and 0.8 KiB per connection (docs/performance.md).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long jemalloc keeps a page nothing uses before giving it back (its default is ten
/// seconds). Under steady load the same pages are reused long before.
#[cfg(target_os = "linux")]
const ALLOCATOR_DECAY_MS: isize = 1000;

#[cfg(target_os = "linux")]
fn tune_allocator() {
    use tikv_jemalloc_ctl::{Access, AsName};
    // Pages are given back by jemalloc's own thread, so also when no request comes to make the
    // allocator act. A setting that cannot be applied only costs memory, never correctness.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    // For the arenas made from now on (one per worker thread), and the one in use already.
    let _ = b"arenas.dirty_decay_ms\0".name().write(ALLOCATOR_DECAY_MS);
    let _ = b"arena.0.dirty_decay_ms\0".name().write(ALLOCATOR_DECAY_MS);
}

#[cfg(not(target_os = "linux"))]
fn tune_allocator() {}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Requests the runtime still held end with it, and their lines must reach the log.
    drop(runtime);
    pagegate::access_log::flush(pagegate::access_log::EXIT_FLUSH_LIMIT);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config } => {
            let parsed = pagegate::config::load(&config)?;
            let pages: usize = parsed.sites.iter().map(|s| s.pages.len()).sum();
            println!(
                "{}: OK (sites: {}, pages: {})",
                config.display(),
                parsed.sites.len(),
                pages
            );
            Ok(())
        }
        Command::Serve { config } => {
            let parsed = pagegate::config::load(&config)?;
            let signals = Signals::install();
            let running = pagegate::start(parsed)
                .await
                .context("cannot start the gateway")?;
            signals
                .until_shutdown(running.shutdown_token(), running.live())
                .await;
            running.wait().await;
            Ok(())
        }
        Command::Reload { config } => reload(&config).await,
        Command::RotateKey { config } => rotate_key(&config).await,
        Command::Clients { config, action } => {
            let parsed = pagegate::config::load(&config)?;
            clients(&parsed, action).await
        }
        Command::Healthcheck {
            config,
            url,
            timeout,
        } => {
            let url = match url {
                Some(url) => url,
                None => health_url(&pagegate::config::load(&config)?)?,
            };
            tokio::time::timeout(timeout, healthcheck(&url))
                .await
                .map_err(|_| anyhow::anyhow!("{url}: no answer within {timeout:?}"))??;
            println!("{url}: ok");
            Ok(())
        }
        Command::Backup {
            config,
            force,
            file,
        } => {
            let parsed = pagegate::config::load(&config)?;
            backup(&parsed, &file, force).await
        }
        Command::Restore { config, file } => {
            let parsed = pagegate::config::load(&config)?;
            restore(&parsed, &file).await
        }
        Command::Demo { listen, data_dir } => {
            let site_shutdown = CancellationToken::new();
            let site =
                pagegate::demo::start_sample_site("127.0.0.1:0".parse()?, site_shutdown.clone())
                    .await
                    .context("cannot start the sample site")?;
            let config = pagegate::demo::config(listen, site, &data_dir)?;
            pagegate::demo::seed(&config).context("cannot prepare the demo database")?;
            let signals = Signals::install();
            let running = pagegate::start(config)
                .await
                .context("cannot start the gateway")?;
            if let Some(addr) = running.http_addr {
                tracing::info!(
                    "demo ready: open http://{addr}/ (the sample site is at http://{site}/)"
                );
                tracing::info!(
                    "the course page is protected: sign in as {} and the code mail is printed below",
                    pagegate::demo::DEMO_EMAIL
                );
            }
            signals
                .until_shutdown(running.shutdown_token(), running.live())
                .await;
            running.wait().await;
            site_shutdown.cancel();
            Ok(())
        }
    }
}

/// `{prefix}/healthz` on the plain listener, over loopback when it listens on every address.
fn health_url(config: &pagegate::config::Config) -> anyhow::Result<http::Uri> {
    let Some(mut addr) = config.server.listen else {
        anyhow::bail!(
            "`server.listen` is not set: pass --url (the health check speaks plain HTTP only)"
        );
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}{}/healthz", config.server.prefix)
        .parse()
        .context("health check URL")
}

/// One GET; any answer but 200 is an error naming the status.
async fn healthcheck(url: &http::Uri) -> anyhow::Result<()> {
    use http_body_util::Empty;

    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "{url}: only http:// URLs can be checked"
    );
    let authority = url
        .authority()
        .with_context(|| format!("{url}: no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host().trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("{url}: cannot connect"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{url}: no answer"))?;
    anyhow::ensure!(
        response.status() == http::StatusCode::OK,
        "{url}: answered {}",
        response.status()
    );
    Ok(())
}

/// Runs a `clients` action on the database directly, or through the running gateway's control
/// socket when the gateway holds the database.
async fn clients(config: &pagegate::config::Config, action: ClientsAction) -> anyhow::Result<()> {
    use pagegate::api::clients::{self as ops, ClientInput, ClientView};
    use pagegate::store::{Source, StoreError, redb::RedbStore};

    let store = match RedbStore::open(&config.data_dir) {
        Ok(store) => Some(store),
        Err(StoreError::Locked(_)) => None,
        Err(e) => return Err(e.into()),
    };
    match action {
        ClientsAction::Add {
            page,
            email,
            name,
            until,
            days,
        } => {
            let input = ClientInput {
                page,
                email,
                name,
                until,
                days,
            };
            let (view, new) = match &store {
                Some(store) => ops::add_client(config, store, &input, Source::Cli, "cli")?,
                None => {
                    let (status, body) = control(
                        config,
                        http::Method::POST,
                        "/v1/clients",
                        Some(serde_json::to_vec(&input)?),
                    )
                    .await?;
                    (
                        serde_json::from_slice::<ClientView>(&body)?,
                        status == http::StatusCode::CREATED,
                    )
                }
            };
            let period = view
                .access_until
                .as_deref()
                .map_or("unlimited access".to_owned(), |u| {
                    format!("access until {u}")
                });
            println!(
                "{} {} on {} ({period})",
                if new { "added" } else { "updated" },
                view.email,
                view.page
            );
        }
        ClientsAction::List { page, json } => {
            let list = match &store {
                Some(store) => ops::list_clients(config, store, &page)?,
                None => {
                    let query = format!(
                        "/v1/clients?page={}",
                        form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
                    );
                    let (_, body) = control(config, http::Method::GET, &query, None).await?;
                    serde_json::from_slice(&body)?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_clients(&list);
            }
        }
        ClientsAction::Remove { page, email } => {
            match &store {
                Some(store) => ops::remove_client(config, store, &page, &email, "cli")?,
                None => {
                    let query = format!(
                        "/v1/clients?page={}&email={}",
                        form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>(),
                        form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()
                    );
                    control(config, http::Method::DELETE, &query, None).await?;
                }
            }
            println!("removed {email} from {page}");
        }
    }
    Ok(())
}

/// Writes a backup: directly from the database when the gateway is stopped, or by the running
/// gateway (which holds the database) through its control socket.
async fn backup(config: &pagegate::config::Config, file: &Path, force: bool) -> anyhow::Result<()> {
    use pagegate::server::control::BackupRequest;
    use pagegate::store::redb::{DB_FILE, RedbStore};
    use pagegate::store::{BackupError, Store, StoreCounts, StoreError};

    // The running gateway resolves the path from its own working directory, not ours.
    let dest = std::path::absolute(file)
        .with_context(|| format!("cannot resolve the path {}", file.display()))?;
    let db = config.data_dir.join(DB_FILE);
    match db.try_exists() {
        Ok(true) => {}
        Ok(false) => anyhow::bail!(
            "there is no database at {}: nothing to back up (check data_dir in the configuration)",
            db.display()
        ),
        // Most often a permission problem: the data directory belongs to the gateway's account.
        Err(e) => anyhow::bail!(
            "cannot reach the database at {}: {e} (run this as the account that runs the gateway)",
            db.display()
        ),
    }
    let exists = || {
        anyhow::anyhow!(
            "{} already exists; pass --force to replace it",
            dest.display()
        )
    };
    let counts: StoreCounts = match RedbStore::open(&config.data_dir) {
        Ok(store) => match store.backup_to(&dest, force) {
            Ok(counts) => counts,
            Err(BackupError::Exists(_)) => return Err(exists()),
            Err(e) => return Err(anyhow::Error::new(e).context("backup failed")),
        },
        Err(StoreError::Locked(_)) => {
            let request = BackupRequest {
                path: dest.clone(),
                force,
            };
            let (status, body) = control_call(
                config,
                http::Method::POST,
                "/v1/backup",
                Some(serde_json::to_vec(&request)?),
            )
            .await?;
            match status {
                http::StatusCode::OK => serde_json::from_slice(&body)
                    .context("the gateway's answer to the backup is not understood")?,
                http::StatusCode::CONFLICT => return Err(exists()),
                _ => anyhow::bail!("{}", answer_error(&body)),
            }
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot open the database")),
    };
    println!("backup written to {}", dest.display());
    println!("{counts}");
    Ok(())
}

/// Puts a backup in place of the database, which no gateway may be using.
async fn restore(config: &pagegate::config::Config, file: &Path) -> anyhow::Result<()> {
    use pagegate::store::redb::RedbStore;

    // The database lock is the real test (restore checks it too); a live control socket also
    // means a gateway is running, one that might be about to open the database.
    let socket = pagegate::server::control::socket_path(&config.data_dir);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        anyhow::bail!(
            "the gateway is running (it answers on {}): stop the gateway first",
            socket.display()
        );
    }
    let data_dir = config.data_dir.clone();
    let backup = file.to_path_buf();
    // The check of the backup catches the database engine's panics on damaged files and reports
    // them as such; the default hook would first print them as if pagegate had crashed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let restored =
        tokio::task::spawn_blocking(move || RedbStore::restore(&data_dir, &backup)).await;
    std::panic::set_hook(hook);
    let restored = restored.context("the restore did not finish")??;
    println!(
        "restored {} into {}",
        file.display(),
        restored.path.display()
    );
    println!("{}", restored.counts);
    if let Some(aside) = &restored.kept_aside {
        println!("the previous database is kept as {}", aside.display());
    }
    Ok(())
}

/// Asks the running gateway to reload its configuration and prints what it says.
async fn reload(config: &std::path::Path) -> anyhow::Result<()> {
    use pagegate::server::reload::ReloadReport;
    // Only the data directory is needed to reach the gateway: the file may well have the very
    // mistake the gateway is about to report.
    let data_dir = pagegate::config::data_dir_of(config)?;
    // Only a gateway that answered has refused anything; an unreachable one is said as such.
    let (status, body) = control_call_at(&data_dir, http::Method::POST, "/v1/reload", None).await?;
    if !status.is_success() {
        anyhow::bail!(
            "configuration reload refused; the running configuration stays in force: {}",
            answer_error(&body)
        );
    }
    let report: ReloadReport =
        serde_json::from_slice(&body).context("unexpected answer from the gateway")?;
    println!(
        "reloaded {} (sites: {}, pages: {})",
        report.file.display(),
        report.sites,
        report.pages
    );
    for key in &report.restart_needed {
        println!(
            "warning: `{key}` changed, but only takes effect after a restart; the running value stays"
        );
    }
    Ok(())
}

/// Rotates the generated session secret: through the running gateway, which applies it at once,
/// or directly in `data_dir` while no gateway runs (the database lock keeps one from starting
/// meanwhile).
async fn rotate_key(path: &std::path::Path) -> anyhow::Result<()> {
    use pagegate::server::control::RotationReport;
    use pagegate::store::{StoreError, redb::RedbStore};

    // A running gateway rotates with the configuration it runs: only its data directory is
    // needed to reach it.
    let data_dir = pagegate::config::data_dir_of(path)?;
    let report = match RedbStore::open(&data_dir) {
        Err(StoreError::Locked(_)) => {
            let (_, body) =
                control_at(&data_dir, http::Method::POST, "/v1/rotate-key", None).await?;
            serde_json::from_slice::<RotationReport>(&body)
                .context("unexpected answer from the gateway")?
        }
        Err(e) => return Err(e.into()),
        Ok(_store) => {
            let config = pagegate::config::load(path)?;
            if config.auth.secret.is_some() {
                return Err(pagegate::auth::keys::KeyError::Configured.into());
            }
            let rotation = pagegate::auth::keys::rotate(
                &config.data_dir,
                config.auth.key_grace,
                pagegate::store::now(),
            )?;
            let until = rotation.previous_until;
            RotationReport {
                previous_accepted_until: jiff::Timestamp::from_second(until)
                    .map_or_else(|_| until.to_string(), |t| t.to_string()),
                previous_accepted_until_unix: until,
                previous_kept: rotation.previous_kept,
            }
        }
    };
    if report.previous_kept == 0 {
        println!("generated a session key: there was none yet to rotate");
    } else {
        println!(
            "rotated the session key: new sign-ins use the new key; sessions, codes and links \
             made with the previous one are accepted until {}",
            report.previous_accepted_until
        );
    }
    Ok(())
}

/// One call to the control socket; a non-2xx answer becomes the error it carries.
async fn control(
    config: &pagegate::config::Config,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    control_at(&config.data_dir, method, path, body).await
}

/// [`control`] for a data directory.
async fn control_at(
    data_dir: &std::path::Path,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    let (status, bytes) = control_call_at(data_dir, method, path, body).await?;
    if !status.is_success() {
        anyhow::bail!("{}", answer_error(&bytes));
    }
    Ok((status, bytes))
}

/// One call to the control socket, whatever the answer's status.
async fn control_call(
    config: &pagegate::config::Config,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    control_call_at(&config.data_dir, method, path, body).await
}

/// [`control_call`] for a data directory.
async fn control_call_at(
    data_dir: &std::path::Path,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    pagegate::server::control::call(data_dir, method, path, body)
        .await
        .with_context(|| {
            format!(
                "no running gateway answers on the control socket in {}",
                data_dir.display()
            )
        })
}

/// The message of a control socket's error answer: `field: error`, or the body as it is.
fn answer_error(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        field: Option<String>,
    }
    serde_json::from_slice::<ErrorBody>(bytes)
        .map(|e| match e.field {
            Some(f) => format!("{f}: {}", e.error),
            None => e.error,
        })
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

fn print_clients(list: &[pagegate::api::clients::ClientView]) {
    if list.is_empty() {
        println!("no clients");
        return;
    }
    println!(
        "{:<32} {:<24} {:<22} {:<8} LAST SIGN-IN",
        "EMAIL", "NAME", "ACCESS UNTIL", "SOURCE"
    );
    for c in list {
        let until = c.access_until.as_deref().unwrap_or("unlimited");
        let status = if c.active { "" } else { " (ended)" };
        let source = serde_json::to_value(c.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<32} {:<24} {:<22} {:<8} {}",
            c.email,
            c.name,
            format!("{until}{status}"),
            source,
            c.last_login.as_deref().unwrap_or("-")
        );
    }
}

/// The process's signal handlers. Installed before the gateway starts listening, so that a
/// signal sent as soon as it listens is neither lost nor, for SIGHUP (fatal by default), the end
/// of the process.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Signals {
                terminate: install(SignalKind::terminate(), "SIGTERM"),
                interrupt: install(SignalKind::interrupt(), "SIGINT"),
                hangup: install(SignalKind::hangup(), "SIGHUP (use `pagegate reload`)"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Cancels `token` on SIGTERM or Ctrl-C; reloads the configuration on SIGHUP.
    async fn until_shutdown(
        self,
        token: CancellationToken,
        live: std::sync::Arc<pagegate::server::reload::Live>,
    ) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            let Signals {
                mut terminate,
                mut interrupt,
                mut hangup,
            } = self;
            loop {
                tokio::select! {
                    () = next(&mut terminate) => break,
                    () = next(&mut interrupt) => break,
                    () = next(&mut hangup) => {
                        tracing::info!("SIGHUP received: reloading the configuration");
                        // In its own task, so a shutdown signal is not kept waiting; the reload
                        // logs its outcome, and reloads queue one after another.
                        let live = live.clone();
                        tokio::spawn(async move { live.reload().await });
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (self, live);
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
        token.cancel();
    }
}

fn init_logging(format: LogFormat) {
    pagegate::access_log::set_format(match format {
        LogFormat::Text => pagegate::access_log::Format::Text,
        LogFormat::Json => pagegate::access_log::Format::Json,
    });
    let spec = std::env::var("PAGEGATE_LOG").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(spec.as_deref()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line: timestamp, level, target, and `fields` with the message.
        LogFormat::Json => builder.with_ansi(false).json().init(),
    }
}

/// Libraries whose most verbose levels print more than belongs in a log, and the most they may
/// print unless `PAGEGATE_LOG` names them itself. rustls at `trace` prints whole handshake
/// messages (session tickets, certificates). lettre is built without its `tracing` feature,
/// since at `debug` it logs every line sent to the SMTP server: the message with its code and
/// link, and the `AUTH` exchange; the `off` here keeps that true should the feature come back
/// through another crate.
const LOG_CEILINGS: &[(&str, tracing_subscriber::filter::LevelFilter)] = &[
    ("rustls", tracing_subscriber::filter::LevelFilter::DEBUG),
    (
        "tokio_rustls",
        tracing_subscriber::filter::LevelFilter::DEBUG,
    ),
    ("lettre", tracing_subscriber::filter::LevelFilter::OFF),
];

/// The log filter for `PAGEGATE_LOG` (`info` when unset or unparsable), with [`LOG_CEILINGS`]
/// added for libraries it does not name, where its overall level is more verbose than theirs.
fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let spec = spec
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let (mut filter, spec) = match EnvFilter::try_new(spec) {
        Ok(filter) => (filter, spec),
        Err(_) => (EnvFilter::new("info"), "info"),
    };
    let directives: Vec<&str> = spec.split(',').map(str::trim).collect();
    let overall = directives
        .iter()
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .max()
        .unwrap_or(LevelFilter::ERROR);
    for (target, ceiling) in LOG_CEILINGS {
        let named = directives
            .iter()
            .any(|d| d.split(['=', '[']).next() == Some(*target));
        if named || overall <= *ceiling {
            continue;
        }
        if let Ok(directive) = format!("{target}={ceiling}").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_filters_keep_library_ceilings_unless_the_library_is_named() {
        let shown = |spec: &str| log_filter(Some(spec)).to_string();
        let trace = shown("trace");
        assert!(trace.contains("rustls=debug"), "{trace}");
        assert!(trace.contains("lettre=off"), "{trace}");
        let named = shown("debug,rustls=trace");
        assert!(
            named.contains("rustls=trace") && !named.contains("rustls=debug"),
            "{named}"
        );
        assert!(named.contains("lettre=off"), "{named}");
        // Quieter overall levels are not raised by a ceiling.
        assert!(!shown("info").contains("rustls"), "{}", shown("info"));
        assert!(!shown("warn").contains("rustls"));
        assert_eq!(
            log_filter(None).to_string(),
            log_filter(Some("info")).to_string()
        );
        assert_eq!(
            log_filter(Some("not a filter[")).to_string(),
            log_filter(Some("info")).to_string()
        );
    }

    #[test]
    fn the_health_check_asks_loopback_when_the_gateway_listens_everywhere() {
        let toml = "[server]\nlisten = \"0.0.0.0:8080\"\n\n[[site]]\nhosts = [\"a.example\"]\nupstream = \"http://127.0.0.1:9\"\n";
        let config = pagegate::config::parse_str(
            toml,
            std::path::Path::new("gateway.toml"),
            std::path::Path::new("."),
        );
        let url = config
            .map_err(|e| e.to_string())
            .and_then(|c| health_url(&c).map_err(|e| e.to_string()));
        assert_eq!(
            url.map(|u| u.to_string()),
            Ok("http://127.0.0.1:8080/_pagegate/healthz".to_owned())
        );
    }
}
