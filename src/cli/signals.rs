//! The signals `serve` and `demo` answer: SIGTERM and Ctrl-C end the process gracefully,
//! SIGHUP reloads the configuration.

use tokio_util::sync::CancellationToken;

/// The process's signal handlers. Installed before the gateway starts listening, so that a
/// signal sent as soon as it listens is neither lost nor, for SIGHUP (fatal by default), the end
/// of the process.
pub(super) struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(super) fn install() -> Signals {
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
    pub(super) async fn until_shutdown(
        self,
        token: CancellationToken,
        live: std::sync::Arc<crate::server::reload::Live>,
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
