//! `pagegate healthcheck`: ask a running gateway whether it serves, for container health
//! checks on an image without an HTTP client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// Asks `url`, or the configuration's plain listener, within `timeout`.
pub async fn run(config: &Path, url: Option<http::Uri>, timeout: Duration) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => health_url(&crate::config::load(config)?)?,
    };
    tokio::time::timeout(timeout, healthcheck(&url))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {timeout:?}"))??;
    println!("{url}: ok");
    Ok(())
}

/// `{prefix}/healthz` on the plain listener, over loopback when it listens on every address.
fn health_url(config: &crate::config::Config) -> anyhow::Result<http::Uri> {
    let Some(mut addr) = config.server.listen else {
        anyhow::bail!(
            "`server.listen` is not set: pass --url (the health check speaks plain HTTP only)"
        );
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}{}/healthz", config.server.prefix)
        .parse()
        .context("health check URL")
}

/// One GET; any answer but 200 is an error naming the status.
async fn healthcheck(url: &http::Uri) -> anyhow::Result<()> {
    use http_body_util::Empty;

    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "{url}: only http:// URLs can be checked"
    );
    let authority = url
        .authority()
        .with_context(|| format!("{url}: no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host().trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("{url}: cannot connect"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{url}: no answer"))?;
    anyhow::ensure!(
        response.status() == http::StatusCode::OK,
        "{url}: answered {}",
        response.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_check_asks_loopback_when_the_gateway_listens_everywhere() {
        let toml = "[server]\nlisten = \"0.0.0.0:8080\"\n\n[[site]]\nhosts = [\"a.example\"]\nupstream = \"http://127.0.0.1:9\"\n";
        let config = crate::config::parse_str(
            toml,
            std::path::Path::new("gateway.toml"),
            std::path::Path::new("."),
        );
        let url = config
            .map_err(|e| e.to_string())
            .and_then(|c| health_url(&c).map_err(|e| e.to_string()));
        assert_eq!(
            url.map(|u| u.to_string()),
            Ok("http://127.0.0.1:8080/_pagegate/healthz".to_owned())
        );
    }
}
