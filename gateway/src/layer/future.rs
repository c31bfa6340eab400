//! [`ResponseFuture`]: what [`RateLimit`](super::RateLimit) returns for a call.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;

use super::body::ResponseBody;

type Boxed<ResBody, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<ResBody>>, E>> + Send>>;

/// The response future of [`RateLimit`](super::RateLimit): the limiter's check, then the inner
/// service's call when the request may pass. Boxed, since the limiter's check is an `async fn`.
pub struct ResponseFuture<ResBody, E> {
    inner: Boxed<ResBody, E>,
}

impl<ResBody, E> ResponseFuture<ResBody, E> {
    pub(crate) fn new(
        future: impl Future<Output = Result<Response<ResponseBody<ResBody>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<ResBody, E> Future for ResponseFuture<ResBody, E> {
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<ResBody, E> fmt::Debug for ResponseFuture<ResBody, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
