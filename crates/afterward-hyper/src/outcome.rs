//! A response's outcome as HTTP and gRPC tell it: its status, and a
//! `grpc-status` in its headers, its trailers, or (gRPC-Web) the trailer
//! frame of its body.

use afterward::Outcome;
use http::HeaderMap;

use crate::grpc_web::WebFrames;

/// What the response has said of its outcome so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict {
    failed_status: bool,
    /// A gRPC response, which must send a `grpc-status`.
    grpc: bool,
    /// The `grpc-status` seen: `Some(true)` while every one seen was `0`.
    grpc_ok: Option<bool>,
    /// A gRPC-Web response: its body is read for its trailer frame.
    web: Option<WebFrames>,
    /// A gRPC-Web body that could not be read in order.
    unreadable: bool,
}

impl Verdict {
    pub(crate) fn of(parts: &http::response::Parts) -> Verdict {
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map_or(&b""[..], |value| value.as_bytes());
        Verdict {
            failed_status: Outcome::from_status(parts.status.as_u16()) == Outcome::Failure,
            grpc: content_type.starts_with(b"application/grpc"),
            grpc_ok: grpc_ok(&parts.headers),
            web: WebFrames::of(content_type),
            unreadable: false,
        }
    }

    /// Whether the body's data must be shown to [`data`](Verdict::data).
    pub(crate) fn reads_data(&self) -> bool {
        self.web.is_some()
    }

    /// A gRPC-Web body's data, passing by.
    pub(crate) fn data(&mut self, bytes: &[u8]) {
        if let Some(web) = &mut self.web {
            let grpc_ok = &mut self.grpc_ok;
            web.read(bytes, &mut |ok| see(grpc_ok, ok));
        }
    }

    /// A gRPC-Web body's data could not be read in order: its status is
    /// unknown, unless one seen already failed.
    pub(crate) fn unreadable(&mut self) {
        self.web = None;
        self.unreadable = true;
    }

    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(ok) = grpc_ok(trailers) {
            see(&mut self.grpc_ok, ok);
        }
    }

    /// The outcome, for a body that was complete or was dropped before.
    pub(crate) fn outcome(&self, complete: bool) -> Outcome {
        match (self.failed_status, self.grpc_ok, self.grpc) {
            (true, _, _) | (false, Some(false), _) => Outcome::Failure,
            _ if self.unreadable => Outcome::Unknown,
            (false, Some(true), _) | (false, None, false) => Outcome::Success,
            // A gRPC body that ended without its status failed, as its
            // client sees it; one dropped before its status may have done
            // either.
            (false, None, true) if complete => Outcome::Failure,
            (false, None, true) => Outcome::Unknown,
        }
    }
}

/// Records a `grpc-status` seen: a non-zero one anywhere is a failure, that
/// a later `0` does not undo.
fn see(grpc_ok: &mut Option<bool>, ok: bool) {
    *grpc_ok = Some(grpc_ok.unwrap_or(true) && ok);
}

fn grpc_ok(headers: &HeaderMap) -> Option<bool> {
    let status = headers.get("grpc-status")?;
    Some(status.as_bytes().trim_ascii() == b"0")
}
