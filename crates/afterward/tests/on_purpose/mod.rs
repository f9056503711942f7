//! Panics that tests cause on purpose: values that panic when dropped, a
//! panic payload whose own destructor panics, and a panic hook that keeps
//! them out of the output while showing any other panic.
#![allow(dead_code, unreachable_pub)]

/// Panics when dropped, unless the thread is already unwinding (a second
/// panic would abort, in user code as here).
pub struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a destructor panics");
        }
    }
}

/// A panic payload whose own destructor panics.
pub struct NastyPayload;

impl Drop for NastyPayload {
    fn drop(&mut self) {
        panic!("a panic payload panics when dropped");
    }
}

/// Typed `()`, so that a closure calling it is a task.
pub fn panic_with_nasty_payload() {
    std::panic::panic_any(NastyPayload);
}

/// Hides panics whose message is one of `messages` (and `PanicOnDrop`'s,
/// `NastyPayload`'s); any other panic is shown as usual.
pub fn hide_panics(messages: &'static [&'static str]) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let on_purpose = payload.is::<NastyPayload>()
            || message.is_some_and(|message| {
                messages.contains(&message)
                    || matches!(
                        message,
                        "a destructor panics" | "a panic payload panics when dropped"
                    )
            });
        if !on_purpose {
            default_hook(info);
        }
    }));
}
