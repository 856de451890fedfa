//! Entry points for the fuzz targets in `fuzz/` that reach code the crate does not export:
//! thin wrappers, no logic of their own. Not part of pagegate's interface.

use crate::api::ApiError;
use crate::api::clients::{ClientChange, ClientInput};

/// The framing watch's verdict on a byte stream arriving as `reads`: the number of the first
/// ambiguous request and, when the stream ends between two requests, how many it held.
pub fn framing_verdict<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> (Option<u64>, Option<u64>) {
    crate::server::framing::follow_reads(reads)
}

/// The admin API's body of `POST /pages/{page}/clients`.
pub fn admin_client_input(page: String, body: &[u8]) -> Result<ClientInput, ApiError> {
    crate::api::admin_api::client_input(page, body)
}

/// The admin API's body of `PATCH /pages/{page}/clients/{email}`.
pub fn admin_client_change(body: &[u8]) -> Result<ClientChange, ApiError> {
    crate::api::admin_api::client_change(body)
}

/// The admin API's `GET /audit` query: `after` and `limit`.
pub fn admin_audit_query(query: &str) -> Result<(Option<u64>, usize), ApiError> {
    crate::api::admin_api::audit_query(query)
}
