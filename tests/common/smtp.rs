//! A real SMTP server for tests: mailin-embedded on 127.0.0.1, no TLS, recording every message it
//! accepts, and able to refuse recipients or messages with a chosen reply code. Plus small MIME
//! helpers to read a received message: headers (RFC 2047 words decoded) and the text or HTML part
//! (quoted-printable or base64 decoded), and the code in it.
//!
//! mailin-embedded has no way to stop a running server: its accept loop runs forever. Dropping a
//! `TestSmtp` leaves the server thread and its listening socket alive until the test process ends
//! (a few idle threads per test binary); only the recorded messages are freed with the last handle.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use mailin_embedded::{Action, Handler, Response, Server, response};

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as transmitted (dot-stuffing removed), CRLF line ends.
    pub data: String,
}

impl Received {
    /// A top-level header's value, unfolded, raw (encoded words left as they are).
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.data, name)
    }

    /// A top-level header's value, unfolded, with RFC 2047 encoded words decoded.
    pub fn decoded_header(&self, name: &str) -> Option<String> {
        header(&self.data, name).map(|v| decode_words(&v))
    }

    /// The decoded subject.
    pub fn subject(&self) -> Option<String> {
        self.decoded_header("Subject")
    }

    /// The decoded text/plain part.
    pub fn text(&self) -> Option<String> {
        part(&self.data, "text/plain")
    }

    /// The decoded text/html part.
    pub fn html(&self) -> Option<String> {
        part(&self.data, "text/html")
    }

    /// The first run of exactly `digits` ASCII digits in the text part: the one-time code.
    pub fn code(&self, digits: usize) -> Option<String> {
        find_code(&self.text()?, digits)
    }
}

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Accept everything.
    None,
    /// Answer every `RCPT TO` with this code (4xx transient, 5xx permanent).
    Rcpt(u16),
    /// Answer the next `RCPT TO`s with this code, as many as the count, then accept everything:
    /// a server deferring mail for a while (greylisting, a queue that is full).
    RcptFirst(u16, usize),
    /// Accept the message data, then answer the final `.` with this code and close the
    /// connection.
    Data(u16),
}

struct Shared {
    messages: Mutex<Vec<Received>>,
    refusal: Mutex<Refusal>,
    /// `RCPT TO` commands received, accepted or not: how many times a client tried.
    rcpt_attempts: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn refusal(&self) -> Refusal {
        *self.refusal.lock().expect("refusal lock")
    }

    /// The answer to one `RCPT TO`: a refusal code, or `None` to accept. Counts down
    /// [`Refusal::RcptFirst`].
    fn rcpt_refusal(&self) -> Option<u16> {
        self.rcpt_attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut refusal = self.refusal.lock().expect("refusal lock");
        match *refusal {
            Refusal::Rcpt(code) => Some(code),
            Refusal::RcptFirst(code, left) if left > 0 => {
                *refusal = if left == 1 {
                    Refusal::None
                } else {
                    Refusal::RcptFirst(code, left - 1)
                };
                Some(code)
            }
            _ => None,
        }
    }
}

/// mailin clones the handler for each connection, so the per-transaction fields are per session.
#[derive(Clone)]
struct Recorder {
    shared: Arc<Shared>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        match self.shared.rcpt_refusal() {
            // The address is echoed, as real servers do, so tests can check it is masked.
            Some(code) => Response::custom(code, format!("<{to}> refused by TestSmtp")),
            None => response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_string();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let data = std::mem::take(&mut self.data);
        if let Refusal::Data(code) = self.shared.refusal() {
            // mailin stays in its DATA state after an error here, so it would take the client's
            // next command (QUIT) for message text and never answer it. Closing after the reply,
            // as many servers do, keeps the exchange well defined.
            let mut refused = Response::custom(code, "message refused by TestSmtp".to_string());
            refused.action = Action::Close;
            return refused;
        }
        self.shared
            .messages
            .lock()
            .expect("messages lock")
            .push(Received {
                from: std::mem::take(&mut self.from),
                to: std::mem::take(&mut self.to),
                data: String::from_utf8_lossy(&data).into_owned(),
            });
        response::OK
    }
}

/// A running SMTP server; see the module documentation about its lifetime.
pub struct TestSmtp {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TestSmtp {
    /// A server accepting every message.
    pub fn start() -> TestSmtp {
        Self::start_refusing(Refusal::None)
    }

    /// A server answering as `refusal` says (changeable later with [`TestSmtp::set_refusal`]).
    pub fn start_refusing(refusal: Refusal) -> TestSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test SMTP server");
        let addr = listener.local_addr().expect("test SMTP address");
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            refusal: Mutex::new(refusal),
            rcpt_attempts: std::sync::atomic::AtomicUsize::new(0),
        });
        let mut server = Server::new(Recorder {
            shared: Arc::clone(&shared),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        });
        // Pooled client connections each hold a worker while idle: leave room for several.
        server
            .with_name("testsmtp.localhost")
            .with_num_threads(16)
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name(format!("test-smtp-{}", addr.port()))
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("test SMTP server on {addr} stopped: {e}");
                }
            })
            .expect("spawn the test SMTP server");
        TestSmtp { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, answer as `refusal` says.
    pub fn set_refusal(&self, refusal: Refusal) {
        *self.shared.refusal.lock().expect("refusal lock") = refusal;
    }

    /// How many `RCPT TO` commands arrived so far, refused ones included: one per try of a
    /// one-recipient message.
    pub fn rcpt_attempts(&self) -> usize {
        self.shared
            .rcpt_attempts
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().expect("messages lock").clone()
    }

    /// Waits until at least `count` messages arrived and returns them all; panics after
    /// `timeout` saying how many did arrive.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let start = tokio::time::Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "expected {count} message(s) at the test SMTP server within {timeout:?}, got {}",
                    messages.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `[mail]` and `[mail.smtp]` tables sending to this server without TLS.
    pub fn mail_toml(&self, from: &str) -> String {
        format!(
            "[mail]\ntransport = \"smtp\"\nfrom = {from:?}\n\n[mail.smtp]\nhost = \"{}\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n",
            self.addr.ip(),
            self.addr.port()
        )
    }
}

/// Splits a message or MIME part into its header block and body.
pub fn split(raw: &str) -> (&str, &str) {
    if let Some(at) = raw.find("\r\n\r\n") {
        (&raw[..at], &raw[at + 4..])
    } else if let Some(at) = raw.find("\n\n") {
        (&raw[..at], &raw[at + 2..])
    } else {
        (raw, "")
    }
}

/// Headers of a header block, unfolded, in order: (name, raw value).
pub fn headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The first header `name` (case-insensitive) of the message's top-level header block.
pub fn header(raw: &str, name: &str) -> Option<String> {
    headers(split(raw).0)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A parameter of a structured header value such as `multipart/alternative; boundary="x"`.
pub fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The decoded body of the first part of type `mime` (e.g. `text/plain`), searching nested
/// multiparts; the message itself counts when it is not multipart.
pub fn part(raw: &str, mime: &str) -> Option<String> {
    let (head, body) = split(raw);
    let fields = headers(head);
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_type = get("Content-Type").unwrap_or_else(|| "text/plain".to_string());
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if kind.starts_with("multipart/") {
        let boundary = parameter(&content_type, "boundary")?;
        let delimiter = format!("--{boundary}");
        let mut sections = body.split(delimiter.as_str());
        sections.next(); // preamble
        for section in sections {
            if section.starts_with("--") {
                break; // closing delimiter
            }
            let section = section.strip_prefix("\r\n").unwrap_or(section);
            let section = section.strip_suffix("\r\n").unwrap_or(section);
            if let Some(found) = part(section, mime) {
                return Some(found);
            }
        }
        return None;
    }
    if kind != mime.to_ascii_lowercase() {
        return None;
    }
    let encoding = get("Content-Transfer-Encoding")
        .unwrap_or_else(|| "7bit".to_string())
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("valid base64 body")
        }
        "quoted-printable" => decode_quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    Some(String::from_utf8(bytes).expect("UTF-8 body"))
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes and `=` soft line breaks.
pub fn decode_quoted_printable(body: &str) -> Vec<u8> {
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else if let Some(byte) = rest
            .get(..2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`); whitespace between two
/// encoded words is dropped, as the RFC says. Assumes UTF-8, which is what pagegate sends.
pub fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = rest[start + 2..]
            .split_once("?=")
            .and_then(|(inner, tail)| {
                let mut fields = inner.splitn(3, '?');
                let (_charset, encoding, text) = (fields.next()?, fields.next()?, fields.next()?);
                let bytes = match encoding.to_ascii_lowercase().as_str() {
                    "b" => base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .ok()?,
                    "q" => decode_quoted_printable(&text.replace('_', " ")),
                    _ => return None,
                };
                Some((String::from_utf8(bytes).ok()?, tail))
            });
        let Some((word, tail)) = decoded else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&word);
        rest = tail;
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// The first run of exactly `digits` ASCII digits in `text`.
pub fn find_code(text: &str, digits: usize) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == digits)
        .map(str::to_string)
}
