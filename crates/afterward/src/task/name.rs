//! Task names: the one given with `QueuedTask::name`, or the function's
//! type name, shortened only when shown.

use std::borrow::Cow;
use std::sync::Arc;

/// A task's name in logs and reports: the one given with
/// `QueuedTask::name`, or its function's `type_name`, shortened only when
/// shown.
///
/// `my_app::mail::send_welcome` shows as `send_welcome`, and a closure
/// `my_app::routes::register::{{closure}}` as `register::{{closure}}`, so the
/// name still says where the closure was written. Naming a task by its
/// function costs nothing; the short form is a slice of the `'static` type
/// name, taken when a log line or report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskName {
    /// A function's type name.
    Fn(&'static str),
    /// Given as a `&'static str`: no allocation.
    Static(&'static str),
    /// Given as a `String`, shared by every copy.
    Shared(Arc<str>),
}

impl TaskName {
    pub(crate) fn given(name: Cow<'static, str>) -> TaskName {
        match name {
            Cow::Borrowed(name) => TaskName::Static(name),
            Cow::Owned(name) => TaskName::Shared(Arc::from(name)),
        }
    }

    pub(crate) fn short(&self) -> &str {
        match self {
            TaskName::Fn(full) => short_name(full),
            TaskName::Static(name) => name,
            TaskName::Shared(name) => name,
        }
    }

    /// The name for a report.
    pub(crate) fn into_cow(self) -> Cow<'static, str> {
        match self {
            TaskName::Fn(full) => Cow::Borrowed(short_name(full)),
            TaskName::Static(name) => Cow::Borrowed(name),
            TaskName::Shared(name) => Cow::Owned(name.to_string()),
        }
    }
}

fn short_name(full: &'static str) -> &'static str {
    let bytes = full.as_bytes();
    // Only the path before any generic arguments is shortened.
    let path_end = bytes.iter().position(|&b| b == b'<').unwrap_or(bytes.len());
    let is_name = |at: usize| at < path_end && bytes[at] != b'{';
    let (mut start, mut segment, mut i) = (0, 0, 0);
    while i + 1 < path_end {
        if bytes[i] == b':' && bytes[i + 1] == b':' {
            if is_name(segment) {
                start = segment;
            }
            segment = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if is_name(segment) {
        start = segment;
    }
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn short_names() {
        assert_eq!(short_name("send_welcome"), "send_welcome");
        assert_eq!(short_name("my_app::mail::send_welcome"), "send_welcome");
        assert_eq!(
            short_name("my_app::routes::register::{{closure}}"),
            "register::{{closure}}"
        );
        assert_eq!(
            short_name("app::main::{{closure}}::{{closure}}"),
            "main::{{closure}}::{{closure}}"
        );
        assert_eq!(
            short_name("app::log<alloc::string::String>"),
            "log<alloc::string::String>"
        );
        assert_eq!(short_name("{{closure}}"), "{{closure}}");
    }
}
