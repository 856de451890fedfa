//! The `pagegate` command line: serve, check a config, manage clients, reload a running gateway,
//! rotate its session key, or run the built-in demo.

use std::net::SocketAddr;
use std::path::PathBuf;

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

fn main() -> std::process::ExitCode {
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
    match runtime.block_on(run(cli.command)) {
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

/// Asks the running gateway to reload its configuration and prints what it says.
async fn reload(config: &std::path::Path) -> anyhow::Result<()> {
    use pagegate::server::reload::ReloadReport;
    // Only the data directory is needed to reach the gateway: the file may well have the very
    // mistake the gateway is about to report.
    let data_dir = pagegate::config::data_dir_of(config)?;
    let (_, body) = control_at(&data_dir, http::Method::POST, "/v1/reload", None)
        .await
        .context("configuration reload refused; the running configuration stays in force")?;
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
    use pagegate::api::control::RotationReport;
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
    let (status, bytes) = pagegate::api::control::call(data_dir, method, path, body)
        .await
        .with_context(|| {
            format!(
                "no running gateway answers on the control socket in {}",
                data_dir.display()
            )
        })?;
    if !status.is_success() {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
            field: Option<String>,
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| match e.field {
                Some(f) => format!("{f}: {}", e.error),
                None => e.error,
            })
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        anyhow::bail!("{message}");
    }
    Ok((status, bytes))
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAGEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
