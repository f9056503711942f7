//! `TaskQueue` as an actix-web extractor (feature `actix`).
//!
//! The impl lives here rather than in `afterward-actix`, whose dependency
//! on this crate turns the feature on: Rust's orphan rule allows it only in
//! the crate of `TaskQueue` or of `FromRequest`.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::queue::TaskQueue;

/// A handler takes the request's queue directly; the `Tasks` middleware put
/// it there.
///
/// Without `Tasks` in the app (or around the handler's scope), extraction
/// fails with [`MissingTasks`], a `500 Internal Server Error` whose message
/// names the missing middleware; `Option<TaskQueue>` extracts `None`
/// instead (actix-web's own `Option` extractor does that).
impl FromRequest for TaskQueue {
    type Error = MissingTasks;
    type Future = Ready<Result<TaskQueue, MissingTasks>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<TaskQueue>()
                .cloned()
                .ok_or(MissingTasks),
        )
    }
}

/// The error of the [`TaskQueue`] extractor when no `Tasks` middleware gave
/// the request a queue: a `500 Internal Server Error` that says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub struct MissingTasks;

impl fmt::Display for MissingTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this request has no TaskQueue: add the `afterward_actix::Tasks` middleware \
             (`App::new().wrap(Tasks::new(runner))`) around the routes that take one",
        )
    }
}

impl std::error::Error for MissingTasks {}

impl ResponseError for MissingTasks {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        // Logged here rather than in `from_request`: `Option<TaskQueue>`
        // fails the same extraction on purpose, and never makes a response.
        tracing::error!("{self}");
        HttpResponse::build(self.status_code()).body(self.to_string())
    }
}
