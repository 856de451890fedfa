//! The `pagegate` command line: serve, check a config, manage clients, back up and restore the
//! database, copy it to another backend, reload a running gateway, rotate its session key, check
//! its health, or run the built-in demo.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pagegate::api::clients::ClientInput;
use pagegate::cli::{
    self,
    logging::{LogFormat, init_logging},
};

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
    /// Work on the store itself, whichever backend it is.
    Store {
        #[command(subcommand)]
        action: StoreAction,
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
enum StoreAction {
    /// Copy every client list, grant order, spent signature, live session and audit entry
    /// from one store to another, then verify the target's counts: to move between redb and
    /// PostgreSQL.
    ///
    /// SRC and DST are each a configuration file (its [store] section and data_dir), a
    /// postgres:// URL, or a .redb file such as a backup. A redb source must not be in use by
    /// a running gateway. Codes, links and counters are not copied. Exit 0 only when the
    /// target holds exactly what was copied.
    Copy {
        /// The store to copy from.
        #[arg(long, value_name = "SRC")]
        from: String,
        /// The store to copy to; it must be empty unless --force.
        #[arg(long, value_name = "DST")]
        to: String,
        /// Empty the target first (every record of every kind), then copy.
        #[arg(long)]
        force: bool,
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
        Command::Check { config } => cli::check::run(&config).await,
        Command::Serve { config } => cli::serve::run(&config).await,
        Command::Reload { config } => cli::reload::run(&config).await,
        Command::RotateKey { config } => cli::rotate_key::run(&config).await,
        Command::Clients { config, action } => {
            let config = pagegate::config::load(&config)?;
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
                    cli::clients::add(&config, input).await
                }
                ClientsAction::List { page, json } => {
                    cli::clients::list(&config, &page, json).await
                }
                ClientsAction::Remove { page, email } => {
                    cli::clients::remove(&config, &page, &email).await
                }
            }
        }
        Command::Healthcheck {
            config,
            url,
            timeout,
        } => cli::health::run(&config, url, timeout).await,
        Command::Backup {
            config,
            force,
            file,
        } => cli::backup::run(&pagegate::config::load(&config)?, &file, force).await,
        Command::Restore { config, file } => {
            cli::restore::run(&pagegate::config::load(&config)?, &file).await
        }
        Command::Store {
            action: StoreAction::Copy { from, to, force },
        } => cli::store_copy::run(&from, &to, force).await,
        Command::Demo { listen, data_dir } => cli::demo::run(listen, &data_dir).await,
    }
}
