//! The control socket: `data_dir/control.sock`, owner-only, speaking a small HTTP+JSON API.
//!
//! redb lets one process open the database, so while a gateway runs, `pagegate clients …` and
//! `pagegate backup` cannot open it; they send their request here instead. File permissions are
//! the access control: only the account running pagegate (and root) can connect, which is also
//! why a failed backup's cause (a full disk, a folder it may not write) is answered in full.
//!
//! Routes:
//! - `GET /v1/clients?page=ID` → 200, JSON list of clients
//! - `POST /v1/clients` with a JSON `ClientInput` → 201 (added) or 200 (updated), JSON client
//! - `DELETE /v1/clients?page=ID&email=E` → 204
//! - `POST /v1/backup` with a JSON [`BackupRequest`] → 200, JSON [`StoreCounts`] of the copy;
//!   409 when the file exists and `force` is not set
//! - `POST /v1/reload` → 200 with a [`ReloadReport`](crate::server::reload::ReloadReport) (what is in force, which changes need a
//!   restart), or 422 `{"error", "key"}` with the configuration error (409 for a gateway without
//!   a file); the old configuration stays in force
//! - `POST /v1/rotate-key` → 200 with a [`RotationReport`], or 409 `{"error"}` when the secret
//!   is configured rather than generated
//!
//! Client operations check pages against the configuration in force, so a page added by a
//! reload can be managed at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::ApiError;
use crate::api::clients::{self, ClientInput};
use crate::body::{self, Body};
use crate::runtime::blocking;
use crate::store::{BackupError, Source, Store, StoreCounts};

/// `POST /v1/backup`: where the running gateway writes a backup of its database.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Destination file, absolute: the gateway's working directory is not the caller's.
    pub path: PathBuf,
    /// Replace the file if it exists.
    #[serde(default)]
    pub force: bool,
}
use super::reload::{Live, ReloadError, RotateError};
use crate::store::Timestamp;

/// The socket's file name inside `data_dir`.
pub const SOCKET_NAME: &str = "control.sock";

/// Where the control socket of a data directory is.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// What `POST /v1/rotate-key` answers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RotationReport {
    /// When the secret just retired stops being accepted (RFC 3339, UTC).
    pub previous_accepted_until: String,
    /// The same, in Unix seconds.
    pub previous_accepted_until_unix: Timestamp,
    /// Previous secrets still accepted, the one just retired included.
    pub previous_kept: usize,
}

/// Serves the control socket of `data_dir` until `shutdown`, on a task `tasks` tracks. A
/// leftover socket file from a crashed run is replaced: this process holds the database lock, so
/// no other gateway is using it. At shutdown the request being answered on each connection is
/// finished, idle connections are closed, and the task ends only once they all have, so that a
/// stopped gateway leaves nothing holding the store.
pub async fn serve(
    live: Arc<Live>,
    data_dir: &Path,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<()> {
    // With a database server for the store, nothing else may have made the folder yet; it is
    // the owner's alone, as the redb store makes it.
    if !data_dir.is_dir() {
        std::fs::create_dir_all(data_dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let connections = TaskTracker::new();
    tasks.spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                },
            };
            let live = live.clone();
            let stop = shutdown.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let live = live.clone();
                    async move { Ok::<_, Infallible>(handle(req, live).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        drop(listener);
        let _ = std::fs::remove_file(&path);
        connections.close();
        connections.wait().await;
    });
    Ok(())
}

/// The most clients one answer of the control socket lists; the command line asks for a list
/// chunk by chunk, so neither side holds a whole large list.
pub const MAX_LIST_CHUNK: usize = 10_000;

/// The `limit` of a list request: 1 to [`MAX_LIST_CHUNK`], [`MAX_LIST_CHUNK`] when absent.
fn chunk_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(MAX_LIST_CHUNK),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST_CHUNK).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("expected a number from 1 to {MAX_LIST_CHUNK}"),
                )
            }),
    }
}

async fn handle(req: Request<Incoming>, live: Arc<Live>) -> Response<Body> {
    let (config, store) = (live.config(), live.store().clone());
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| query.get(name).cloned().unwrap_or_default();
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/clients") => {
            let page = param("page");
            let after = query.get("after").cloned().filter(|a| !a.is_empty());
            match chunk_limit(query.get("limit").map(String::as_str)) {
                Ok(limit) => {
                    blocking(move || {
                        clients::list_clients(
                            &config,
                            store.as_ref(),
                            &page,
                            after.as_deref(),
                            limit,
                        )
                        .map(|list| json(StatusCode::OK, &list))
                    })
                    .await
                }
                Err(e) => Err(e),
            }
        }
        (&Method::POST, "/v1/clients") => match read_json::<ClientInput>(req).await {
            Ok(input) => {
                blocking(move || {
                    clients::add_client(&config, store.as_ref(), &input, Source::Cli, "cli").map(
                        |(view, new)| {
                            json(
                                if new {
                                    StatusCode::CREATED
                                } else {
                                    StatusCode::OK
                                },
                                &view,
                            )
                        },
                    )
                })
                .await
            }
            Err(e) => Err(e),
        },
        (&Method::DELETE, "/v1/clients") => {
            let (page, email) = (param("page"), param("email"));
            blocking(move || {
                clients::remove_client(&config, store.as_ref(), &page, &email, "cli").map(|()| {
                    let mut r = Response::new(body::empty());
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                })
            })
            .await
        }
        (&Method::POST, "/v1/backup") => match read_json::<BackupRequest>(req).await {
            Ok(input) => backup(store, input).await,
            Err(e) => Err(e),
        },
        (&Method::POST, "/v1/reload") => return reload(&live).await,
        (&Method::POST, "/v1/rotate-key") => return rotate_key(&live).await,
        _ => Err(ApiError::NotFound("no such control endpoint".into())),
    };
    result.unwrap_or_else(|e| error_json(&e))
}

/// Writes a backup on the blocking pool; the gateway keeps serving (the copy reads one
/// snapshot while writes go on).
async fn backup(store: Arc<dyn Store>, input: BackupRequest) -> Result<Response<Body>, ApiError> {
    if !input.path.is_absolute() {
        return Err(ApiError::invalid("path", "expected an absolute path"));
    }
    let path = input.path.clone();
    let written =
        tokio::task::spawn_blocking(move || store.backup_to(&input.path, input.force)).await;
    let counts: StoreCounts = match written {
        Ok(Ok(counts)) => counts,
        Ok(Err(BackupError::Exists(path))) => {
            return Err(ApiError::Conflict {
                field: "path",
                message: format!("{} already exists", path.display()),
            });
        }
        Ok(Err(e)) => {
            tracing::error!(path = %path.display(), error = %e, "backup failed");
            #[derive(Serialize)]
            struct Failed {
                error: String,
            }
            return Ok(json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &Failed {
                    error: format!("backup failed: {e}"),
                },
            ));
        }
        Err(e) => {
            return Err(ApiError::Store(crate::store::StoreError::Backend(format!(
                "backup task failed: {e}"
            ))));
        }
    };
    tracing::info!(
        path = %path.display(),
        clients = counts.clients,
        sessions = counts.sessions,
        audit_entries = counts.audit,
        grants = counts.grants,
        "backup written"
    );
    Ok(json(StatusCode::OK, &counts))
}

/// Reloads the configuration file; the gateway logs the outcome too.
async fn reload(live: &Live) -> Response<Body> {
    match live.reload().await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => {
            #[derive(Serialize)]
            struct Refused<'a> {
                /// The whole message, file, line and key included.
                error: String,
                /// The configuration key, when the error names one.
                #[serde(skip_serializing_if = "Option::is_none")]
                key: Option<&'a str>,
            }
            let status = match e {
                ReloadError::NoFile => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json(
                status,
                &Refused {
                    error: e.full_message(),
                    key: e.key(),
                },
            )
        }
    }
}

/// Rotates the generated session secret; takes effect before the answer is sent.
async fn rotate_key(live: &Live) -> Response<Body> {
    match live.rotate_key().await {
        Ok(rotation) => {
            let until = rotation.previous_until;
            json(
                StatusCode::OK,
                &RotationReport {
                    previous_accepted_until: jiff::Timestamp::from_second(until)
                        .map_or_else(|_| until.to_string(), |t| t.to_string()),
                    previous_accepted_until_unix: until,
                    previous_kept: rotation.previous_kept,
                },
            )
        }
        Err(e) => {
            let status = match e {
                RotateError::Key(crate::auth::keys::KeyError::Configured) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json(status, &serde_json::json!({ "error": e.to_string() }))
        }
    }
}

/// A JSON body, read under the API's limit by the API's reader.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = crate::api::read_body(body, &parts.headers, crate::api::JSON_LIMIT).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid {
        field: "body",
        message: e.to_string(),
    })
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let text = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error": "...", "field": "..."}` with the error's status.
pub fn error_json(e: &ApiError) -> Response<Body> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'a str>,
    }
    let (error, field) = match e {
        ApiError::Invalid { field, message } => (message.clone(), Some(*field)),
        ApiError::Store(_) => ("internal error".to_owned(), None),
        other => (other.to_string(), None),
    };
    if let ApiError::Store(inner) = e {
        tracing::error!(error = %inner, "admin operation failed");
    }
    json(e.status(), &ErrorBody { error, field })
}

/// Sends one request to a running gateway's control socket: (status, body).
pub async fn call(
    data_dir: &Path,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> std::io::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::UnixStream::connect(socket_path(data_dir)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, "localhost");
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(std::io::Error::other)?;
    let response = send
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_chunk_is_one_to_the_maximum_and_anything_else_names_the_field() {
        assert_eq!(chunk_limit(None).ok(), Some(MAX_LIST_CHUNK));
        assert_eq!(chunk_limit(Some("1")).ok(), Some(1));
        assert_eq!(chunk_limit(Some("10000")).ok(), Some(MAX_LIST_CHUNK));
        for bad in ["0", "10001", "-1", "ten", ""] {
            let err = chunk_limit(Some(bad)).expect_err(bad);
            assert!(err.to_string().contains("limit"), "{bad}: {err}");
        }
    }
}
