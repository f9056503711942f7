//! A response's outcome as HTTP and gRPC tell it: its status, and a
//! `grpc-status` in its headers or its trailers.

use afterward::Outcome;
use http::HeaderMap;

/// What the response has said of its outcome so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verdict {
    failed_status: bool,
    /// A gRPC response, which must send a `grpc-status`.
    grpc: bool,
    /// The `grpc-status` seen: `Some(true)` for `0`.
    grpc_ok: Option<bool>,
}

impl Verdict {
    pub(crate) fn of(parts: &http::response::Parts) -> Verdict {
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        Verdict {
            failed_status: Outcome::from_status(parts.status.as_u16()) == Outcome::Failure,
            grpc,
            grpc_ok: grpc_ok(&parts.headers),
        }
    }

    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(ok) = grpc_ok(trailers) {
            self.grpc_ok = Some(ok);
        }
    }

    /// The outcome, for a body that was complete or was dropped before.
    pub(crate) fn outcome(self, complete: bool) -> Outcome {
        match (self.failed_status, self.grpc_ok, self.grpc) {
            (true, _, _) | (false, Some(false), _) => Outcome::Failure,
            (false, Some(true), _) | (false, None, false) => Outcome::Success,
            // A gRPC body that ended without its status failed, as its
            // client sees it; one dropped before its trailers may have done
            // either.
            (false, None, true) if complete => Outcome::Failure,
            (false, None, true) => Outcome::Unknown,
        }
    }
}

fn grpc_ok(headers: &HeaderMap) -> Option<bool> {
    let status = headers.get("grpc-status")?;
    Some(status.as_bytes().trim_ascii() == b"0")
}
