//! The nginx model of `pagegate_fuzz::upstreams` against a real nginx (Debian's
//! `/usr/sbin/nginx`, package `nginx-light`): for a sample of paths built from the fuzz tokens,
//! and for those in the differential target's corpus, nginx's `$uri` (or its 400) must be what
//! the model says. Run it from `fuzz/` with
//! `cargo test --test nginx_model -- --nocapture`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pagegate_fuzz::PATH_TOKENS;
use pagegate_fuzz::upstreams::nginx;

const NGINX: &str = "/usr/sbin/nginx";

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: tempdir::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A folder under the system's temporary folder, removed on drop.
    pub struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let path = std::env::temp_dir().join(format!("nginx-model-{}", std::process::id()));
            std::fs::create_dir_all(path.join("tmp")).expect("temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// nginx answering every request with its `$uri`, the path it would serve.
fn start() -> Nginx {
    assert!(
        Path::new(NGINX).is_file(),
        "{NGINX} is missing: apt-get install nginx-light"
    );
    let dir = tempdir::TempDir::new();
    let d = dir.0.display();
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log \"{d}/error.log\";\n\
         pid \"{d}/nginx.pid\";\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path \"{d}/tmp/body\";\n  proxy_temp_path \"{d}/tmp/proxy\";\n\
         fastcgi_temp_path \"{d}/tmp/fastcgi\";\n  uwsgi_temp_path \"{d}/tmp/uwsgi\";\n\
         scgi_temp_path \"{d}/tmp/scgi\";\n  default_type text/plain;\n  server {{\n\
         listen {addr};\n    location / {{ return 200 \"$uri\"; }}\n  }}\n}}\n"
    );
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        child,
        addr,
        _dir: dir,
    }
}

/// nginx's answer to `GET {path}`: the body of a 200, or `None` for a 400.
fn ask(addr: SocketAddr, path: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(path);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).expect("send");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
    }
    match status.split(' ').nth(1) {
        Some("200") => {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            Some(body)
        }
        Some("400") => None,
        other => panic!(
            "{:?}: unexpected status {other:?}",
            String::from_utf8_lossy(path)
        ),
    }
}

#[test]
fn the_nginx_model_reads_paths_as_nginx_does() {
    let server = start();
    let mut paths: Vec<Vec<u8>> = Vec::new();
    for a in PATH_TOKENS {
        for b in PATH_TOKENS {
            paths.push(format!("/{a}{b}").into_bytes());
        }
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut path = b"/".to_vec();
        for _ in 0..2 + next() % 5 {
            path.extend_from_slice(
                PATH_TOKENS[(next() % PATH_TOKENS.len() as u64) as usize].as_bytes(),
            );
        }
        paths.push(path);
    }
    // And the paths the differential target kept, when it has run.
    if let Ok(entries) = std::fs::read_dir("corpus/path_upstreams") {
        for entry in entries.flatten() {
            if let Ok(data) = std::fs::read(entry.path()) {
                paths.push(pagegate_fuzz::path_from_tokens(&data).into_bytes());
            }
        }
    }
    // A space ends the request target: nginx would read another one than the model is given.
    paths.retain(|p| !p.contains(&b' '));
    let mut differ = Vec::new();
    let mut refused = 0;
    for path in &paths {
        let real = ask(server.addr, path);
        refused += usize::from(real.is_none());
        let model = nginx(path, true);
        if real != model {
            differ.push(format!(
                "{:?}: nginx {:?}, model {:?}",
                String::from_utf8_lossy(path),
                real.map(|u| String::from_utf8_lossy(&u).into_owned()),
                model.map(|u| String::from_utf8_lossy(&u).into_owned()),
            ));
        }
    }
    println!(
        "{} paths, {refused} refused by nginx, {} read differently by the model",
        paths.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
