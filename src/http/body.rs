//! Request bodies with a read timeout.
//!
//! hyper reads a body only as fast as its client sends it, and has no timeout of its own
//! once the head is read. [`TimedBody`] fails a body that made no progress (no frame)
//! for [`ServeLimits::body_read_timeout`](super::ServeLimits::body_read_timeout) while a
//! handler waits for it, with [`BodyError::Stalled`], which the body readers answer with
//! `408 request-timeout`. A handler that does not read the body never waits for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use thiserror::Error;
use tokio::time::{Instant, Sleep};

/// Why a request body could not be read.
#[derive(Debug, Error)]
pub(crate) enum BodyError {
    /// Nothing arrived for this long while the body was awaited.
    #[error("the request's body made no progress for {0:?}")]
    Stalled(Duration),
    /// The connection failed (closed by the client mid-body, or malformed framing).
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

/// A request's body, failed with [`BodyError::Stalled`] after `timeout` without a frame.
#[derive(Debug)]
pub(crate) struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    /// Made the first time the body is awaited; re-armed after each frame.
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame was awaited and none has arrived since.
    waiting: bool,
}

impl TimedBody {
    pub(crate) fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(Instant::now() + timeout);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled(timeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The timeout `error` reports, if it is a [`BodyError::Stalled`] (as axum hands body
/// errors on, boxed).
pub(crate) fn stalled(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut error = Some(error);
    while let Some(e) = error {
        if let Some(BodyError::Stalled(timeout)) = e.downcast_ref::<BodyError>() {
            return Some(*timeout);
        }
        error = e.source();
    }
    None
}
