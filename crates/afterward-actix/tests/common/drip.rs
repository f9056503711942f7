//! Response bodies that end in every way a body can.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;

/// How a [`Drip`] ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    /// `poll_next` gives `None` after the last chunk.
    Done,
    /// `poll_next` gives an error after the last chunk.
    Fails,
    /// `poll_next` panics after the last chunk.
    Panics,
    /// Chunks never stop: only the client leaving, or the server stopping,
    /// ends the response.
    Never,
}

/// A body of unknown size that gives a chunk every few milliseconds: the
/// way to see a client leave, since actix notices one only when it next
/// writes to it.
pub struct Drip {
    left: usize,
    ending: Ending,
    tick: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Dropped with the body.
    held: Option<Box<dyn std::any::Any>>,
}

pub const TICK: Duration = Duration::from_millis(3);

impl Drip {
    pub fn new(chunks: usize, ending: Ending) -> Drip {
        Drip {
            left: chunks,
            ending,
            tick: None,
            held: None,
        }
    }

    /// Keeps `value` until the body is dropped: a value that panics when
    /// dropped makes a body whose destructor panics.
    pub fn holding(mut self, value: impl std::any::Any) -> Drip {
        self.held = Some(Box::new(value));
        self
    }
}

impl MessageBody for Drip {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let tick = self
            .tick
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(TICK)));
        if tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.tick = None;
        if self.left > 0 || self.ending == Ending::Never {
            self.left = self.left.saturating_sub(1);
            return Poll::Ready(Some(Ok(Bytes::from_static(b"drip\n"))));
        }
        match self.ending {
            Ending::Done | Ending::Never => Poll::Ready(None),
            Ending::Fails => Poll::Ready(Some(Err(io::Error::other("the body broke")))),
            Ending::Panics => panic!("the body panics"),
        }
    }
}
