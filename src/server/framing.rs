//! A watch on HTTP/1.1 request framing, below hyper.
//!
//! hyper resolves a request carrying both `Content-Length` and `Transfer-Encoding` the way RFC
//! 9112 §6.3 allows (chunked wins, the connection closes afterwards) and folds repeated equal
//! `Content-Length` lines into one, so by the time a request reaches the service the ambiguity is
//! gone from its headers. Such a request is a smuggling attempt more often than not, and pagegate
//! refuses it outright. This wrapper reads the same bytes hyper reads, finds each request head
//! with `httparse` (hyper's own parser), follows the body framing with `httparse`'s chunk parser,
//! and records the sequence number of an ambiguous head. The service compares it with the request
//! it is handling. Whenever the watch is unsure (a parse error, an upgrade, HTTP/2), it stops
//! watching: hyper's own handling is safe, this is the stricter layer on top.
//!
//! The same watch tells the connection when every byte read so far belonged to whole requests
//! ([`FramingVerdict::boundary`]): the one moment a keep-alive connection may be handed from one
//! hyper connection to the next (see `connection.rs`). For that hand-over it can also keep the
//! socket open when hyper ends its connection ([`FramingVerdict::keep_open`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request head (or trailer section) the watch follows, like hyper's default limit. The
/// limits hold alike for bytes that come in one read or in many: how a client cuts its stream
/// must not decide what the watch sees.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (extensions and CRLF included) the watch follows.
const MAX_CHUNK_LINE: usize = 1024;
/// Most header lines in one head (hyper's default is 100).
const MAX_HEADERS: usize = 128;
/// No ambiguous head seen; or, for the boundary, not between two requests.
const NONE: u64 = u64::MAX;

/// Shared between the wrapped stream and the connection's service.
#[derive(Debug)]
pub(crate) struct FramingVerdict {
    /// Sequence number (0-based) of the first ambiguous request on this connection, or `NONE`.
    ambiguous: AtomicU64,
    /// How many whole requests the bytes read so far hold, when they end exactly where a request
    /// ends (nothing of the next one read yet); `NONE` otherwise, and once no longer watching.
    boundary: AtomicU64,
    /// While set, shutting the stream down leaves the socket open.
    keep_open: AtomicBool,
    /// Whether the last read found nothing to read: hyper is waiting on the socket, so it holds
    /// no bytes it has read but not yet used.
    reading_blocked: AtomicBool,
}

impl FramingVerdict {
    fn new() -> Arc<FramingVerdict> {
        Arc::new(FramingVerdict {
            ambiguous: AtomicU64::new(NONE),
            boundary: AtomicU64::new(0),
            keep_open: AtomicBool::new(false),
            reading_blocked: AtomicBool::new(false),
        })
    }

    /// The number of whole requests read, if the connection is between two requests with
    /// nothing of the next one read and its reader is waiting on the socket; `None` inside a
    /// request, while the reader still has read bytes to use (a body the service stopped
    /// reading), or when the framing is not followed (HTTP/2, an upgrade, a head it could not
    /// read).
    pub(crate) fn boundary(&self) -> Option<u64> {
        if !self.reading_blocked.load(Ordering::Acquire) {
            return None;
        }
        let heads = self.boundary.load(Ordering::Acquire);
        (heads != NONE).then_some(heads)
    }

    /// Makes the stream's shutdown leave the socket open (or, with `false`, close it again).
    pub(crate) fn keep_open(&self, keep: bool) {
        self.keep_open.store(keep, Ordering::Release);
    }

    /// Whether request number `seq` of the connection had ambiguous framing.
    pub(crate) fn is_ambiguous(&self, seq: u64) -> bool {
        self.ambiguous.load(Ordering::Acquire) == seq
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for a request head; holds a partial head split across reads.
    Head(Vec<u8>),
    /// Inside a body of known length: bytes left.
    Body(u64),
    /// Waiting for a chunk-size line; holds a partial line.
    ChunkSize(Vec<u8>),
    /// Inside a chunk: data bytes plus its CRLF left.
    ChunkData(u64),
    /// After the last chunk: trailer fields up to the empty line.
    Trailers(Vec<u8>),
    /// No longer watching this connection.
    Off,
}

/// What one parsed head means for the bytes after it.
struct HeadFacts {
    ambiguous: bool,
    next: State,
}

/// The byte stream wrapper.
pub(crate) struct FramingWatch<IO> {
    inner: IO,
    state: State,
    heads_seen: u64,
    verdict: Arc<FramingVerdict>,
}

impl<IO> FramingWatch<IO> {
    pub(crate) fn new(inner: IO) -> (FramingWatch<IO>, Arc<FramingVerdict>) {
        let verdict = FramingVerdict::new();
        let watch = FramingWatch {
            inner,
            state: State::Head(Vec::new()),
            heads_seen: 0,
            verdict: verdict.clone(),
        };
        (watch, verdict)
    }

    /// The stream, no longer watched.
    pub(crate) fn into_inner(self) -> IO {
        self.inner
    }

    /// Follows the framing through newly read bytes, then publishes whether they ended on a
    /// request boundary.
    fn observe(&mut self, bytes: &[u8]) {
        self.follow(bytes);
        let boundary = match &self.state {
            State::Head(pending) if pending.is_empty() => self.heads_seen,
            _ => NONE,
        };
        self.verdict.boundary.store(boundary, Ordering::Release);
    }

    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkData(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Head(pending) => {
                    let (used, facts) = if pending.is_empty() {
                        match parse_head(bytes) {
                            Parsed::Complete(used, facts) if used <= MAX_HEAD => (used, facts),
                            Parsed::Partial if bytes.len() < MAX_HEAD => {
                                self.state = State::Head(bytes.to_vec());
                                return;
                            }
                            _ => {
                                self.state = State::Off;
                                return;
                            }
                        }
                    } else {
                        let before = pending.len();
                        pending.extend_from_slice(bytes);
                        match parse_head(pending) {
                            Parsed::Complete(used, facts) if used <= MAX_HEAD => {
                                (used - before, facts)
                            }
                            Parsed::Partial if pending.len() < MAX_HEAD => return,
                            _ => {
                                self.state = State::Off;
                                return;
                            }
                        }
                    };
                    bytes = &bytes[used..];
                    if facts.ambiguous {
                        self.verdict
                            .ambiguous
                            .store(self.heads_seen, Ordering::Release);
                        self.state = State::Off;
                        return;
                    }
                    self.heads_seen += 1;
                    self.state = facts.next;
                }
                State::ChunkSize(pending) => {
                    let before = pending.len();
                    let parsed = if before == 0 {
                        httparse::parse_chunk_size(bytes)
                    } else {
                        pending.extend_from_slice(bytes);
                        httparse::parse_chunk_size(pending)
                    };
                    match parsed {
                        Ok(httparse::Status::Complete((used, size))) if used <= MAX_CHUNK_LINE => {
                            bytes = &bytes[used - before..];
                            self.state = if size == 0 {
                                State::Trailers(Vec::new())
                            } else {
                                State::ChunkData(size.saturating_add(2))
                            };
                        }
                        Ok(httparse::Status::Partial) if before + bytes.len() < MAX_CHUNK_LINE => {
                            if before == 0 {
                                self.state = State::ChunkSize(bytes.to_vec());
                            }
                            return;
                        }
                        _ => {
                            self.state = State::Off;
                            return;
                        }
                    }
                }
                State::Trailers(pending) => {
                    let before = pending.len();
                    pending.extend_from_slice(bytes);
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(pending, &mut headers) {
                        Ok(httparse::Status::Complete((used, _))) if used <= MAX_HEAD => {
                            bytes = &bytes[used - before..];
                            self.state = State::Head(Vec::new());
                        }
                        Ok(httparse::Status::Partial) if pending.len() < MAX_HEAD => return,
                        _ => {
                            self.state = State::Off;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The watch's verdict on a byte stream arriving as `reads`, fed exactly as `poll_read` feeds it:
/// the number of the first ambiguous request, and how many whole requests the stream holds when
/// it ends between two. The fuzz targets (`crate::fuzzing`) check that how the stream is cut into
/// reads never changes it.
pub(crate) fn follow_reads<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> (Option<u64>, Option<u64>) {
    let (mut watch, verdict) = FramingWatch::new(());
    for read in reads {
        if !matches!(watch.state, State::Off) {
            watch.observe(read);
        }
    }
    let known = |value: &AtomicU64| {
        let value = value.load(Ordering::Acquire);
        (value != NONE).then_some(value)
    };
    (known(&verdict.ambiguous), known(&verdict.boundary))
}

enum Parsed {
    Complete(usize, HeadFacts),
    Partial,
    Invalid,
}

fn parse_head(buf: &[u8]) -> Parsed {
    // Left uninitialised: this runs for every request, and zeroing room for 128 headers (4 KiB)
    // cost more than parsing the few a request has.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut headers,
    );
    let used = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let mut lengths = 0usize;
    let mut length = None;
    let mut transfer_encodings = 0usize;
    let mut last_te_chunked = false;
    let mut upgrade = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encodings += 1;
            last_te_chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let ambiguous = lengths > 1 || (lengths > 0 && transfer_encodings > 0);
    let next = if ambiguous || upgrade || req.method == Some("CONNECT") {
        State::Off
    } else if transfer_encodings > 0 {
        if last_te_chunked {
            State::ChunkSize(Vec::new())
        } else {
            State::Off
        }
    } else {
        match (lengths, length) {
            (0, _) | (_, Some(0)) => State::Head(Vec::new()),
            (_, Some(n)) => State::Body(n),
            (_, None) => State::Off,
        }
    };
    Parsed::Complete(used, HeadFacts { ambiguous, next })
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.verdict
            .reading_blocked
            .store(polled.is_pending(), Ordering::Release);
        if let Poll::Ready(Ok(())) = polled {
            if !matches!(self.state, State::Off) {
                self.observe(&buf.filled()[before..]);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.verdict.keep_open.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; returns the ambiguous head's number, if any.
    fn watch(stream: &[u8], step: usize) -> Option<u64> {
        let (mut w, verdict) = FramingWatch::new(());
        for piece in stream.chunks(step) {
            w.observe(piece);
        }
        let seq = verdict.ambiguous.load(Ordering::Acquire);
        (seq != NONE).then_some(seq)
    }

    const CLEAN: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 28\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n\
POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn clean_pipelines_are_followed_whatever_the_read_sizes() {
        for step in [1, 2, 3, 7, 16, 1000] {
            let mut stream = CLEAN.to_vec();
            stream.extend_from_slice(
                b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            );
            assert_eq!(watch(&stream, step), Some(3), "step {step}");
            assert_eq!(watch(CLEAN, step), None, "step {step}");
        }
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_a_head() {
        let stream = b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 62\r\n\r\n\
GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(watch(stream, 5), None);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_ambiguous() {
        let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(watch(stream, 4), Some(1));
    }

    #[test]
    fn gives_up_quietly_on_what_it_cannot_follow() {
        assert_eq!(watch(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 100), None);
        assert_eq!(watch(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 100), None);
    }

    #[test]
    fn limits_apply_alike_however_the_bytes_arrive() {
        // Before an ambiguous request: a chunk-size line (a long extension) and a head longer
        // than the watch follows. It gives up on them whether they come in one read or many, so
        // how a client cuts its bytes cannot decide whether the ambiguity is seen.
        let ambiguous = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        let mut long_extension =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0;".to_vec();
        long_extension.extend(std::iter::repeat_n(b'x', 2000));
        long_extension.extend_from_slice(b"\r\n\r\n");
        let mut long_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_head.extend(std::iter::repeat_n(b'x', MAX_HEAD));
        long_head.extend_from_slice(b"\r\n\r\n");
        for (mut stream, steps) in [
            (long_extension, [1, 7, 1000]),
            (long_head, [997, 4096, 30_000]),
        ] {
            stream.extend_from_slice(ambiguous);
            assert_eq!(watch(&stream, stream.len()), None, "one read");
            for step in steps {
                assert_eq!(watch(&stream, step), None, "reads of {step}");
            }
        }
    }
}
