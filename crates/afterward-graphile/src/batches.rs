//! Requests that arrive together, served together: what waits while earlier
//! batches are being served leaves as the next batch, so that one statement
//! and one commit serve them all. Each request gets its own answer.
//!
//! A lone request leaves at once; batches grow only when requests arrive
//! faster than they are served, which is when sharing a commit pays.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// One request, its size (what `max` counts), and where its answer goes.
struct Request<I, A> {
    item: I,
    size: usize,
    reply: oneshot::Sender<A>,
}

/// The sending side of a task that serves requests in batches.
pub(crate) struct Batches<I, A> {
    requests: mpsc::UnboundedSender<Request<I, A>>,
}

impl<I, A> std::fmt::Debug for Batches<I, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").finish_non_exhaustive()
    }
}

impl<I: Send + 'static, A: Send + 'static> Batches<I, A> {
    /// Starts the task, on the current runtime. At most `in_flight` batches
    /// are served at once, each of at most `max` in size (a request larger
    /// than that leaves alone). `serve` answers a batch's items in order.
    pub(crate) fn start<F, Fut>(in_flight: usize, max: usize, serve: F) -> Batches<I, A>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(gather(received, in_flight, max, Arc::new(serve)));
        Batches { requests }
    }

    /// Serves `item` with whatever else arrives meanwhile. `Err` if the
    /// task is gone (its runtime shut down) or dropped the batch unanswered.
    pub(crate) async fn call(&self, item: I, size: usize) -> Result<A, &'static str> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { item, size, reply })
            .map_err(|_| "the batches have stopped")?;
        answer
            .await
            .map_err(|_| "the batch was dropped before it answered")
    }
}

async fn gather<I, A, F, Fut>(
    mut received: mpsc::UnboundedReceiver<Request<I, A>>,
    in_flight: usize,
    max: usize,
    serve: Arc<F>,
) where
    I: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<A>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    // A request that did not fit in the last batch starts the next.
    let mut held: Option<Request<I, A>> = None;
    loop {
        let first = match held.take() {
            Some(first) => first,
            None => match received.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut size = first.size;
        let mut batch = vec![first];
        while let Ok(next) = received.try_recv() {
            if size + next.size > max {
                held = Some(next);
                break;
            }
            size += next.size;
            batch.push(next);
        }
        let serve = serve.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<I>, Vec<_>) = batch
                .into_iter()
                .map(|request| (request.item, request.reply))
                .unzip();
            let answers = serve(items).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Batches;
    use std::sync::{Arc, Mutex};

    /// Requests sent while a batch is served leave together, in order, each
    /// with its own answer, and no batch is larger than `max`.
    #[tokio::test]
    async fn what_arrives_meanwhile_leaves_together() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::watch::channel(false);
        let batches = Batches::start(1, 3, {
            let seen = seen.clone();
            move |items: Vec<u32>| {
                let (seen, mut gate) = (seen.clone(), gate.clone());
                async move {
                    seen.lock().unwrap().push(items.clone());
                    gate.wait_for(|open| *open).await.unwrap();
                    items.into_iter().map(|n| n * 10).collect()
                }
            }
        });
        let batches = Arc::new(batches);
        let first = tokio::spawn({
            let batches = batches.clone();
            async move { batches.call(1, 1).await }
        });
        // The first batch is being served (and held) once it is seen.
        while seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (2..=6)
            .map(|n| {
                let batches = batches.clone();
                tokio::spawn(async move { batches.call(n, 1).await })
            })
            .collect();
        // Let every request reach the channel before the gate opens.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Ok(10));
        for (n, handle) in (2..=6).zip(rest) {
            assert_eq!(handle.await.unwrap(), Ok(n * 10));
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, vec![vec![1], vec![2, 3, 4], vec![5, 6]]);
    }
}
