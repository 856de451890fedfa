//! Requests that outlive the gate's check. A WebSocket to a protected page and a slow protected
//! download are cut off when the visitor loses access: removed from the list, sessions revoked,
//! signed out, access period or session lifetime over. Open tunnels keep their connection's slot
//! under `max_connections`, and a graceful shutdown closes them while downloads finish.
//!
//! Real parts throughout: the gateway, an upstream that echoes WebSockets and drips downloads,
//! and an SMTP server receiving the sign-in codes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::api::{ApiClient, Cred};
use common::browser::Browser;
use common::client::{self, Answer};
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const MAIL_WAIT: Duration = Duration::from_secs(10);
/// How long a tunnel or a download may go on after its visitor lost access before a test gives
/// up on it. The gateway means to cut them within two seconds or so; this only bounds the wait.
const CUT_WAIT: Duration = Duration::from_secs(10);
/// An `admin` API key.
const ADMIN: &str = "admin-secret-0123456789abcdef";

/// A school whose page "course" covers a live chat (`/ws/`, a WebSocket) and a download area
/// (`/drip/`, slow downloads), with its client lists managed from the command line's control
/// socket and the admin API.
struct School {
    upstream: TestUpstream,
    smtp: TestSmtp,
    gateway: TestGateway,
}

fn school_toml(upstream: &TestUpstream, smtp: &TestSmtp, server: &str, page: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n\
         [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"school.test\"]\n\
         upstream = \"http://{}\"\npublic_url = \"http://school.test\"\n\n\
         [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/ws/\", \"/drip/\"]\n\
         {page}\n\n\
         {}\n[auth]\nresend_after = \"1ms\"\n\n\
         [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nscopes = [\"admin\"]\n",
        upstream.addr,
        smtp.mail_toml("Demo School <school@example.com>")
    )
}

impl School {
    /// With extra `[server]` and `[[site.page]]` lines.
    async fn open(server: &str, page: &str) -> School {
        Self::open_in(tempfile::tempdir().expect("temp dir"), server, page).await
    }

    /// The same, in a directory whose database the test already prepared.
    async fn open_in(dir: tempfile::TempDir, server: &str, page: &str) -> School {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let toml = school_toml(&upstream, &smtp, server, page);
        let gateway = TestGateway::start_in(dir, &toml).await;
        School {
            upstream,
            smtp,
            gateway,
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.gateway.dir.path().join("data")
    }

    /// Calls the running gateway's control socket, as `pagegate clients` does.
    async fn control(&self, method: http::Method, path: &str, body: Option<serde_json::Value>) {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        let (status, answer) =
            pagegate::server::control::call(&self.data_dir(), method, path, body)
                .await
                .expect("control socket");
        assert!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// `pagegate clients add --page course --email EMAIL --name Ann`.
    async fn add_client(&self, email: &str) {
        let body = serde_json::json!({"page": "course", "email": email, "name": "Ann"});
        self.control(http::Method::POST, "/v1/clients", Some(body))
            .await;
    }

    /// `pagegate clients remove --page course --email EMAIL`.
    async fn remove_client(&self, email: &str) {
        let path = format!("/v1/clients?page=course&email={email}");
        self.control(http::Method::DELETE, &path, None).await;
    }

    /// The admin API's "sign out everywhere" for a client of the course.
    async fn revoke_sessions(&self, email: &str) -> Answer {
        ApiClient::new(self.gateway.addr, "school.test")
            .send(
                "POST",
                &format!("/pages/course/clients/{email}/revoke"),
                &Cred::Bearer(ADMIN),
                None,
                Vec::new(),
            )
            .await
    }

    /// A browser signed in as `email` through the email form and the mailed code.
    async fn signed_in(&self, email: &str) -> Browser {
        let mut browser = Browser::new(self.gateway.addr, "school.test");
        let next = "/drip/1";
        let before = self.smtp.messages().len();
        let csrf = browser.open_login(next).await;
        let asked = browser
            .post_form(
                "/_pagegate/login",
                &[("email", email), ("next", next), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(asked.status, 200, "{}", asked.body);
        let mail = self.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone();
        let code = mail.code(6).expect("a code in the sign-in mail");
        let csrf = browser.open_login(next).await;
        let verified = browser
            .post_form(
                "/_pagegate/verify",
                &[
                    ("email", email),
                    ("code", &code),
                    ("next", next),
                    ("csrf", &csrf),
                ],
            )
            .await;
        assert_eq!(verified.status, 303, "{}", verified.body);
        assert!(browser.has_session());
        browser
    }

    /// The course's live chat, opened by `browser` and shown to work.
    async fn chat(&self, browser: &Browser) -> WebSocketStream<TcpStream> {
        let mut request = "ws://school.test/ws/chat"
            .into_client_request()
            .expect("request");
        let cookie = browser.cookie_header().expect("a session cookie");
        request.headers_mut().insert(
            "cookie",
            HeaderValue::from_str(&cookie).expect("cookie header"),
        );
        let stream = TcpStream::connect(self.gateway.addr)
            .await
            .expect("connect");
        let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
            .await
            .expect("websocket handshake");
        assert_eq!(response.status(), 101);
        assert_eq!(client::echo(&mut ws, "hello").await, "hello");
        ws
    }

    /// A download of `chunks` lines dripping from the course's download area, started by
    /// `browser`; returns its body once the first line has arrived.
    async fn download(&self, browser: &Browser, chunks: usize) -> Download {
        let mut send = client::http1(self.gateway.addr).await;
        let req = client::request("GET", "school.test", &format!("/drip/{chunks}"))
            .header("cookie", browser.cookie_header().expect("a session cookie"))
            .body(Full::<Bytes>::default())
            .expect("request");
        let response = send.send_request(req).await.expect("download answered");
        assert_eq!(response.status(), 200);
        let mut download = Download {
            body: response.into_body(),
            chunks: 0,
            _send: send,
        };
        assert_eq!(download.next().await, Some(Ok(())), "the first line");
        download
    }
}

/// A download in progress, counted in chunks received.
struct Download {
    body: Incoming,
    chunks: usize,
    /// The connection's handle, kept while the body is read.
    _send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Download {
    /// The next chunk (`Ok`), a broken download (`Err`) or its end (`None`).
    async fn next(&mut self) -> Option<Result<(), String>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) if frame.is_data() => {
                    self.chunks += 1;
                    return Some(Ok(()));
                }
                Ok(_) => continue,
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }

    /// Reads on until the download ends or breaks; `true` when it ended whole.
    async fn read_to_end(&mut self) -> bool {
        loop {
            match self.next().await {
                Some(Ok(())) => continue,
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    }
}

/// Waits for the gateway to close `ws`, reading whatever comes meanwhile; panics if it is still
/// open after [`CUT_WAIT`].
async fn closed_by_gateway(ws: &mut WebSocketStream<TcpStream>, why: &str) {
    closed_within(ws, CUT_WAIT, why).await;
}

/// The same with another bound, for access that ends by itself some time from now.
async fn closed_within(ws: &mut WebSocketStream<TcpStream>, wait: Duration, why: &str) {
    let closed = tokio::time::timeout(wait, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{why}, yet the tunnel was still open when the test gave up waiting ({wait:?})"
    );
}

#[tokio::test]
async fn removing_a_client_closes_their_open_websocket() {
    let school = School::open("", "").await;
    school.add_client("ann@example.com").await;
    let ann = school.signed_in("ann@example.com").await;
    let mut chat = school.chat(&ann).await;

    school.remove_client("ann@example.com").await;

    closed_by_gateway(&mut chat, "Ann was removed from the course").await;
    assert_eq!(school.upstream.count(), 1, "only the chat reached the site");
}

#[tokio::test]
async fn revoking_a_clients_sessions_closes_their_open_websocket() {
    let school = School::open("", "").await;
    school.add_client("ann@example.com").await;
    let ann = school.signed_in("ann@example.com").await;
    let mut chat = school.chat(&ann).await;

    let revoked = school.revoke_sessions("ann@example.com").await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);

    closed_by_gateway(&mut chat, "Ann's sessions were revoked").await;
}

#[tokio::test]
async fn signing_out_closes_the_websocket_of_that_session_only() {
    let school = School::open("", "").await;
    school.add_client("ann@example.com").await;
    let mut laptop = school.signed_in("ann@example.com").await;
    let phone = school.signed_in("ann@example.com").await;
    let mut laptop_chat = school.chat(&laptop).await;
    let mut phone_chat = school.chat(&phone).await;

    let out = laptop.post_form("/_pagegate/logout", &[]).await;
    assert_eq!(out.status, 200, "{}", out.body);

    closed_by_gateway(&mut laptop_chat, "Ann signed out on her laptop").await;
    assert_eq!(
        client::echo(&mut phone_chat, "still here").await,
        "still here",
        "the phone's session was not signed out"
    );
}

#[tokio::test]
async fn a_websocket_ends_when_the_clients_access_period_does() {
    // Ann's access ends in an hour: set in the database before the gateway starts, since the
    // client list's own commands count access in whole days.
    let dir = tempfile::tempdir().expect("temp dir");
    let until = common::api::unix_now() + 3600;
    common::with_store(dir.path(), move |store| {
        use pagegate::store::{AuditEvent, AuditKind, Client, Source};
        let ann = Client {
            email: "ann@example.com".into(),
            name: "Ann".into(),
            created_at: until - 100,
            updated_at: until - 100,
            access_until: Some(until),
            source: Source::Admin,
            last_login: None,
        };
        let audit = AuditEvent {
            at: until - 100,
            kind: AuditKind::ClientAdded,
            site: None,
            page: Some("course".into()),
            email: Some(ann.email.clone()),
            actor: "test".into(),
            detail: String::new(),
        };
        store.put_client("course", &ann, &audit).expect("put");
    })
    .await;
    let school = School::open_in(dir, "", "").await;
    let ann = school.signed_in("ann@example.com").await;
    let mut chat = school.chat(&ann).await;

    // Nothing is written anywhere: only the passing of the end of access can close it. The
    // gateway's clock is moved past it rather than waited for.
    school
        .gateway
        .clock()
        .advance(Duration::from_secs(2 * 3600));
    closed_within(&mut chat, CUT_WAIT, "Ann's access period ended").await;
}

#[tokio::test]
async fn a_websocket_ends_when_the_session_lifetime_does() {
    let school = School::open("", "session_lifetime = \"1h\"").await;
    school.add_client("ann@example.com").await;
    let ann = school.signed_in("ann@example.com").await;
    let mut chat = school.chat(&ann).await;

    school
        .gateway
        .clock()
        .advance(Duration::from_secs(2 * 3600));
    closed_within(&mut chat, CUT_WAIT, "Ann's session reached its lifetime").await;
}

#[tokio::test]
async fn removing_a_client_cuts_their_slow_download() {
    let school = School::open("", "").await;
    school.add_client("ann@example.com").await;
    let ann = school.signed_in("ann@example.com").await;
    // A minute of dripping, a line every 200 ms.
    let mut download = school.download(&ann, 300).await;
    assert_eq!(download.next().await, Some(Ok(())), "still flowing");

    school.remove_client("ann@example.com").await;

    let ended = tokio::time::timeout(CUT_WAIT, download.read_to_end()).await;
    assert_eq!(
        ended,
        Ok(false),
        "the download broke off rather than going on or ending whole"
    );
    assert!(download.chunks < 300);
}

#[tokio::test]
async fn open_tunnels_keep_their_connection_slots() {
    let upstream = TestUpstream::start().await;
    let gateway = TestGateway::in_front_of_with(&upstream, "max_connections = 2").await;
    let mut first = client::websocket(gateway.addr, "chat.test", "/ws/one").await;
    let mut second = client::websocket(gateway.addr, "chat.test", "/ws/two").await;
    assert_eq!(client::echo(&mut first, "one").await, "one");
    assert_eq!(client::echo(&mut second, "two").await, "two");

    // Both slots are taken by the tunnels: a third visitor's connection waits in the backlog.
    let mut third = TcpStream::connect(gateway.addr).await.expect("connect");
    third
        .write_all(b"GET /page HTTP/1.1\r\nHost: chat.test\r\n\r\n")
        .await
        .expect("write");
    // Any answer within this second would be a slot handed out twice.
    let early = tokio::time::timeout(Duration::from_secs(1), client::read_one(&mut third)).await;
    assert!(early.is_err(), "served while two tunnels held both slots");

    first.close(None).await.expect("close");
    drop(first);
    let (status, body) = client::read_one(&mut third)
        .await
        .expect("answered once a tunnel closed");
    assert_eq!(status, 200);
    assert_eq!(body, "hello from upstream /page");
    assert_eq!(client::echo(&mut second, "still").await, "still");
}

#[tokio::test]
async fn a_shutdown_closes_open_tunnels_while_downloads_finish() {
    let school = School::open("shutdown_grace = \"60s\"", "").await;
    school.add_client("ann@example.com").await;
    let ann = school.signed_in("ann@example.com").await;
    let mut chat = school.chat(&ann).await;
    // Five seconds of download, read on by a task of its own.
    const LINES: usize = 25;
    let mut download = school.download(&ann, LINES).await;
    let received = Arc::new(AtomicUsize::new(download.chunks));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                match download.next().await {
                    Some(Ok(())) => received.store(download.chunks, Ordering::SeqCst),
                    Some(Err(_)) => return (download.chunks, false),
                    None => return (download.chunks, true),
                }
            }
        })
    };

    let School {
        upstream: _upstream,
        smtp: _smtp,
        gateway,
    } = school;
    let stopping = tokio::spawn(gateway.stop());

    closed_by_gateway(&mut chat, "the shutdown began").await;
    assert!(
        received.load(Ordering::SeqCst) < LINES,
        "the tunnel was only closed after the download had finished"
    );
    let (lines, whole) = reader.await.expect("reader");
    assert!(whole, "the download ended whole");
    assert_eq!(lines, LINES);
    tokio::time::timeout(CUT_WAIT, stopping)
        .await
        .expect("the gateway stopped once the download was done")
        .expect("stop");
}
