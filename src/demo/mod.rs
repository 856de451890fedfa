//! The built-in demo: a small sample site and a gateway configuration in front of it, so a
//! newcomer can see pagegate work with one command and no outside services.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{self, Body};
use crate::config::{self, Config, ConfigError};
use crate::ui::escape_html;

const INDEX: &str = include_str!("site/index.html");
const COURSE: &str = include_str!("site/course.html");
const NOTES: &str = include_str!("site/notes.txt");

/// The gateway configuration the demo runs: the sample site on `upstream`, one protected page.
/// It goes through the same parser and checks as any file.
pub fn config(
    listen: SocketAddr,
    upstream: SocketAddr,
    data_dir: &Path,
) -> Result<Config, ConfigError> {
    let text = format!(
        r#"
data_dir = {data_dir:?}

[server]
listen = "{listen}"

[[site]]
name = "demo"
title = "Demo School"
hosts = ["*"]
upstream = "http://{upstream}"
public_url = "http://{public}"

[[site.page]]
id = "course"
title = "Video course"
paths = ["/course/", "/downloads/course/"]
"#,
        data_dir = data_dir.display().to_string(),
        public = if listen.ip().is_unspecified() {
            format!("127.0.0.1:{}", listen.port())
        } else {
            listen.to_string()
        },
    );
    config::parse_str(&text, Path::new("<built-in demo config>"), Path::new("."))
}

/// The client the demo lets in.
pub const DEMO_EMAIL: &str = "demo@example.com";

/// Adds the demo client to the `course` page if it is not there yet.
pub fn seed(config: &Config) -> Result<(), crate::store::StoreError> {
    use crate::store::{AuditEvent, AuditKind, Client, Source, Store, now, redb::RedbStore};
    let store = RedbStore::open(&config.data_dir)?;
    if store.client("course", DEMO_EMAIL)?.is_none() {
        let now = now();
        let client = Client {
            email: DEMO_EMAIL.into(),
            name: "Demo Student".into(),
            created_at: now,
            updated_at: now,
            access_until: None,
            source: Source::Demo,
            last_login: None,
        };
        let event = AuditEvent {
            at: now,
            kind: AuditKind::ClientAdded,
            site: None,
            page: Some("course".into()),
            email: Some(DEMO_EMAIL.into()),
            actor: "demo".into(),
            detail: String::new(),
        };
        store.put_client("course", &client, &event)?;
    }
    Ok(())
}

/// Serves the sample site on `listen` until `shutdown` is cancelled; returns the bound address.
pub async fn start_sample_site(
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            tokio::spawn(async move {
                let service =
                    service_fn(|req| async move { Ok::<_, Infallible>(sample_page(&req)) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The sample site's answer to one request. It is "an existing site" pagegate knows nothing
/// about, except that it greets a signed-in visitor by the identity header pagegate adds.
fn sample_page(req: &Request<Incoming>) -> Response<Body> {
    let (status, content_type, text) = match req.uri().path() {
        "/" | "/index.html" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            INDEX.to_string(),
        ),
        "/course/" | "/course/index.html" => {
            let visitor = req
                .headers()
                .get("x-pagegate-name")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .map_or_else(|| "student".to_string(), |v| escape_html(&v));
            (
                StatusCode::OK,
                "text/html; charset=utf-8",
                COURSE.replace("{{visitor}}", &visitor),
            )
        }
        "/downloads/course/notes.txt" => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            NOTES.to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "Not found on the sample site.\n".to_string(),
        ),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
