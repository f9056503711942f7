//! `TaskQueue` as an axum extractor (feature `axum`).
//!
//! The impl lives here rather than in `afterward-hyper`, whose `axum`
//! feature turns it on: Rust's orphan rule allows it only in the crate of
//! `TaskQueue` or of the extractor traits.

use std::convert::Infallible;
use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::queue::TaskQueue;

/// A handler takes the request's queue directly; `TaskLayer` put it there.
///
/// Without `TaskLayer` in the stack, the request is answered
/// `500 Internal Server Error` with a message that names the missing layer
/// ([`MissingTaskLayer`]); `Option<TaskQueue>` extracts `None` instead.
impl<S: Send + Sync> FromRequestParts<S> for TaskQueue {
    type Rejection = MissingTaskLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<TaskQueue>().cloned().ok_or_else(|| {
            tracing::error!("{MissingTaskLayer}");
            MissingTaskLayer
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for TaskQueue {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<TaskQueue>().cloned())
    }
}

/// The rejection of the [`TaskQueue`] extractor when no `TaskLayer` gave
/// the request a queue: a `500 Internal Server Error` that says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub struct MissingTaskLayer;

impl fmt::Display for MissingTaskLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this request has no TaskQueue: add `afterward_hyper::TaskLayer` to the router \
             (`.layer(TaskLayer::new(runner))`) around the routes that take one",
        )
    }
}

impl std::error::Error for MissingTaskLayer {}

impl IntoResponse for MissingTaskLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}
