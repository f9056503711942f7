use afterward::Runner;
use tower_layer::Layer;

use crate::{DisconnectPolicy, TaskService};

/// A tower [`Layer`] that wraps services in [`TaskService`].
///
/// For tower stacks and axum routers: every request gets a
/// [`TaskQueue`](afterward::TaskQueue) in its extensions, and its tasks run
/// after the response body is finished.
///
/// # Examples
///
/// With axum, a handler takes the queue as an `Extension`:
///
/// ```
/// use afterward::{Runner, TaskQueue};
/// use afterward_hyper::TaskLayer;
/// use axum::{Extension, Router, routing::post};
///
/// fn send_welcome_email(to: String) {
///     println!("welcome, {to}");
/// }
///
/// async fn register(Extension(tasks): Extension<TaskQueue>, body: String) -> &'static str {
///     tasks.add_task(send_welcome_email, (body,));
///     "registered"
/// }
///
/// # #[tokio::main]
/// # async fn main() {
/// let runner = Runner::new();
/// let app: Router = Router::new()
///     .route("/register", post(register))
///     .layer(TaskLayer::new(runner.clone()));
/// # let _ = app;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TaskLayer {
    runner: Runner,
    on_disconnect: DisconnectPolicy,
}

impl TaskLayer {
    /// A layer whose services hand their queues to `runner`.
    pub fn new(runner: Runner) -> TaskLayer {
        TaskLayer {
            runner,
            on_disconnect: DisconnectPolicy::default(),
        }
    }

    /// See [`TaskService::on_disconnect`].
    pub fn on_disconnect(mut self, policy: DisconnectPolicy) -> TaskLayer {
        self.on_disconnect = policy;
        self
    }
}

impl<S> Layer<S> for TaskLayer {
    type Service = TaskService<S>;

    fn layer(&self, inner: S) -> TaskService<S> {
        TaskService::new(inner, self.runner.clone()).on_disconnect(self.on_disconnect)
    }
}
