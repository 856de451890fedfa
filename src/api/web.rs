//! The web side of administration: the grant endpoint and the admin API under
//! `{prefix}/api/v1/`, and the admin page under `{prefix}/admin/`.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::auth::{Auth, Visitor};
use crate::body::Body;
use crate::config::Config;
use crate::error::HttpError;
use crate::routing::SiteId;

/// Shared state of the admin interfaces.
pub struct Api {
    config: Arc<Config>,
    auth: Arc<Auth>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    /// Builds the admin interfaces on the gateway's config and sign-in state.
    pub fn new(config: Arc<Config>, auth: Arc<Auth>) -> Api {
        Api { config, auth }
    }

    /// The configuration the gateway runs.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The sign-in state (store, mail, templates, keys).
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// Answers `{prefix}/api/v1{sub_path}`.
    pub async fn handle_api(
        self: &Arc<Self>,
        _site: SiteId,
        _sub_path: &str,
        _req: Request<Incoming>,
        _visitor: Visitor,
    ) -> Result<Response<Body>, HttpError> {
        Err(HttpError::NotFound)
    }

    /// Answers `{prefix}/admin{sub_path}`.
    pub async fn handle_admin_page(
        self: &Arc<Self>,
        _site: SiteId,
        _sub_path: &str,
        _req: Request<Incoming>,
        _visitor: Visitor,
    ) -> Result<Response<Body>, HttpError> {
        Err(HttpError::NotFound)
    }
}
