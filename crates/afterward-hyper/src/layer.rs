//! `TaskLayer`: `TaskService` as a tower layer.

use afterward::Runner;
use afterward::adapter::DisconnectPolicy;
use tower_layer::Layer;

use crate::service::TaskService;

/// A tower [`Layer`] that wraps services in [`TaskService`].
///
/// For tower stacks and axum routers: every request gets a
/// [`TaskQueue`](afterward::TaskQueue) in its extensions, and its tasks run
/// after the response body is finished.
///
/// # Examples
///
/// With axum (feature `axum`), a handler takes the queue as an extractor;
/// without the feature, as `Extension<TaskQueue>`. (This example needs the
/// `axum` feature.)
///
#[cfg_attr(feature = "axum", doc = "```")]
#[cfg_attr(not(feature = "axum"), doc = "```ignore")]
/// use afterward::{Runner, TaskQueue};
/// use afterward_hyper::TaskLayer;
/// use axum::{Router, routing::post};
///
/// fn send_welcome_email(to: String) {
///     println!("welcome, {to}");
/// }
///
/// async fn register(tasks: TaskQueue, body: String) -> &'static str {
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
    backpressure: bool,
}

impl TaskLayer {
    /// A layer whose services hand their queues to `runner`.
    pub fn new(runner: Runner) -> TaskLayer {
        TaskLayer {
            runner,
            on_disconnect: DisconnectPolicy::default(),
            backpressure: false,
        }
    }

    /// See [`TaskService::on_disconnect`].
    pub fn on_disconnect(mut self, policy: DisconnectPolicy) -> TaskLayer {
        self.on_disconnect = policy;
        self
    }

    /// See [`TaskService::backpressure`].
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "axum", doc = "```")]
    #[cfg_attr(not(feature = "axum"), doc = "```ignore")]
    /// use afterward::{Runner, TaskQueue};
    /// use afterward_hyper::TaskLayer;
    /// use axum::error_handling::HandleErrorLayer;
    /// use axum::http::StatusCode;
    /// use axum::{BoxError, Router, routing::post};
    /// use tower::ServiceBuilder;
    ///
    /// async fn order(tasks: TaskQueue) -> &'static str {
    ///     tasks.add_task(|| println!("send the receipt"), ());
    ///     "ordered"
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let runner = Runner::builder().max_backlog(1_000).build();
    /// let app: Router = Router::new().route("/order", post(order)).layer(
    ///     ServiceBuilder::new()
    ///         // A full backlog answers 503 rather than taking the request.
    ///         .layer(HandleErrorLayer::new(|_: BoxError| async {
    ///             StatusCode::SERVICE_UNAVAILABLE
    ///         }))
    ///         .load_shed()
    ///         .layer(TaskLayer::new(runner).backpressure(true)),
    /// );
    /// # let _ = app;
    /// # }
    /// ```
    ///
    pub fn backpressure(mut self, on: bool) -> TaskLayer {
        self.backpressure = on;
        self
    }
}

impl<S> Layer<S> for TaskLayer {
    type Service = TaskService<S>;

    fn layer(&self, inner: S) -> TaskService<S> {
        TaskService::new(inner, self.runner.clone())
            .on_disconnect(self.on_disconnect)
            .backpressure(self.backpressure)
    }
}
