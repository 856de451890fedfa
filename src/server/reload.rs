//! The gateway in force, and changing it while it runs: configuration reloads and session-key
//! rotation.
//!
//! Everything a request needs (the [`Gateway`] with its router, upstream clients, sign-in state
//! and admin interfaces, the configuration, the TLS certificates) is one immutable `State`.
//! [`Live`] holds the current one in an `ArcSwap`. Each request takes the state in force when it
//! arrives and keeps it until it is answered; the TLS certificate resolver takes it for each
//! handshake. A reload builds a whole new state beside the old one and swaps it in with one
//! atomic store, so:
//!
//! - a request never sees half of a change (a new router with old pages, a site's name with
//!   another site's upstream): there is no moment where a protected page is unprotected or a host
//!   maps to the wrong site;
//! - requests in flight finish on the state they started with; the next request on the same
//!   keep-alive connection (or HTTP/2 stream) uses the new one; upgraded connections (WebSocket
//!   tunnels) are plain byte pipes by then and keep running;
//! - a configuration that fails any check is refused before anything is swapped, and the old
//!   state stays entirely.
//!
//! What is not rebuilt: the store (the open database), the listeners, the connection limit and
//! the HTTP/1.1 header timeout, which are fixed at start (see [`RESTART_ONLY`]).
//! Reloads and key rotations run one at a time.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::tls;
use crate::api::Api;
use crate::auth::Auth;
use crate::auth::keys::{KeyError, Rotation};
use crate::config::{Config, ConfigError};
use crate::gateway::Gateway;
use crate::mail::Mailer;
use crate::store::Store;
use crate::ui::Templates;

/// Settings a running gateway cannot change: its sockets, its database, its connection limit
/// the HTTP/1.1 header timeout built into its connections, and the metrics listener with its
/// token. A reload that changes them applies
/// everything else, keeps the running values and names them.
pub const RESTART_ONLY: &[&str] = &[
    "data_dir",
    "server.listen",
    "server.tls_listen",
    "server.max_connections",
    "server.workers",
    "server.pin_workers",
    "server.header_read_timeout",
    "metrics.listen",
    "metrics.token",
];

/// Everything a request needs, consistent with one configuration.
pub(crate) struct State {
    /// The configuration in force.
    pub(crate) config: Arc<Config>,
    /// Routing, upstreams, sign-in and admin interfaces.
    pub(crate) gateway: Arc<Gateway>,
    /// Each TLS site's certificate.
    pub(crate) certs: tls::Certificates,
}

/// The gateway in force, swapped whole by a reload.
pub struct Live {
    state: ArcSwap<State>,
    store: Arc<dyn Store>,
    /// The HTTPS port actually bound, for redirects.
    https_port: Option<u16>,
    /// Held by a reload or a key rotation for its whole duration.
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// The file read.
    pub file: PathBuf,
    /// Sites now served.
    pub sites: usize,
    /// Protected pages now.
    pub pages: usize,
    /// Keys of [`RESTART_ONLY`] that changed in the file; their running values stay until a
    /// restart.
    pub restart_needed: Vec<String>,
}

/// Why a reload was refused. The running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started without a file (the demo).
    #[error("nothing to reload: this gateway was not started from a configuration file")]
    NoFile,
    /// The file does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file validates but cannot be put to work (templates, mail, upstream clients,
    /// certificates, keys).
    #[error("{0}")]
    Setup(String),
}

impl ReloadError {
    /// The configuration key the error is about, where known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ReloadError::Config(e) => e.key(),
            _ => None,
        }
    }

    /// The message with its causes (why a file could not be read, say).
    pub fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// Why a key rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The gateway has no sign-in flow (library use without a store).
    #[error("this gateway has no sign-in flow")]
    NoAuth,
    /// The key cannot be rotated (configured secret) or its file cannot be written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The blocking task failed.
    #[error("key rotation task failed: {0}")]
    Task(String),
}

impl Live {
    /// Builds the first state from the configuration the gateway starts with.
    pub(crate) fn new(
        config: Config,
        store: Arc<dyn Store>,
        https_port: Option<u16>,
    ) -> Result<Live, String> {
        let access_log = access_log_output(&config)?;
        let state = build(config, store.clone(), https_port, None)?;
        if let Some(output) = access_log {
            crate::access_log::use_output(output);
        }
        Ok(Live {
            state: ArcSwap::from_pointee(state),
            store,
            https_port,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// The state in force now. Hold it for one request or one handshake, not longer.
    pub(crate) fn load(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.state.load().config.clone()
    }

    /// The clock the sign-in flow of the state in force goes by (the same across reloads), to
    /// move it forward in tests instead of waiting; `None` for a gateway without the flow.
    #[doc(hidden)]
    pub fn clock(&self) -> Option<crate::auth::Clock> {
        self.load().gateway.auth().map(|auth| auth.clock().clone())
    }

    /// Sign-in work still running in the background (see [`crate::auth::Auth::sign_in_work`]);
    /// 0 without the sign-in flow.
    pub fn sign_in_work(&self) -> usize {
        self.load()
            .gateway
            .auth()
            .map_or(0, |auth| auth.sign_in_work())
    }

    /// The open store, the same for every state.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads the configuration file again and, if it is valid in every respect, puts it in force
    /// for new requests. Logs the outcome: success at INFO (with a WARN per [`RESTART_ONLY`] key
    /// that changed), refusal at ERROR.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(report) => {
                for key in &report.restart_needed {
                    tracing::warn!(
                        key = %key,
                        "`{key}` changed in the configuration file, but only takes effect after a restart; the running value stays"
                    );
                }
                tracing::info!(
                    file = %report.file.display(),
                    sites = report.sites,
                    pages = report.pages,
                    "configuration reloaded"
                );
            }
            Err(ReloadError::NoFile) => tracing::info!("{}", ReloadError::NoFile),
            Err(e) => {
                let message = one_line(&e.full_message());
                match e.key() {
                    Some(key) => tracing::error!(
                        key,
                        "configuration reload refused, the running configuration stays in force: {message}"
                    ),
                    None => tracing::error!(
                        "configuration reload refused, the running configuration stays in force: {message}"
                    ),
                }
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.load();
        let Some(file) = current.config.source.clone() else {
            return Err(ReloadError::NoFile);
        };
        let (store, https_port) = (self.store.clone(), self.https_port);
        let path = file.clone();
        // Reading files, compiling templates and loading certificates is blocking work.
        let built = tokio::task::spawn_blocking(move || {
            let loaded = crate::config::load(&path)?;
            let (config, restart_needed) = keep_running_values(&current.config, loaded);
            // Opened again even when unchanged: after log rotation renamed the file, the lines
            // go to a new one.
            let access_log = access_log_output(&config).map_err(ReloadError::Setup)?;
            let state =
                build(config, store, https_port, Some(&current)).map_err(ReloadError::Setup)?;
            Ok::<_, ReloadError>((state, restart_needed, access_log))
        })
        .await
        .map_err(|e| ReloadError::Setup(format!("reload task failed: {e}")))??;
        let (state, restart_needed, access_log) = built;
        let report = ReloadReport {
            file,
            sites: state.config.sites.len(),
            pages: state.config.sites.iter().map(|s| s.pages.len()).sum(),
            restart_needed: restart_needed.into_iter().map(str::to_owned).collect(),
        };
        self.state.store(Arc::new(state));
        if let Some(output) = access_log {
            crate::access_log::use_output(output);
        }
        Ok(report)
    }

    /// Replaces the generated session secret: new sessions, codes and links use the new one at
    /// once, and those made with the old one stay valid for `auth.key_grace`.
    pub async fn rotate_key(&self) -> Result<Rotation, RotateError> {
        let _one_at_a_time = self.changes.lock().await;
        let state = self.load();
        let auth = state.gateway.auth().cloned().ok_or(RotateError::NoAuth)?;
        let result = tokio::task::spawn_blocking(move || auth.rotate_keys())
            .await
            .map_err(|e| RotateError::Task(e.to_string()))?
            .map_err(RotateError::from);
        if let Err(e) = &result {
            tracing::error!("session key rotation refused: {e}");
        }
        result
    }
}

/// Builds a state from a validated configuration: mail, templates (compiled and test-rendered),
/// sign-in state and keys, admin interfaces, the gateway with its upstream clients, and the
/// certificates. With `previous`, what must survive a reload is carried over from it.
fn build(
    config: Config,
    store: Arc<dyn Store>,
    https_port: Option<u16>,
    previous: Option<&State>,
) -> Result<State, String> {
    // An unchanged `[mail]` keeps its sender: its SMTP connections, and the messages waiting for
    // a retry, which a newer code for the same visitor must still be able to replace.
    let unchanged_mail = previous
        .filter(|p| p.config.mail == config.mail)
        .and_then(|p| p.gateway.auth());
    let mailer = match unchanged_mail {
        Some(old) => old.mailer().clone(),
        None => Mailer::new(&config.mail).map_err(|e| format!("mail: {e}"))?,
    };
    let templates =
        Templates::new(config.auth.templates.as_deref()).map_err(|e| format!("templates: {e}"))?;
    if previous.is_none() {
        tracing::info!(transport = %mailer.describe(), "mail ready");
    }
    let config = Arc::new(config);
    let old = previous.and_then(|p| p.gateway.auth().zip(p.gateway.api()));
    let auth = Arc::new(match old {
        Some((old_auth, _)) => old_auth.reloaded(&config, mailer, templates)?,
        None => Auth::new(&config, store, mailer, templates)?,
    });
    let api = Arc::new(match old {
        Some((_, old_api)) => old_api.reloaded(config.clone(), auth.clone()),
        None => Api::new(config.clone(), auth.clone()),
    });
    let gateway = Gateway::new(&config, https_port, Some(auth), Some(api))?;
    let certs = tls::certificates(&config)?;
    Ok(State {
        config,
        gateway: Arc::new(gateway),
        certs,
    })
}

/// Where the access log goes under `config`, the file opened; `None` when it is off.
fn access_log_output(config: &Config) -> Result<Option<crate::access_log::Output>, String> {
    if !config.server.access_log {
        return Ok(None);
    }
    let path = config.server.access_log_path.as_deref();
    crate::access_log::Output::open(path)
        .map(Some)
        .map_err(|e| {
            let shown = path.map(|p| p.display().to_string()).unwrap_or_default();
            format!("server.access_log_path: cannot open {shown}: {e}")
        })
}

/// Whether two spellings name the same directory (compared resolved where it exists).
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// A multi-line message (the TOML parser draws the offending line) on one log line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `next` with the running values of the [`RESTART_ONLY`] settings, and the keys that differed.
fn keep_running_values(running: &Config, mut next: Config) -> (Config, Vec<&'static str>) {
    let mut changed = Vec::new();
    let mut keep = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    keep("data_dir", !same_dir(&running.data_dir, &next.data_dir));
    keep("server.listen", running.server.listen != next.server.listen);
    keep(
        "server.tls_listen",
        running.server.tls_listen != next.server.tls_listen,
    );
    keep(
        "server.max_connections",
        running.server.max_connections != next.server.max_connections,
    );
    keep(
        "server.workers",
        running.server.workers != next.server.workers,
    );
    keep(
        "server.pin_workers",
        running.server.pin_workers != next.server.pin_workers,
    );
    keep(
        "server.header_read_timeout",
        running.server.header_read_timeout != next.server.header_read_timeout,
    );
    keep(
        "metrics.listen",
        running.metrics.listen != next.metrics.listen,
    );
    // The metrics listener checks the token it was started with; the sites keep the same one.
    keep("metrics.token", running.metrics.token != next.metrics.token);
    next.data_dir = running.data_dir.clone();
    next.server.listen = running.server.listen;
    next.server.tls_listen = running.server.tls_listen;
    next.server.max_connections = running.server.max_connections;
    next.server.workers = running.server.workers;
    next.server.pin_workers = running.server.pin_workers;
    next.server.header_read_timeout = running.server.header_read_timeout;
    next.metrics.listen = running.metrics.listen;
    next.metrics.token = running.metrics.token.clone();
    (next, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("t.toml"), Path::new("/base")).expect("valid")
    }

    const RUNNING: &str = "[server]\nlisten = \"127.0.0.1:8080\"\nmax_connections = 100\n\
        [[site]]\nhosts = [\"a\"]\nupstream = \"http://127.0.0.1:1\"\n";

    #[test]
    fn restart_only_settings_keep_their_running_values_and_are_named() {
        let running = parse(RUNNING);
        let next = parse(
            &RUNNING
                .replace("8080", "9090")
                .replace("100", "200")
                .replace(
                    "[server]",
                    "data_dir = \"elsewhere\"\n[server]\nprefix = \"/_gate\"",
                )
                .replace("127.0.0.1:1", "127.0.0.1:2"),
        );
        let (kept, changed) = keep_running_values(&running, next);
        assert_eq!(
            changed,
            ["data_dir", "server.listen", "server.max_connections"]
        );
        assert_eq!(kept.data_dir, running.data_dir);
        assert_eq!(kept.server.listen, running.server.listen);
        assert_eq!(kept.server.max_connections, 100);
        // Everything else is the new file's.
        assert_eq!(kept.server.prefix, "/_gate");
        assert_eq!(kept.sites[0].upstream.authority.as_str(), "127.0.0.1:2");
        for key in changed {
            assert!(RESTART_ONLY.contains(&key), "{key}");
        }
    }

    #[test]
    fn an_unchanged_file_needs_no_restart() {
        let (_, changed) = keep_running_values(&parse(RUNNING), parse(RUNNING));
        assert!(changed.is_empty());
    }
}
