//! Connection hygiene for answers given before the request body was read.
//!
//! A handler may answer (an auth failure, a refused upload, an unknown route) without reading
//! the request body. hyper then cannot reuse the connection and closes it after the response,
//! but a client that was not told keeps writing its next request into a closing socket and sees
//! it fail. RFC 9112 §9.6: a server that closes after a response sends `Connection: close` in
//! it. This layer tracks whether the body was read to its end and adds that header when not.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::Stream;

/// A body stream that records when it has been read to its end.
struct TrackEnd<S> {
    inner: S,
    done: Arc<AtomicBool>,
}

impl<S> Stream for TrackEnd<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(None) = r {
            self.done.store(true, Ordering::Release);
        }
        r
    }
}

/// Whether the request announces a body (`Content-Length` > 0 or `Transfer-Encoding`).
fn has_body(req: &Request) -> bool {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Middleware: adds `Connection: close` to a response whose request body was not read to its
/// end (requests without a body pass through untouched).
pub async fn close_if_body_unread(req: Request, next: Next) -> Response {
    if !has_body(&req) {
        return next.run(req).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let tracked = TrackEnd {
        inner: body.into_data_stream(),
        done: done.clone(),
    };
    let mut resp = next
        .run(Request::from_parts(parts, Body::from_stream(tracked)))
        .await;
    if !done.load(Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
