//! A stop signal many tasks can wait on: a leader's work, an informer, a controller.

use std::future::Future;

/// A stop signal many tasks can wait on (cloneable, unlike a future).
#[derive(Clone, Debug)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

/// The sending side of a [`Stop`].
#[derive(Debug)]
pub struct StopSender(tokio::sync::watch::Sender<bool>);

impl StopSender {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl Stop {
    pub fn new() -> (StopSender, Stop) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (StopSender(tx), Stop(rx))
    }

    /// Resolves once stopped (or once the sender is gone).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs `work(stop)` until it returns; when `shutdown` resolves first, signals its stop and
/// waits for it to finish (a graceful stop: a leader releases its lease).
pub async fn run_until<F>(shutdown: impl Future<Output = ()>, work: impl FnOnce(Stop) -> F)
where
    F: Future<Output = ()>,
{
    let (tx, stop) = Stop::new();
    let work = work(stop);
    tokio::pin!(work);
    tokio::select! {
        _ = &mut work => {}
        _ = shutdown => {
            tx.stop();
            work.await;
        }
    }
}
