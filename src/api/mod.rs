//! Managing client lists: the plain operations ([`clients`]), the local control socket
//! ([`control`]) through which `pagegate clients …` reaches a running gateway, and the web side
//! ([`web`]): the grant endpoint for shops ([`grants`]) and the admin API ([`admin_api`]) under
//! `{prefix}/api/v1/`, authenticated per API key ([`keys`]).
//!
//! The operations validate their input and return [`ApiError`]s that name the offending field,
//! so every front end (command line, control socket, admin API) reports mistakes the same way.

pub mod admin_api;
pub mod admin_page;
pub mod clients;
pub mod csv;
pub mod grants;
pub mod json;
pub mod keys;
pub mod web;

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
            ApiError::Store(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}
