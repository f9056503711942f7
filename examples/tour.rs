//! A self-running tour of afterward: a real hyper server on 127.0.0.1, a real
//! hyper client, and a timeline of what happens after each response.
//!
//! ```text
//! cargo run --example tour
//! ```
//!
//! Every log line starts with the milliseconds since the tour began, and the
//! tasks' lines carry their request and task spans, so the order of events
//! can be read straight off the screen. It needs no network beyond loopback
//! and exits by itself.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use afterward::{FailurePolicy, RunIf, Runner, TaskQueue};
use afterward_hyper::{DisconnectPolicy, TaskService};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tracing::info;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

// ===== the tasks =====

/// Sync: blocking work runs on tokio's blocking pool.
fn send_welcome_email(to: String) -> Result<(), String> {
    info!(%to, "sending welcome email…");
    std::thread::sleep(Duration::from_millis(120));
    info!(%to, "welcome email sent");
    Ok(())
}

/// Async: awaited on the runtime.
async fn write_audit_log(user: String, action: &'static str) {
    tokio::time::sleep(Duration::from_millis(40)).await;
    info!(%user, action, "audit log line appended");
}

async fn notify_analytics(event: &'static str) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    info!(event, "analytics notified");
    Ok(())
}

async fn call_webhook(url: &'static str) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    Err(format!("POST {url}: 503 Service Unavailable"))
}

fn resize_avatar() {
    panic!("image decoder bug: unexpected end of file");
}

fn record_download(file: &'static str) {
    info!(file, "download recorded");
}

fn send_receipt(order: u64) {
    info!(order, "receipt sent");
}

fn release_stock(order: u64) {
    info!(order, "reserved stock released");
}

async fn refresh_product_page(product: u64, price: &'static str) {
    info!(product, price, "product page refreshed");
}

async fn reindex_search() {
    info!("reindexing search (this takes an hour)…");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

// ===== the server =====

type Body = BoxBody<Bytes, Infallible>;

async fn handler(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let tasks = req.extensions().get::<TaskQueue>().unwrap().clone();
    let span = tracing::info_span!("request", path = %req.uri().path());
    let _entered = span.enter();
    let body = match req.uri().path() {
        "/signup" => {
            tasks.add_task(send_welcome_email, ("ada@example.com".to_owned(),));
            tasks.add_task(write_audit_log, ("ada".to_owned(), "signup"));
            tasks.add_task(notify_analytics, ("user.created",));
            full("welcome, ada")
        }
        "/profile" => {
            tasks.add_task(write_audit_log, ("ada".to_owned(), "profile update"));
            tasks.add_task(call_webhook, ("https://hooks.example/profile",));
            tasks.add_task(resize_avatar, ());
            tasks.add_task(notify_analytics, ("profile.updated",));
            full("profile saved")
        }
        "/download" => {
            tasks.add_task(record_download, ("report.pdf",));
            BodyExt::boxed(SlowReport::new(20, Duration::from_millis(50)))
        }
        "/order" | "/order-sold-out" => {
            let sold_out = req.uri().path() == "/order-sold-out";
            // Only if the order went through, only if it did not, and a
            // page refresh that a newer one replaces while it waits.
            tasks.add_task(send_receipt, (42,)).run_if(RunIf::Success);
            tasks.add_task(release_stock, (42,)).run_if(RunIf::Failure);
            tasks
                .add_task(refresh_product_page, (7, "old price"))
                .key("refresh product 7");
            tasks
                .add_task(refresh_product_page, (7, "new price"))
                .key("refresh product 7");
            info!(waiting = ?tasks.task_names(), "queued");
            if sold_out {
                return Ok(status(StatusCode::CONFLICT, "sold out"));
            }
            full("ordered")
        }
        "/reindex" => {
            tasks.add_task(notify_analytics, ("reindex.requested",));
            tasks.add_task(reindex_search, ());
            full("reindex queued")
        }
        _ => full("not found"),
    };
    info!("handler returns the response");
    Ok(Response::new(BodyExt::boxed(LastFrameLogged(body))))
}

/// Logs when hyper takes the response's last frame: from that moment the
/// response is on its way, and the request's tasks may start.
struct LastFrameLogged(Body);

impl hyper::body::Body for LastFrameLogged {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = ready!(Pin::new(&mut self.0).poll_frame(cx));
        if frame.is_none() || self.0.is_end_stream() {
            info!(target: "server", "last frame of the response handed to hyper");
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.size_hint()
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    info!("handler returns the response");
    let mut response = Response::new(BodyExt::boxed(LastFrameLogged(full(text))));
    *response.status_mut() = code;
    response
}

fn full(text: &'static str) -> Body {
    BodyExt::boxed(Full::new(Bytes::from_static(text.as_bytes())))
}

/// A report streamed slowly: `left` chunks, one every `every`.
struct SlowReport {
    left: usize,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl SlowReport {
    fn new(left: usize, every: Duration) -> SlowReport {
        SlowReport {
            left,
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl hyper::body::Body for SlowReport {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        ready!(self.sleep.as_mut().poll(cx));
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"%PDF chunk ")))))
    }
}

async fn serve(runner: &Runner, policy: DisconnectPolicy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TaskService::new(service_fn(handler), runner.clone()).on_disconnect(policy);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

// ===== the client =====

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(addr: SocketAddr, path: &str) {
    let mut client = connect(addr).await;
    let req = Request::get(path).body(Empty::new()).unwrap();
    let response = client.send_request(req).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    info!(target: "client", "GET {path} → {:?} (response complete)", String::from_utf8_lossy(&body));
}

/// Waits until the runner has accounted for `tasks` tasks in all: a body is
/// handed over when hyper drops it, a moment after the client has it all.
async fn settle(runner: &Runner, tasks: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while runner.stats().accounted() < tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runner.wait_idle().await;
}

fn section(title: &str) {
    println!(
        "\n── {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

// ===== the tour =====

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .compact()
        .with_timer(SinceStart(Instant::now()))
        .with_target(false)
        // Colours for a terminal only: not into a pipe or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    // The runner reports panics itself, with the task's name; the default
    // hook would print each one a second time.
    std::panic::set_hook(Box::new(|_| {}));

    let runner = Runner::builder()
        .task_timeout(Duration::from_secs(5))
        .build();
    let server = serve(&runner, DisconnectPolicy::Run).await;

    section("1. The response goes out first; then its tasks run, one after another");
    get(server, "/signup").await;
    settle(&runner, 3).await;

    section("2. A failing task and a panicking task are reported; the next task still runs");
    get(server, "/profile").await;
    settle(&runner, 7).await;

    section("3. The same request under FailurePolicy::StopQueue: the rest is skipped");
    let strict = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .build();
    let strict_server = serve(&strict, DisconnectPolicy::Run).await;
    get(strict_server, "/profile").await;
    settle(&strict, 4).await;
    println!("   StopQueue runner: {:?}", strict.stats());

    section("4. A client leaves mid-download: DisconnectPolicy::Run still runs the task");
    leave_mid_download(server).await;
    settle(&runner, 8).await;

    section("   … and DisconnectPolicy::Skip counts it skipped instead");
    let skipper = Runner::new();
    let skip_server = serve(&skipper, DisconnectPolicy::Skip).await;
    leave_mid_download(skip_server).await;
    settle(&skipper, 1).await;
    println!("   Skip runner: skipped = {}", skipper.stats().skipped());

    section(
        "5. Run conditions: a receipt only after a success, stock released only after a failure",
    );
    get(server, "/order").await;
    settle(&runner, 11).await;
    section("   … the same order, sold out (409): the other task runs");
    get(server, "/order-sold-out").await;
    settle(&runner, 14).await;

    section("6. Graceful shutdown with a 300 ms deadline names what it abandons");
    get(server, "/reindex").await;
    settle_started(&runner, 16).await;
    let report = runner.shutdown(Duration::from_millis(300)).await;
    println!("   abandoned: {:?}", report.abandoned_tasks());

    section("7. Every task is accounted for");
    let s = runner.stats();
    println!("{s:#?}");
    println!(
        "   received {} = completed {} + failed {} + panicked {} + timed out {} + skipped {} + abandoned {} + rejected {}",
        s.tasks_received(),
        s.completed(),
        s.failed(),
        s.panicked(),
        s.timed_out(),
        s.skipped(),
        s.abandoned(),
        s.rejected(),
    );
    assert_eq!(s.tasks_received(), s.accounted());
}

async fn leave_mid_download(addr: SocketAddr) {
    let mut client = connect(addr).await;
    let req = Request::get("/download").body(Empty::new()).unwrap();
    let mut body = client.send_request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    info!(target: "client", bytes = first.data_ref().map_or(0, |d| d.len()), "got the first chunk of /download; hanging up");
    drop(body);
    drop(client);
}

/// Waits until `tasks` tasks have been received (the last one may still be
/// running).
async fn settle_started(runner: &Runner, tasks: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while runner.stats().tasks_received() < tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Log timestamps as milliseconds since the tour began.
struct SinceStart(Instant);

impl FormatTime for SinceStart {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "+{:>5} ms", self.0.elapsed().as_millis())
    }
}
