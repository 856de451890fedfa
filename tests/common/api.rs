//! A client for `{prefix}/api/v1`: Bearer keys or webhook signatures computed here with `hmac`
//! and `sha2` directly (not with pagegate's own code, so a signing bug cannot hide itself), JSON
//! in and out, and keep-alive connections for load.

use std::net::SocketAddr;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use sha2::Sha256;

use super::client::{self, Answer};

/// The API's path prefix in tests.
pub const BASE: &str = "/_pagegate/api/v1";

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Cred<'a> {
    /// No credentials.
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer(&'a str),
    /// A signature made now with this secret.
    Signed(&'a str),
    /// This exact `Pagegate-Signature` value.
    Signature(String),
}

/// A request to the API: method, path below [`BASE`], credentials, content type and body.
pub fn request(
    host: &str,
    method: &str,
    path: &str,
    cred: &Cred<'_>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    let mut req = client::request(method, host, &format!("{BASE}{path}"));
    match cred {
        Cred::None => {}
        Cred::Bearer(secret) => req = req.header("authorization", format!("Bearer {secret}")),
        Cred::Signed(secret) => {
            req = req.header("pagegate-signature", signature(secret, unix_now(), &body))
        }
        Cred::Signature(value) => req = req.header("pagegate-signature", value.as_str()),
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(Full::from(body)).expect("request")
}

/// The API of one gateway, reached with one Host.
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub addr: SocketAddr,
    pub host: String,
}

impl ApiClient {
    pub fn new(addr: SocketAddr, host: &str) -> ApiClient {
        ApiClient {
            addr,
            host: host.to_string(),
        }
    }

    /// One request over a fresh connection.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        cred: &Cred<'_>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        client::send(
            self.addr,
            request(&self.host, method, path, cred, content_type, body),
        )
        .await
    }

    pub async fn get(&self, path: &str, cred: &Cred<'_>) -> Answer {
        self.send("GET", path, cred, None, Vec::new()).await
    }

    pub async fn json(
        &self,
        method: &str,
        path: &str,
        cred: &Cred<'_>,
        value: &serde_json::Value,
    ) -> Answer {
        let body = serde_json::to_vec(value).expect("json");
        self.send(method, path, cred, Some("application/json"), body)
            .await
    }

    pub async fn post(&self, path: &str, cred: &Cred<'_>, value: &serde_json::Value) -> Answer {
        self.json("POST", path, cred, value).await
    }

    pub async fn delete(&self, path: &str, cred: &Cred<'_>) -> Answer {
        self.send("DELETE", path, cred, None, Vec::new()).await
    }

    /// The emails on a page's list (the first 1000), as the admin API lists them to the key
    /// `admin_key`.
    pub async fn emails(&self, page: &str, admin_key: &str) -> Vec<String> {
        let answer = self
            .get(
                &format!("/pages/{page}/clients?limit=1000"),
                &Cred::Bearer(admin_key),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        body(&answer)["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .map(|c| c["email"].as_str().expect("email").to_string())
            .collect()
    }

    /// A keep-alive HTTP/1.1 connection for many requests.
    pub async fn connect(&self) -> Connection {
        Connection {
            host: self.host.clone(),
            send: client::http1(self.addr).await,
        }
    }
}

/// One keep-alive connection.
pub struct Connection {
    host: String,
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    pub async fn post(&mut self, path: &str, cred: &Cred<'_>, value: &serde_json::Value) -> Answer {
        let body = serde_json::to_vec(value).expect("json");
        let req = request(
            &self.host,
            "POST",
            path,
            cred,
            Some("application/json"),
            body,
        );
        self.send.ready().await.expect("connection ready");
        let response = self.send.send_request(req).await.expect("send request");
        client::read_answer(response).await
    }
}

/// The answer's body as JSON.
pub fn body(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", answer.status, answer.body))
}

/// The `error` and `field` of an error answer, with its status.
pub fn error(answer: &Answer) -> (u16, String, String) {
    let v = body(answer);
    (
        answer.status.as_u16(),
        v["error"].as_str().unwrap_or_default().to_string(),
        v["field"].as_str().unwrap_or_default().to_string(),
    )
}
