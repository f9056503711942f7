//! Log lines captured from a `tracing` subscriber, to check what was logged.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// A subscriber that writes every event, with its spans, to this capture.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish()
    }

    /// The one line that contains `needle`.
    pub fn line_with(&self, needle: &str) -> String {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let mut found = text.lines().filter(|line| line.contains(needle));
        let line = found
            .next()
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
            .to_owned();
        assert!(found.next().is_none(), "{needle:?} logged twice:\n{text}");
        line
    }
}
