//! The errors a request can end in, and the status each one answers with.
//!
//! Each variant says whose fault it is (the client's, the configuration's, the upstream's), which
//! decides the status and how loudly it is logged. The page shown never carries internal details.

use http::StatusCode;

/// Why pagegate answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request is malformed or ambiguous in a way that could confuse the upstream.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request is for a protected page and carries no valid session.
    #[error("sign-in required")]
    Unauthorized,
    /// The peer may not use this endpoint (a forward-auth question from outside
    /// `trusted_proxies`).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No site answers this host.
    #[error("no site for this host")]
    UnknownHost,
    /// A path under pagegate's prefix that names no endpoint.
    #[error("no such gateway endpoint")]
    NotFound,
    /// The TLS connection was made for one site and the request names another.
    #[error("request host does not match the TLS server name")]
    Misdirected,
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The database is unreachable for a moment: nothing was changed, the visitor may retry.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// A bug or resource problem on pagegate's side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::runtime::TaskFailed> for HttpError {
    fn from(e: crate::runtime::TaskFailed) -> HttpError {
        HttpError::Internal(e.to_string())
    }
}

impl HttpError {
    /// A store failure: the visitor sees "try again in a moment" when the database is only
    /// unreachable (503), an internal error otherwise; the log gets the store's reason.
    pub fn store(e: crate::store::StoreError) -> HttpError {
        match e {
            crate::store::StoreError::Unavailable(why) => HttpError::StoreUnavailable(why),
            other => HttpError::Internal(format!("store: {other}")),
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::UnknownHost | HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            HttpError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            HttpError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            HttpError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A sentence a visitor can read; never includes internal detail.
    pub fn public_message(&self) -> &'static str {
        match self {
            HttpError::BadRequest(why) => why,
            HttpError::Unauthorized => "This page is only for signed-in visitors.",
            HttpError::Forbidden(why) => why,
            HttpError::UnknownHost => {
                "This server has no site configured for the requested host name."
            }
            HttpError::NotFound => "There is nothing at this address.",
            HttpError::Misdirected => {
                "This connection was opened for another site. Open the address again in a new tab."
            }
            HttpError::UpstreamUnavailable(_) => {
                "The site behind this gateway cannot be reached right now. Please try again shortly."
            }
            HttpError::UpstreamTimeout => {
                "The site behind this gateway took too long to answer. Please try again shortly."
            }
            HttpError::StoreUnavailable(_) => {
                "Signing in is unavailable for a moment. Nothing was lost: please try again in a minute."
            }
            HttpError::Internal(_) => "Something went wrong on our side. Please try again.",
        }
    }

    /// Whether this is the upstream's or pagegate's fault (logged as a warning) rather than the
    /// client's (logged at debug, so a scanner cannot flood the log).
    pub fn is_server_side(&self) -> bool {
        self.status().is_server_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_is_pinned() {
        let cases = [
            (HttpError::BadRequest("x"), 400),
            (HttpError::Unauthorized, 401),
            (HttpError::Forbidden("x"), 403),
            (HttpError::UnknownHost, 404),
            (HttpError::NotFound, 404),
            (HttpError::Misdirected, 421),
            (HttpError::UpstreamUnavailable("refused".into()), 502),
            (HttpError::UpstreamTimeout, 504),
            (HttpError::StoreUnavailable("x".into()), 503),
            (HttpError::Internal("x".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.is_server_side(), status >= 500, "{err:?}");
        }
    }

    #[test]
    fn public_messages_do_not_leak_details() {
        let err = HttpError::UpstreamUnavailable("connect to 10.1.2.3:8000 refused".into());
        assert!(!err.public_message().contains("10.1.2.3"));
    }
}
