//! The store benchmark's load driver (`.ci/bench-store.sh`): durable writes through the real
//! HTTP endpoints, many clients at once, and how fast a removal on one gateway closes the door on
//! another.
//!
//! wrk measures one URL over and over; these are flows. A grant is one `POST` with a Bearer key;
//! a full sign-in is what a browser does: the email form (`GET {prefix}/login`, which sets the
//! CSRF cookie), the code request (`POST {prefix}/login`), the code read from the `.eml` file the
//! file transport writes, and the code entry (`POST {prefix}/verify`, answered `303` with the
//! session cookie). Each client keeps one keep-alive connection and, unless `--one-address` is
//! given, connects from its own loopback address (127.0.1.N), so the per-address rate limits
//! count 50 visitors, not one.
//!
//! ```text
//! store_load grants  --addr A --key SHOP_KEY --from I --count N [--clients 50] [--prefix P]
//! store_load signins --addr A --maildir DIR --from I --count N [--clients 50] [--prefix P]
//!                    [--one-address]
//! store_load removal --addr A --remove-via B --key ADMIN_KEY --maildir DIR_OF_A --from I
//!                    --count N [--clients 50] [--prefix P]
//! ```
//!
//! Emails are `P-I@example.com` … `P-(I+N-1)@example.com`; order ids are the same strings.
//! Sign-ins need the emails to be clients of page `course` (grant them first). `removal` signs
//! them all in on A, then one at a time: checks the session opens `/course/1k` on A (`200`,
//! twice, so that A answers from memory), removes the client through B's admin API (`204`), and
//! asks A again, back to back, until it answers `302`; the time is from B's `204` to A's first
//! `302`.
//!
//! Prints one line: `GRANTS per_sec=… done=… errors=… seconds=… p50_ms=… p99_ms=…`, `SIGNINS …`
//! alike, or `REMOVAL rounds=… median_ms=… p90_ms=… p99_ms=… max_ms=… min_ms=… polls_median=…
//! polls_max=… closed_at_first_poll=…` (rounds whose very first request after the `204` was
//! already refused).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::oneshot;

/// Where the next page of a sign-in points: the protected file of the benchmark.
const NEXT: &str = "/course/1k";
const PREFIX: &str = "/_pagegate";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Grants,
    Signins,
    Removal,
}

struct Args {
    mode: Mode,
    addr: SocketAddr,
    remove_via: Option<SocketAddr>,
    key: String,
    maildir: Option<PathBuf>,
    from: usize,
    count: usize,
    clients: usize,
    prefix: String,
    one_address: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = match it.next().as_deref() {
        Some("grants") => Mode::Grants,
        Some("signins") => Mode::Signins,
        Some("removal") => Mode::Removal,
        other => {
            return Err(format!(
                "expected grants, signins or removal, got {other:?}"
            ));
        }
    };
    let mut args = Args {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        remove_via: None,
        key: String::new(),
        maildir: None,
        from: 0,
        count: 1000,
        clients: 50,
        prefix: "buyer".into(),
        one_address: false,
    };
    fn number(flag: &str, v: String) -> Result<usize, String> {
        v.parse().map_err(|e| format!("{flag}: {e}"))
    }
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--remove-via" => {
                args.remove_via = Some(value()?.parse().map_err(|e| format!("--remove-via: {e}"))?)
            }
            "--key" => args.key = value()?,
            "--maildir" => args.maildir = Some(PathBuf::from(value()?)),
            "--from" => args.from = number(&flag, value()?)?,
            "--count" => args.count = number(&flag, value()?)?,
            "--clients" => args.clients = number(&flag, value()?)?.clamp(1, 250),
            "--prefix" => args.prefix = value()?,
            "--one-address" => args.one_address = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.mode != Mode::Grants && args.maildir.is_none() {
        return Err("--maildir is required".into());
    }
    if args.mode != Mode::Signins && args.key.is_empty() {
        return Err("--key is required".into());
    }
    if args.mode == Mode::Removal && args.remove_via.is_none() {
        return Err("--remove-via is required".into());
    }
    Ok(args)
}

/// A failed step: what was asked and what came back.
type Failure = String;

/// One keep-alive HTTP/1.1 connection from a chosen local address.
struct Conn {
    to: SocketAddr,
    from: IpAddr,
    send: Option<SendRequest<Full<Bytes>>>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Conn {
    fn new(to: SocketAddr, from: IpAddr) -> Conn {
        Conn {
            to,
            from,
            send: None,
        }
    }

    async fn open(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(SocketAddr::new(self.from, 0))
                .map_err(|e| format!("bind {}: {e}", self.from))?;
            socket
                .set_nodelay(true)
                .map_err(|e| format!("nodelay: {e}"))?;
            let stream = socket
                .connect(self.to)
                .await
                .map_err(|e| format!("connect {}: {e}", self.to))?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.send = Some(send);
        }
        self.send
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// Sends one request and reads the whole answer; reconnects once if the server had closed
    /// the idle connection.
    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let what = format!("{} {}", request.method(), request.uri());
        let send = self.open().await?;
        send.ready().await.map_err(|e| format!("{what}: {e}"))?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{what}: body: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "store.bench");
    for (name, value) in headers {
        r = r.header(*name, *value);
    }
    r.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|e| panic!("building {method} {path}: {e}"))
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into_bytes()
}

/// A browser's cookies for one site: every `Set-Cookie` kept and sent back.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(http::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            self.0.retain(|(n, _)| n != name);
            self.0
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
}

/// Codes from the mail folder, handed to whoever waits for the recipient's.
///
/// One task reads the folder every millisecond or two, takes each new `.eml` (and deletes it, so
/// the folder stays small however many sign-ins run), and sends the code to the waiter
/// registered for its `To:` address.
#[derive(Default)]
struct Mailbox {
    waiting: Mutex<HashMap<String, oneshot::Sender<String>>>,
}

impl Mailbox {
    fn expect(&self, email: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(email.to_owned(), tx);
        rx
    }

    fn watch(self: Arc<Self>, dir: PathBuf) {
        std::thread::spawn(move || {
            loop {
                let mut found = false;
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        let path = entry.path();
                        if path.extension().is_none_or(|e| e != "eml") {
                            continue;
                        }
                        let Ok(text) = std::fs::read_to_string(&path) else {
                            continue;
                        };
                        let Some((to, code)) = parse_mail(&text) else {
                            continue;
                        };
                        let _ = std::fs::remove_file(&path);
                        found = true;
                        let waiter = self
                            .waiting
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&to);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(code);
                        }
                    }
                }
                if !found {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
    }
}

/// The recipient and the code of a sign-in mail; `None` for a mail not yet fully written.
fn parse_mail(text: &str) -> Option<(String, String)> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))?;
    let to = head.lines().find_map(|l| l.strip_prefix("To: "))?.trim();
    let to = match (to.rfind('<'), to.rfind('>')) {
        (Some(a), Some(b)) if a < b => &to[a + 1..b],
        _ => to,
    };
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let end = (i..bytes.len())
                .find(|&j| !bytes[j].is_ascii_digit())
                .unwrap_or(bytes.len());
            let after_ok = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
            if end - i == 6 && after_ok {
                return Some((to.to_ascii_lowercase(), body[i..end].to_owned()));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    None
}

fn email(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}@example.com")
}

/// The local address of client `k`.
fn local_address(k: usize, one_address: bool) -> IpAddr {
    if one_address {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::new(127, 0, 1, (k % 250 + 1) as u8))
    }
}

fn csrf_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let len = text[at..].find('"')?;
    Some(text[at..at + len].to_owned())
}

/// The full sign-in of `email` in a fresh browser; its cookies once signed in.
async fn sign_in(conn: &mut Conn, mailbox: &Mailbox, email: &str) -> Result<Jar, Failure> {
    let mut jar = Jar::default();
    let page = conn
        .exchange(request(
            "GET",
            &format!("{PREFIX}/login?next={NEXT}"),
            &[],
            Vec::new(),
        ))
        .await?;
    jar.take(&page.headers);
    let csrf = csrf_of(&page.body)
        .ok_or_else(|| format!("no CSRF token on the form ({})", page.status))?;
    let code = mailbox.expect(email);
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let asked = conn
        .exchange(request(
            "POST",
            &format!("{PREFIX}/login"),
            &[form_type, ("cookie", &jar.header())],
            form(&[("email", email), ("next", NEXT), ("csrf", &csrf)]),
        ))
        .await?;
    if !asked.status.is_success() {
        return Err(format!("code request for {email}: {}", asked.status));
    }
    jar.take(&asked.headers);
    let code = tokio::time::timeout(Duration::from_secs(30), code)
        .await
        .map_err(|_| format!("no mail for {email} within 30 s"))?
        .map_err(|_| "mail watcher gone".to_string())?;
    let verified = conn
        .exchange(request(
            "POST",
            &format!("{PREFIX}/verify"),
            &[form_type, ("cookie", &jar.header())],
            form(&[
                ("email", email),
                ("code", &code),
                ("next", NEXT),
                ("csrf", &csrf),
            ]),
        ))
        .await?;
    if verified.status != StatusCode::SEE_OTHER {
        return Err(format!("code entry for {email}: {}", verified.status));
    }
    jar.take(&verified.headers);
    Ok(jar)
}

async fn grant(conn: &mut Conn, key: &str, email: &str) -> Result<(), Failure> {
    let body = serde_json::json!({"page": "course", "email": email, "days": 30, "order_id": email});
    let answer = conn
        .exchange(request(
            "POST",
            &format!("{PREFIX}/api/v1/grants"),
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {key}")),
            ],
            body.to_string().into_bytes(),
        ))
        .await?;
    if answer.status != StatusCode::CREATED {
        return Err(format!(
            "grant {email}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// Runs `count` operations from `clients` clients at once, each taking the next index; returns
/// the latencies of those that succeeded, the errors and the wall time.
async fn run_many<F, Fut, T>(
    args: &Args,
    to: SocketAddr,
    op: F,
) -> (Vec<Duration>, Vec<T>, u64, Duration)
where
    F: Fn(Conn, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Conn, Result<T, Failure>)> + Send,
    T: Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..args.clients {
        let (next, errors, op) = (next.clone(), errors.clone(), op.clone());
        let (from, count) = (args.from, args.count as u64);
        let mut conn = Conn::new(to, local_address(k, args.one_address));
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut outs = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let sent = Instant::now();
                let (back, out) = op(conn, from + i as usize).await;
                conn = back;
                match out {
                    Ok(v) => {
                        times.push(sent.elapsed());
                        outs.push(v);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("store_load: {e}");
                        }
                        conn.send = None;
                    }
                }
            }
            (times, outs)
        }));
    }
    let mut times = Vec::new();
    let mut outs = Vec::new();
    for task in tasks {
        if let Ok((t, o)) = task.await {
            times.extend(t);
            outs.extend(o);
        }
    }
    let elapsed = started.elapsed();
    times.sort();
    (times, outs, errors.load(Ordering::Relaxed), elapsed)
}

fn report(name: &str, times: &[Duration], errors: u64, elapsed: Duration) {
    println!(
        "{name} per_sec={:.0} done={} errors={errors} seconds={:.2} p50_ms={:.1} p99_ms={:.1}",
        times.len() as f64 / elapsed.as_secs_f64(),
        times.len(),
        elapsed.as_secs_f64(),
        ms(quantile(times, 0.5)),
        ms(quantile(times, 0.99)),
    );
}

fn mailbox(args: &Args) -> Arc<Mailbox> {
    let mailbox = Arc::new(Mailbox::default());
    if let Some(dir) = &args.maildir {
        mailbox.clone().watch(dir.clone());
    }
    mailbox
}

async fn grants(args: Args) {
    let (key, prefix) = (Arc::new(args.key.clone()), Arc::new(args.prefix.clone()));
    let (times, _, errors, elapsed) = run_many(&args, args.addr, move |mut conn, i| {
        let (key, prefix) = (key.clone(), prefix.clone());
        async move {
            let out = grant(&mut conn, &key, &email(&prefix, i)).await;
            (conn, out)
        }
    })
    .await;
    report("GRANTS", &times, errors, elapsed);
}

/// Signs the emails in on `args.addr`; their cookie headers.
async fn sign_in_all(args: &Args, print: bool) -> (Vec<(String, String)>, u64) {
    let mailbox = mailbox(args);
    let prefix = Arc::new(args.prefix.clone());
    let (times, jars, errors, elapsed) = run_many(args, args.addr, move |mut conn, i| {
        let (mailbox, prefix) = (mailbox.clone(), prefix.clone());
        async move {
            let email = email(&prefix, i);
            let out = sign_in(&mut conn, &mailbox, &email).await;
            (conn, out.map(|jar| (email, jar.header())))
        }
    })
    .await;
    if print {
        report("SIGNINS", &times, errors, elapsed);
    }
    (jars, errors)
}

async fn removal(args: Args) {
    let Some(via) = args.remove_via else { return };
    let (mut signed_in, errors) = sign_in_all(&args, false).await;
    if errors > 0 {
        println!("REMOVAL rounds=0 errors={errors} (sign-ins failed)");
        return;
    }
    signed_in.sort();
    let mut a = Conn::new(args.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut b = Conn::new(via, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let auth = format!("Bearer {}", args.key);
    let mut times = Vec::new();
    let mut polls = Vec::new();
    let mut failures = 0u64;
    for (email, cookie) in &signed_in {
        let get = || request("GET", NEXT, &[("cookie", cookie)], Vec::new());
        let round = async {
            // Twice: the second answer comes from what A keeps in memory, the case that must
            // not outlive the removal.
            for _ in 0..2 {
                let before = a.exchange(get()).await?;
                if before.status != StatusCode::OK {
                    return Err(format!("{email} before removal: {}", before.status));
                }
            }
            let removed = b
                .exchange(request(
                    "DELETE",
                    &format!("{PREFIX}/api/v1/pages/course/clients/{email}"),
                    &[("authorization", &auth)],
                    Vec::new(),
                ))
                .await?;
            let at = Instant::now();
            if removed.status != StatusCode::NO_CONTENT {
                return Err(format!("removing {email}: {}", removed.status));
            }
            let mut n = 0u64;
            loop {
                n += 1;
                let after = a.exchange(get()).await?;
                match after.status {
                    StatusCode::FOUND => return Ok((at.elapsed(), n)),
                    StatusCode::OK if at.elapsed() < Duration::from_secs(30) => {}
                    other => return Err(format!("{email} after removal: {other}")),
                }
            }
        };
        match round.await {
            Ok((t, n)) => {
                times.push(t);
                polls.push(n);
            }
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("store_load: {e}");
                }
                a.send = None;
                b.send = None;
            }
        }
    }
    times.sort();
    polls.sort();
    println!(
        "REMOVAL rounds={} errors={failures} median_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} min_ms={:.2} polls_median={} polls_max={} closed_at_first_poll={}",
        times.len(),
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.9)),
        ms(quantile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default()),
        ms(times.first().copied().unwrap_or_default()),
        polls.get(polls.len() / 2).copied().unwrap_or(0),
        polls.last().copied().unwrap_or(0),
        polls.iter().filter(|&&n| n == 1).count(),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("store_load: {e}");
            std::process::exit(2);
        }
    };
    match args.mode {
        Mode::Grants => grants(args).await,
        Mode::Signins => {
            sign_in_all(&args, true).await;
        }
        Mode::Removal => removal(args).await,
    }
}
