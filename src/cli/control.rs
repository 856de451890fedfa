//! The commands' side of the control socket: one call to the running gateway, and its error
//! answers as messages.

use std::path::Path;

use anyhow::Context;

/// One call to the control socket; a non-2xx answer becomes the error it carries.
pub(super) async fn control(
    config: &crate::config::Config,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    control_at(&config.data_dir, method, path, body).await
}

/// [`control`] for a data directory.
pub(super) async fn control_at(
    data_dir: &Path,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    let (status, bytes) = control_call_at(data_dir, method, path, body).await?;
    if !status.is_success() {
        anyhow::bail!("{}", answer_error(&bytes));
    }
    Ok((status, bytes))
}

/// One call to the control socket, whatever the answer's status.
pub(super) async fn control_call(
    config: &crate::config::Config,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    control_call_at(&config.data_dir, method, path, body).await
}

/// [`control_call`] for a data directory.
pub(super) async fn control_call_at(
    data_dir: &Path,
    method: http::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    crate::server::control::call(data_dir, method, path, body)
        .await
        .with_context(|| {
            format!(
                "no running gateway answers on the control socket in {}",
                data_dir.display()
            )
        })
}

/// The message of a control socket's error answer: `field: error`, or the body as it is.
pub(super) fn answer_error(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        field: Option<String>,
    }
    serde_json::from_slice::<ErrorBody>(bytes)
        .map(|e| match e.field {
            Some(f) => format!("{f}: {}", e.error),
            None => e.error,
        })
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}
