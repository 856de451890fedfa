//! The web side of administration: the grant endpoint and the admin API under
//! `{prefix}/api/v1/`, and the admin page under `{prefix}/admin/`.
//!
//! [`route`] turns a method and path into a [`Route`] (or 404/405); [`ROUTES`] lists the same
//! routes in the OpenAPI document's spelling, and a test checks the two and the document agree.
//! Every API answer is JSON (CSV for the export) with `Cache-Control: no-store`; errors are
//! `{"error": "...", "field": "..."}` ([`super::json::error`]).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Api, ApiError, json};
use crate::auth::Visitor;
use crate::body::{self, Body};
use crate::error::HttpError;
use crate::routing::SiteId;

/// Every route of `{prefix}/api/v1`: method and path as the OpenAPI document writes them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("POST", "/grants"),
    ("GET", "/pages"),
    ("GET", "/pages/{page}/clients"),
    ("POST", "/pages/{page}/clients"),
    ("GET", "/pages/{page}/clients/{email}"),
    ("PATCH", "/pages/{page}/clients/{email}"),
    ("DELETE", "/pages/{page}/clients/{email}"),
    ("POST", "/pages/{page}/clients/{email}/revoke"),
    ("GET", "/pages/{page}/clients.csv"),
    ("POST", "/pages/{page}/clients.csv"),
    ("GET", "/audit"),
];

/// The OpenAPI 3 document, as written; `servers` is set to the real prefix when served.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A request the router understood. Path parameters are percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /openapi.json`
    OpenApi,
    /// `POST /grants`
    Grant,
    /// `GET /pages`
    Pages,
    /// `GET /pages/{page}/clients`
    ListClients(String),
    /// `POST /pages/{page}/clients`
    AddClient(String),
    /// `GET /pages/{page}/clients/{email}`
    GetClient(String, String),
    /// `PATCH /pages/{page}/clients/{email}`
    EditClient(String, String),
    /// `DELETE /pages/{page}/clients/{email}`
    RemoveClient(String, String),
    /// `POST /pages/{page}/clients/{email}/revoke`
    RevokeSessions(String, String),
    /// `GET /pages/{page}/clients.csv`
    ExportCsv(String),
    /// `POST /pages/{page}/clients.csv`
    ImportCsv(String),
    /// `GET /audit`
    Audit,
}

impl Route {
    /// The page the route is about, if any.
    pub fn page(&self) -> Option<&str> {
        match self {
            Route::ListClients(p)
            | Route::AddClient(p)
            | Route::ExportCsv(p)
            | Route::ImportCsv(p)
            | Route::GetClient(p, _)
            | Route::EditClient(p, _)
            | Route::RemoveClient(p, _)
            | Route::RevokeSessions(p, _) => Some(p),
            Route::OpenApi | Route::Grant | Route::Pages | Route::Audit => None,
        }
    }
}

/// The route for `method` and `path` (below `{prefix}/api/v1`): 404 for an unknown path, 405
/// with the allowed methods for a known path with another method.
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let decoded: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|d| d.into_owned())
        })
        .collect::<Result<_, _>>()
        .map_err(|_| no_such_endpoint())?;
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let own = |s: &&str| (*s).to_owned();
    Ok(match (method.as_str(), segments.as_slice()) {
        ("GET", ["openapi.json"]) => Route::OpenApi,
        ("POST", ["grants"]) => Route::Grant,
        ("GET", ["pages"]) => Route::Pages,
        ("GET", ["pages", page, "clients"]) => Route::ListClients(own(page)),
        ("POST", ["pages", page, "clients"]) => Route::AddClient(own(page)),
        ("GET", ["pages", page, "clients", email]) => Route::GetClient(own(page), own(email)),
        ("PATCH", ["pages", page, "clients", email]) => Route::EditClient(own(page), own(email)),
        ("DELETE", ["pages", page, "clients", email]) => Route::RemoveClient(own(page), own(email)),
        ("POST", ["pages", page, "clients", email, "revoke"]) => {
            Route::RevokeSessions(own(page), own(email))
        }
        ("GET", ["pages", page, "clients.csv"]) => Route::ExportCsv(own(page)),
        ("POST", ["pages", page, "clients.csv"]) => Route::ImportCsv(own(page)),
        ("GET", ["audit"]) => Route::Audit,
        (_, segments) => {
            let allow: Vec<&str> = ROUTES
                .iter()
                .filter(|(_, template)| template_matches(template, segments))
                .map(|(m, _)| *m)
                .collect();
            return Err(if allow.is_empty() {
                no_such_endpoint()
            } else {
                ApiError::MethodNotAllowed {
                    allow: allow.join(", "),
                }
            });
        }
    })
}

fn no_such_endpoint() -> ApiError {
    ApiError::NotFound("no such API endpoint; see openapi.json".into())
}

/// Whether a path template of [`ROUTES`] matches these segments (`{…}` matches any one).
fn template_matches(template: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    parts.len() == segments.len()
        && parts
            .iter()
            .zip(segments)
            .all(|(p, s)| (p.starts_with('{') && p.ends_with('}')) || p == s)
}

impl Api {
    /// Answers `{prefix}/api/v1{sub_path}`. The API answers every request itself, errors
    /// included, as JSON; the site the request came for does not matter (page ids are unique
    /// across the gateway, and keys carry their own site limits).
    pub async fn handle_api(
        self: &Arc<Self>,
        _site: SiteId,
        sub_path: &str,
        req: Request<Incoming>,
        visitor: Visitor,
    ) -> Result<Response<Body>, HttpError> {
        let method = req.method().clone();
        let result = match route(&method, sub_path) {
            Ok(Route::OpenApi) => Ok(self.openapi_response()),
            Ok(Route::Grant) => super::grants::handle(self, req).await,
            Ok(other) => super::admin_api::handle(self, other, req).await,
            Err(e) => Err(e),
        };
        Ok(result.unwrap_or_else(|e| {
            // Paths may hold a client's email: the log names the method and the reason only.
            if matches!(e, ApiError::Unauthorized(_) | ApiError::Forbidden(_)) {
                tracing::info!(ip = %visitor.ip, %method, error = %e, "API request refused");
            }
            json::error(&e)
        }))
    }

    fn openapi_response(&self) -> Response<Body> {
        let mut r = Response::new(body::full(self.openapi.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *r.status_mut() = StatusCode::OK;
        r
    }

    /// Answers `{prefix}/admin{sub_path}`.
    pub async fn handle_admin_page(
        self: &Arc<Self>,
        site: SiteId,
        sub_path: &str,
        req: Request<Incoming>,
        visitor: Visitor,
    ) -> Result<Response<Body>, HttpError> {
        super::admin_page::handle(self, site, sub_path, req, visitor).await
    }
}

/// The OpenAPI document with `servers` pointing at this gateway's prefix.
pub(super) fn openapi_for(prefix: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(OPENAPI) {
        Ok(mut doc) => {
            doc["servers"] = serde_json::json!([{ "url": format!("{prefix}/api/v1") }]);
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| OPENAPI.to_owned())
        }
        Err(e) => {
            tracing::error!(error = %e, "the built-in OpenAPI document is not valid JSON");
            OPENAPI.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instantiate(template: &str) -> String {
        template
            .replace("{page}", "course")
            .replace("{email}", "ann%40example.com")
    }

    #[test]
    fn every_listed_route_is_routed_and_other_methods_get_405() {
        for (method, template) in ROUTES {
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            let path = instantiate(template);
            assert!(route(&m, &path).is_ok(), "{method} {path}");
            match route(&Method::PUT, &path) {
                Err(ApiError::MethodNotAllowed { allow }) => {
                    assert!(allow.contains(method), "{path}: {allow}")
                }
                other => panic!("PUT {path}: {other:?}"),
            }
        }
        assert_eq!(
            route(&Method::DELETE, "/pages/course/clients/ann%40example.com").expect("route"),
            Route::RemoveClient("course".into(), "ann@example.com".into())
        );
        for unknown in [
            "",
            "/",
            "/grants/x",
            "/pages/course",
            "/nope",
            "/pages/course/clients/a/b",
        ] {
            assert!(
                matches!(route(&Method::GET, unknown), Err(ApiError::NotFound(_))),
                "{unknown}"
            );
        }
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.0")),
            "OpenAPI 3.0"
        );
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(documented, routed);
        let served: serde_json::Value =
            serde_json::from_str(&openapi_for("/_gate")).expect("served JSON");
        assert_eq!(served["servers"][0]["url"], "/_gate/api/v1");
    }
}
