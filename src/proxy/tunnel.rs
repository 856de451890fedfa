//! The byte tunnel a connection becomes once the client and the upstream agreed to switch
//! protocols (`101`, a WebSocket): bytes are copied both ways until either side closes, the
//! server shuts down, or the visitor's access to the protected page ends.
//!
//! Runtime rules relied on:
//!
//! - hyper hands the client's socket over ([`hyper::upgrade::OnUpgrade`]) only after the `101`
//!   has been written, and ends the connection's own future at that moment. Whatever that
//!   connection held from the server (its slot under `max_connections`, its place in the
//!   shutdown wait) would be given back then, while the tunnel goes on using the socket: so the
//!   tunnel keeps the connection's [`Lease`] for as long as it runs.
//! - The tunnel is spawned from the connection's task, so it runs on the same worker's
//!   single-threaded runtime. At shutdown, the server waits for every lease to be given back
//!   before it stops the workers; a tunnel never ends by itself, so it ends when the shutdown
//!   signal comes.
//! - Access is checked once, at the gate, for the upgrade request. After that only the
//!   [`Access`] the gate hands over (the access watch's entry, `crate::auth::watch`) can tell that
//!   it ended; it is cancelled from another thread and wakes this task on its worker.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::runtime::EndSignal;

/// A connection's hold on the server (its slot under `max_connections`, its place in the
/// shutdown wait), lent by the server on every upgrade request, as a request extension, to the
/// tunnel the connection may become; ends when the server shuts down.
#[derive(Clone)]
pub struct Lease(pub Arc<dyn EndSignal>);

/// A protected tunnel's entry in the access watch, put on the upgrade request by the gate; ends
/// when the visitor's access does.
#[derive(Clone)]
pub struct Access(pub Arc<dyn EndSignal>);

/// How long the closing of a tunnel waits for each side to take its end of the stream (a TCP
/// FIN, a TLS close_notify) before the sockets are simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What ended a tunnel that did not end by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Shutdown,
    AccessEnded,
}

/// Runs the tunnel between the client's and the upstream's upgraded connections. `lease` is
/// the client connection's (absent only when the gateway is driven without pagegate's server);
/// `access` is present when the tunnel is to a protected page.
pub(super) async fn run(
    client: OnUpgrade,
    upstream: OnUpgrade,
    lease: Option<Lease>,
    access: Option<Access>,
) {
    let shutdown = lease.as_ref().map(|l| l.0.token());
    let access = access.as_ref().map(|a| a.0.token());
    let upgraded = tokio::select! {
        upgraded = async { tokio::try_join!(client, upstream) } => upgraded,
        cut = cut(shutdown, access) => {
            tracing::debug!(?cut, "upgrade abandoned");
            return;
        }
    };
    let (client, upstream) = match upgraded {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let _open = crate::metrics::global().tunnel_opened();
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let cut = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
            return;
        }
        cut = cut(shutdown, access) => cut,
    };
    tracing::debug!(?cut, "closing a tunnel");
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = tokio::join!(client.shutdown(), upstream.shutdown());
    })
    .await;
}

/// Completes with the first of the shutdown and the end of access; never without either.
async fn cut(shutdown: Option<&CancellationToken>, access: Option<&CancellationToken>) -> Cut {
    let shutdown = async {
        match shutdown {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let access_ended = async {
        match access {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown => Cut::Shutdown,
        () = access_ended => Cut::AccessEnded,
    }
}
