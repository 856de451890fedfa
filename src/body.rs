//! The one response body type every handler returns: either the upstream's stream, passed through
//! untouched, or a page pagegate wrote itself.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Errors a body stream can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed response body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding bytes pagegate produced.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with nothing in it.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Any body of bytes (an upstream response is passed through this way, unbuffered), as the one
/// body type.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A body whose pieces another task sends as it makes them, `capacity` pieces ahead at most: a
/// long download written while it is read, with bounded memory. An `Err` sent ends the body
/// with that error (the client sees the download cut short); dropping the sender ends it.
pub fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    (tx, ChannelBody { rx }.boxed())
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(http_body::Frame::data)))
    }
}
