//! The `pagegate` command line: serve, check a config, or run the built-in demo.

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
            let running = pagegate::start(parsed)
                .await
                .context("cannot start the gateway")?;
            until_signal(running.shutdown_token()).await;
            running.wait().await;
            Ok(())
        }
        Command::Demo { listen, data_dir } => {
            let site_shutdown = CancellationToken::new();
            let site =
                pagegate::demo::start_sample_site("127.0.0.1:0".parse()?, site_shutdown.clone())
                    .await
                    .context("cannot start the sample site")?;
            let config = pagegate::demo::config(listen, site, &data_dir)?;
            let running = pagegate::start(config)
                .await
                .context("cannot start the gateway")?;
            if let Some(addr) = running.http_addr {
                tracing::info!(
                    "demo ready: open http://{addr}/ (the sample site is at http://{site}/)"
                );
            }
            until_signal(running.shutdown_token()).await;
            running.wait().await;
            site_shutdown.cancel();
            Ok(())
        }
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn until_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
    token.cancel();
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
