//! Managing client lists: the plain operations ([`clients`]) and the local control socket
//! ([`control`]) through which `pagegate clients …` reaches a running gateway.
//!
//! The operations validate their input and return [`ApiError`]s that name the offending field,
//! so every front end (command line, control socket, admin API) reports mistakes the same way.

pub mod clients;
pub mod control;
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
    /// The store failed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
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
            ApiError::Store(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
