//! Managing client lists: the plain operations ([`clients`]), the local control socket
//! ([`control`]) through which `pagegate clients …` reaches a running gateway, and the web side
//! ([`web`]): the grant endpoint for shops ([`grants`]) and the admin API ([`admin_api`]) under
//! `{prefix}/api/v1/`, authenticated per API key ([`keys`]).
//!
//! The operations validate their input and return [`ApiError`]s that name the offending field,
//! so every front end (command line, control socket, admin API) reports mistakes the same way.
//!
//! What the handlers share is here too: [`Api`], the state of the web side, and the body
//! limits with [`read_body`], so that [`web`] is the router alone.

pub mod admin_api;
pub mod admin_page;
pub mod clients;
pub mod csv;
pub mod grants;
pub mod json;
pub mod keys;
pub mod web;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::auth::Auth;
use crate::config::Config;
use crate::store::Store;
use keys::KeyRing;

/// Largest JSON body the API reads.
pub const JSON_LIMIT: usize = 64 * 1024;
/// Largest CSV import.
pub const CSV_LIMIT: usize = 2 * 1024 * 1024;

/// Shared state of the admin interfaces.
pub struct Api {
    config: Arc<Config>,
    auth: Arc<Auth>,
    keys: KeyRing,
    openapi: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    /// Builds the admin interfaces on the gateway's config and sign-in state.
    pub fn new(config: Arc<Config>, auth: Arc<Auth>) -> Api {
        let openapi = web::openapi_for(&config.server.prefix);
        Api {
            keys: KeyRing::new(&config),
            config,
            auth,
            openapi,
        }
    }

    /// The admin interfaces of a reloaded configuration: new keys and settings. Spent
    /// signatures are in the store, which the reload keeps.
    pub fn reloaded(&self, config: Arc<Config>, auth: Arc<Auth>) -> Api {
        Api::new(config, auth)
    }

    /// The configuration the gateway runs.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The sign-in state (store, mail, templates, keys).
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.auth.store()
    }

    /// The API keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
}

/// Reads a request body of at most `limit` bytes: 413 when it is larger (told by
/// `Content-Length` before reading, or found while reading).
pub async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge { limit })
        }
        Err(_) => Err(ApiError::invalid("body", "the body was cut off")),
    }
}

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
    /// No such page, or no such client.
    #[error("{0}")]
    NotFound(String),
    /// A JSON body has a field the endpoint does not take.
    #[error("{0}: unknown field")]
    UnknownField(String),
    /// Missing or wrong credentials (API key, signature).
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are right but do not allow this (scope, site or page limits).
    #[error("{0}")]
    Forbidden(String),
    /// The request contradicts what is stored (an order id used for another grant, an email
    /// already on the list).
    #[error("{field}: {message}")]
    Conflict {
        /// The field.
        field: &'static str,
        /// What is in the way.
        message: String,
    },
    /// The body is larger than the endpoint takes.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The path exists but not with this method.
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed {
        /// The methods the path takes, for the `Allow` header.
        allow: String,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

impl From<crate::runtime::TaskFailed> for ApiError {
    fn from(e: crate::runtime::TaskFailed) -> ApiError {
        ApiError::Store(crate::store::StoreError::Backend(e.to_string()))
    }
}

impl ApiError {
    /// An [`ApiError::Invalid`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ApiError::Invalid { .. } => http::StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => http::StatusCode::NOT_FOUND,
            ApiError::UnknownField(_) => http::StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => http::StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => http::StatusCode::FORBIDDEN,
            ApiError::Conflict { .. } => http::StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => http::StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(crate::store::StoreError::Unavailable(_)) => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The field the error is about, if any: it goes in the answer's `field`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } | ApiError::Conflict { field, .. } => Some(field),
            ApiError::UnknownField(name) => Some(name),
            ApiError::TooLarge { .. } => Some("body"),
            _ => None,
        }
    }

    /// The text for the answer's `error`: the message without the field, and nothing of a store
    /// failure's detail (that goes to the log).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Invalid { message, .. } | ApiError::Conflict { message, .. } => {
                message.clone()
            }
            ApiError::UnknownField(name) => format!("unknown field {name:?}"),
            ApiError::Store(crate::store::StoreError::Unavailable(_)) => {
                "the database is unreachable for a moment; nothing was changed, retry later"
                    .to_owned()
            }
            ApiError::Store(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}
