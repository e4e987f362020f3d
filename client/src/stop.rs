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
