//! Dropping user values without letting their panics out.
//!
//! The library drops values it did not write: futures cancelled at a timeout
//! or a deadline, tasks that are skipped, abandoned or refused, and the
//! payloads of panics it caught. Any of their destructors may panic, and a
//! panic escaping from the library's own bookkeeping would lose the count of
//! a task or take a whole queue down. Every such drop goes through here.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Drops `value`; if its destructor panics, returns the panic's message
/// instead of unwinding.
pub(crate) fn drop_quietly<T>(value: T) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(move || drop(value))) {
        Ok(()) => None,
        Err(payload) => Some(take_message(payload)),
    }
}

/// The message of a caught panic, after which its payload is dropped.
///
/// A payload is a user value too, and its destructor may panic in turn. That
/// second panic is caught, and its own payload is leaked rather than dropped:
/// a destructor that panics with a payload like itself would otherwise keep
/// this going forever. The leak is one box per such panic, which is a bug in
/// the task that the log reports.
pub(crate) fn take_message(payload: Box<dyn Any + Send>) -> String {
    let mut message = panic_message(&*payload);
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        message.push_str(" (then its panic payload panicked when dropped: ");
        message.push_str(&panic_message(&*second));
        message.push(')');
        #[allow(clippy::mem_forget)]
        std::mem::forget(second);
    }
    message
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PanicsWhenDropped;

    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            std::panic::panic_any(PanicsWhenDropped);
        }
    }

    #[test]
    fn a_payload_that_panics_like_itself_when_dropped_ends() {
        std::panic::set_hook(Box::new(|_| {}));
        let message = drop_quietly(PanicsWhenDropped);
        let _ = std::panic::take_hook();
        assert_eq!(
            message.as_deref(),
            Some(
                "non-string panic payload (then its panic payload panicked when dropped: \
                 non-string panic payload)"
            )
        );
    }

    #[test]
    fn a_quiet_drop_of_a_harmless_value_says_nothing() {
        assert_eq!(drop_quietly(String::from("fine")), None);
    }
}
