//! Live reload of the real binary: SIGHUP and `pagegate reload` put a changed configuration in
//! force without dropping anything open (keep-alive connections, requests in flight, WebSocket
//! tunnels, TLS connections), and a broken configuration is refused whole.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::TestCa;
use common::client::{self, read_answer};
use common::process::{GatewayProcess, run};
use common::{TestUpstream, write_config};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// How the test asks the gateway to reload.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Sighup,
    Command,
}

/// The configuration: one site, `app.test`, over HTTP and HTTPS, in front of `upstream`, with the
/// certificate `cert` (`<cert>.pem` / `<cert>.key`) and `extra` lines at the end of the site.
fn app_toml(upstream: &TestUpstream, cert: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\n\
         [[site]]\nname = \"app\"\nhosts = [\"app.test\"]\nupstream = \"http://{}\"\n\
         public_url = \"https://app.test\"\nredirect_http = false\n\
         tls = {{ cert = \"{cert}.pem\", key = \"{cert}.key\" }}\n{extra}\n",
        upstream.addr
    )
}

const COURSE_PAGE: &str = "\n[[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n";

/// A gateway process serving `app.test` from `old`, with a second upstream `new` waiting and two
/// certificates for `app.test` (`app-1`, in use, and `app-2`) in its directory.
struct Scene {
    ca: TestCa,
    old: TestUpstream,
    new: TestUpstream,
    cert_1: Vec<u8>,
    cert_2: Vec<u8>,
    config: PathBuf,
    gateway: GatewayProcess,
    _dir: tempfile::TempDir,
}

impl Scene {
    async fn start() -> Scene {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_1 = client::pem_der(&ca.write_leaf(dir.path(), "app-1", &["app.test"]).cert_pem);
        let cert_2 = client::pem_der(&ca.write_leaf(dir.path(), "app-2", &["app.test"]).cert_pem);
        let old = TestUpstream::start().await;
        let new = TestUpstream::start().await;
        let config = write_config(dir.path(), &app_toml(&old, "app-1", ""));
        let gateway = GatewayProcess::serve(&config);
        Scene {
            ca,
            old,
            new,
            cert_1,
            cert_2,
            config,
            gateway,
            _dir: dir,
        }
    }

    /// Replaces the configuration file's text (`data_dir` added as the harness does).
    fn rewrite(&self, toml: &str) {
        let dir = self.config.parent().expect("config dir");
        write_config(dir, toml);
    }

    /// A new TLS connection for `app.test`, trusting the test CA.
    async fn tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        client::tls_connect(
            self.gateway.tls_addr(),
            "app.test",
            self.ca.client_config(&[b"http/1.1"]),
        )
        .await
        .expect("TLS handshake")
    }

    /// Asks for a reload and waits until it is done; the `pagegate reload` output, if used.
    async fn reload(&self, trigger: Trigger) -> (bool, String, String) {
        match trigger {
            Trigger::Sighup => {
                // Both outcomes log a line starting "configuration reload…".
                let before = self.gateway.log_count("configuration reload");
                self.gateway.signal("HUP");
                let outcomes = self
                    .gateway
                    .wait_for_log("configuration reload", before + 1)
                    .await;
                let ok = outcomes
                    .last()
                    .is_some_and(|l| l.contains("configuration reloaded"));
                (ok, String::new(), String::new())
            }
            Trigger::Command => reload_command(&self.config).await,
        }
    }
}

/// `pagegate reload --config FILE`: (success, stdout, stderr).
async fn reload_command(config: &Path) -> (bool, String, String) {
    let config = config.display().to_string();
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || run(&["reload", "--config", &config]))
            .await
            .expect("join");
    (status.success(), stdout, stderr)
}

/// GET `path` on an open HTTP/1.1 connection.
async fn get_on(
    conn: &mut hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
    path: &str,
) -> client::Answer {
    conn.ready().await.expect("the connection is still open");
    let req = client::request("GET", "app.test", path)
        .body(Full::default())
        .expect("request");
    read_answer(
        conn.send_request(req)
            .await
            .expect("the connection is still open"),
    )
    .await
}

/// The story both triggers must tell: upstream moved, page added, certificate swapped, and
/// nothing that was open before notices anything but the new configuration.
async fn a_valid_reload_changes_everything_for_new_requests_and_drops_nothing(trigger: Trigger) {
    let scene = Scene::start().await;
    let addr = scene.gateway.addr;

    // Before: a keep-alive connection, a WebSocket and a TLS connection, all on the old setup.
    let mut keep_alive = client::http1(addr).await;
    let before = get_on(&mut keep_alive, "/course/intro").await;
    assert_eq!(before.status, 200, "the course is not protected yet");
    assert_eq!(scene.old.last().target, "/course/intro");
    let mut ws = client::websocket(addr, "app.test", "/ws").await;
    assert_eq!(client::echo(&mut ws, "before").await, "before");
    let old_tls = scene.tls().await;
    assert_eq!(client::peer_leaf(&old_tls), scene.cert_1);
    let (mut tls_conn, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old_tls))
        .await
        .expect("h1 over TLS");
    tokio::spawn(conn);
    assert_eq!(get_on(&mut tls_conn, "/over-tls").await.status, 200);

    // A slow request is in flight while the configuration changes.
    let in_flight = tokio::spawn(client::get(addr, "app.test", "/slow/3000"));
    while !scene.old.seen().iter().any(|s| s.target == "/slow/3000") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    scene.rewrite(&app_toml(&scene.new, "app-2", COURSE_PAGE));
    let (ok, stdout, stderr) = scene.reload(trigger).await;
    assert!(
        ok,
        "reload refused: {stdout}{stderr}\n{}",
        scene.gateway.log()
    );
    if let Trigger::Command = trigger {
        assert!(
            stdout.contains("reloaded ") && stdout.contains("(sites: 1, pages: 1)"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("restart"),
            "nothing needs a restart: {stdout}"
        );
    }

    // The request in flight finished on the old configuration.
    let slow = in_flight.await.expect("task");
    assert_eq!(
        (slow.status.as_u16(), slow.body.as_str()),
        (200, "slow done")
    );

    // The same keep-alive connection: the new page is protected at once, the rest goes to the
    // new upstream.
    let old_count = scene.old.count();
    let protected = get_on(&mut keep_alive, "/course/intro").await;
    assert_eq!(protected.status, 302, "{}", protected.body);
    assert_eq!(
        protected.header("location"),
        Some("/_pagegate/login?next=%2Fcourse%2Fintro")
    );
    let moved = get_on(&mut keep_alive, "/after").await;
    assert_eq!(moved.body, "hello from upstream /after");
    assert_eq!(scene.new.last().target, "/after");
    assert_eq!(
        scene.new.count(),
        1,
        "the protected page reached no upstream"
    );
    assert_eq!(
        scene.old.count(),
        old_count,
        "nothing more went to the old upstream"
    );

    // The page the reload added can be managed at once through the control socket.
    let input = serde_json::json!({ "page": "course", "email": "ann@example.com" });
    let data_dir = scene.config.parent().expect("dir").join("data");
    let (status, body) = pagegate::server::control::call(
        &data_dir,
        http::Method::POST,
        "/v1/clients",
        Some(input.to_string().into_bytes()),
    )
    .await
    .expect("control socket");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));

    // The tunnel opened before the reload still echoes.
    assert_eq!(client::echo(&mut ws, "after").await, "after");

    // A new handshake gets the new certificate; the TLS connection from before stays usable
    // and its next request follows the new configuration too.
    assert_eq!(client::peer_leaf(&scene.tls().await), scene.cert_2);
    assert_eq!(get_on(&mut tls_conn, "/tls-after").await.status, 200);
    assert_eq!(scene.new.last().target, "/tls-after");

    assert_eq!(
        scene.gateway.log_count(" ERROR "),
        0,
        "{}",
        scene.gateway.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_dropping_connections() {
    a_valid_reload_changes_everything_for_new_requests_and_drops_nothing(Trigger::Sighup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagegate_reload_reloads_without_dropping_connections() {
    a_valid_reload_changes_everything_for_new_requests_and_drops_nothing(Trigger::Command).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_need_a_restart_are_named_and_the_rest_applies() {
    let scene = Scene::start().await;
    let changed = app_toml(&scene.new, "app-1", "")
        .replace("[server]\n", "[server]\nmax_connections = 10\n")
        .replace(
            "listen = \"127.0.0.1:0\"\ntls",
            "listen = \"127.0.0.1:1\"\ntls",
        );
    scene.rewrite(&changed);

    let (ok, stdout, stderr) = reload_command(&scene.config).await;
    assert!(ok, "{stderr}");
    for key in ["server.listen", "server.max_connections"] {
        assert!(
            stdout.contains(&format!("warning: `{key}` changed")),
            "{key} missing in:\n{stdout}"
        );
        let warned = scene
            .gateway
            .wait_for_log(&format!("`{key}` changed"), 1)
            .await;
        assert!(warned[0].contains(" WARN "), "{warned:?}");
    }
    // The upstream changed; the listener did not move.
    let answer = client::get(scene.gateway.addr, "app.test", "/moved").await;
    assert_eq!(answer.status, 200);
    assert_eq!(scene.new.last().target, "/moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_whole_and_the_old_one_keeps_serving() {
    let scene = Scene::start().await;
    let addr = scene.gateway.addr;
    let mut keep_alive = client::http1(addr).await;
    assert_eq!(get_on(&mut keep_alive, "/first").await.status, 200);

    // An unknown key, beside changes that would be valid on their own.
    scene.rewrite(
        &app_toml(&scene.new, "app-2", COURSE_PAGE).replace("redirect_http", "redirect_htp"),
    );
    let (ok, _, stderr) = reload_command(&scene.config).await;
    assert!(!ok, "an unknown key was accepted");
    assert!(
        stderr.contains("unknown field `redirect_htp`") && stderr.contains("gateway.toml"),
        "{stderr}"
    );
    let logged = scene
        .gateway
        .wait_for_log("configuration reload refused", 1)
        .await;
    assert!(
        logged[0].contains(" ERROR ") && logged[0].contains("redirect_htp"),
        "{logged:?}"
    );

    // A certificate file that is not there.
    scene.rewrite(&app_toml(&scene.new, "app-missing", COURSE_PAGE));
    let (ok, _, stderr) = reload_command(&scene.config).await;
    assert!(!ok, "a missing certificate was accepted");
    assert!(
        stderr.contains("`site[0].tls.cert`") && stderr.contains("app-missing.pem does not exist"),
        "{stderr}"
    );
    let logged = scene
        .gateway
        .wait_for_log("configuration reload refused", 2)
        .await;
    assert!(
        logged[1].contains(" ERROR ") && logged[1].contains("site[0].tls.cert"),
        "{logged:?}"
    );

    // The same by SIGHUP: refused and logged.
    scene.gateway.signal("HUP");
    scene
        .gateway
        .wait_for_log("configuration reload refused", 3)
        .await;

    // Everything is as it was: the old upstream, no protected page, the old certificate.
    let answer = get_on(&mut keep_alive, "/course/still-open").await;
    assert_eq!(answer.status, 200);
    assert_eq!(scene.old.last().target, "/course/still-open");
    assert_eq!(scene.new.count(), 0);
    assert_eq!(client::peer_leaf(&scene.tls().await), scene.cert_1);
    assert_eq!(scene.gateway.log_count("configuration reloaded"), 0);
}

#[tokio::test]
async fn an_open_tls_connection_follows_its_server_name_to_the_site_that_now_has_it() {
    let ca = TestCa::new();
    let (a, b) = (TestUpstream::start().await, TestUpstream::start().await);
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write_leaf(dir.path(), "a", &["a.test"]);
    ca.write_leaf(dir.path(), "b", &["b.test"]);
    let site = |name: &str, upstream: &TestUpstream| {
        format!(
            "[[site]]\nhosts = [\"{name}.test\"]\nupstream = \"http://{}\"\n\
             tls = {{ cert = \"{name}.pem\", key = \"{name}.key\" }}\n\n",
            upstream.addr
        )
    };
    let server = "[server]\ntls_listen = \"127.0.0.1:0\"\n\n";
    let gateway =
        common::TestGateway::start_in(dir, &format!("{server}{}{}", site("a", &a), site("b", &b)))
            .await;
    let tls_addr = gateway.tls_addr.expect("tls listener");
    let connect = |name: &'static str| {
        let config = ca.client_config(&[b"http/1.1"]);
        async move {
            let stream = client::tls_connect(tls_addr, name, config)
                .await
                .expect("TLS handshake");
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("h1");
            tokio::spawn(conn);
            send
        }
    };
    let mut to_a = connect("a.test").await;
    let mut to_b = connect("b.test").await;
    let get = |host: &'static str, path: &'static str| {
        client::request("GET", host, path)
            .body(Full::<bytes::Bytes>::default())
            .expect("request")
    };
    let send = async |conn: &mut hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
                      req| {
        conn.ready().await.expect("open");
        read_answer(conn.send_request(req).await.expect("send")).await
    };
    assert_eq!(send(&mut to_a, get("a.test", "/1")).await.status, 200);
    assert_eq!(send(&mut to_b, get("b.test", "/1")).await.status, 200);

    // The sites swap places in the file, and b.test is then removed.
    gateway
        .reload(&format!("{server}{}{}", site("b", &b), site("a", &a)))
        .await
        .expect("reordered");
    assert_eq!(send(&mut to_a, get("a.test", "/2")).await.status, 200);
    assert_eq!(a.last().target, "/2", "a.test still reaches a's upstream");
    assert_eq!(send(&mut to_b, get("b.test", "/2")).await.status, 200);
    assert_eq!(b.last().target, "/2");

    gateway
        .reload(&format!("{server}{}", site("a", &a)))
        .await
        .expect("b.test removed");
    let before = a.count() + b.count();
    // The connection made for b.test may not be used for any site now, not even a.test.
    assert_eq!(send(&mut to_b, get("b.test", "/3")).await.status, 421);
    assert_eq!(send(&mut to_b, get("a.test", "/3")).await.status, 421);
    assert_eq!(a.count() + b.count(), before, "nothing was forwarded");
    assert_eq!(send(&mut to_a, get("a.test", "/3")).await.status, 200);
    assert!(
        client::tls_connect(tls_addr, "b.test", ca.client_config(&[]))
            .await
            .is_err(),
        "no certificate for a name no site has"
    );
}

#[test]
fn pagegate_reload_without_a_running_gateway_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[[site]]\nhosts = [\"a.test\"]\nupstream = \"http://127.0.0.1:9\"\n",
    );
    let (status, _, stderr) = run(&["reload", "--config", &config.display().to_string()]);
    assert!(!status.success());
    assert!(
        stderr.contains("no running gateway answers on the control socket"),
        "{stderr}"
    );
    // Nothing was refused: there was no gateway to refuse.
    assert!(!stderr.contains("refused"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_has_nothing_to_reload_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = GatewayProcess::demo(&dir.path().join("demo-data"));
    gateway.signal("HUP");
    gateway.wait_for_log("nothing to reload", 1).await;
    gateway.assert_demo_home().await;
}
