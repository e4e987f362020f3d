//! Turns a started watch into a stream of frames, shared by both transports: the initial events,
//! then live ones, with bookmarks while idle. Dropping the stream ends the watch.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::cache::{WatchCache, WatchStart};

/// One watch event ready to send: its type and the object's JSON.
#[derive(Clone, Debug)]
pub struct Frame {
    pub event_type: &'static str,
    pub object: Bytes,
}

struct Unwatch {
    cache: WatchCache,
    id: u64,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        self.cache.unwatch(self.id);
    }
}

/// Renders the bookmark object for a revision.
pub type RenderBookmark = Box<dyn Fn(u64) -> Bytes + Send>;

/// The frames of a watch. `bookmark` renders a bookmark object for a revision.
pub fn frames(
    cache: WatchCache,
    start: WatchStart,
    bookmarks: Option<(Duration, RenderBookmark)>,
    timeout: Option<Duration>,
) -> impl Stream<Item = Frame> + Send + 'static {
    // `timeoutSeconds`: the stream ends (and the watch with it) when the time is up.
    let end = async move {
        match timeout {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let events = async_stream::stream! {
        let WatchStart { initial, mut rx, id } = start;
        let _guard = Unwatch { cache: cache.clone(), id };
        for (t, o) in initial {
            yield Frame { event_type: t.as_str(), object: o.json.clone() };
        }
        let mut last_bookmark = 0u64;
        match bookmarks {
            None => {
                while let Some((t, o)) = rx.recv().await {
                    yield Frame { event_type: t.as_str(), object: o.json.clone() };
                }
            }
            Some((every, render)) => {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        item = rx.recv() => match item {
                            Some((t, o)) => {
                                yield Frame { event_type: t.as_str(), object: o.json.clone() };
                            }
                            None => break,
                        },
                        _ = tick.tick() => {
                            if let Some(rev) = cache.bookmark_revision(&rx)
                                && rev > last_bookmark
                            {
                                last_bookmark = rev;
                                yield Frame { event_type: "BOOKMARK", object: render(rev) };
                            }
                        }
                    }
                }
            }
        }
    };
    events.take_until(end)
}

/// A bookmark object of a kind: only `apiVersion`, `kind` and `metadata.resourceVersion`.
pub fn bookmark_object(api_version: &str, kind: &str, rev: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"apiVersion\":\"{api_version}\",\"kind\":\"{kind}\",\"metadata\":{{\"resourceVersion\":\"{rev}\"}}}}"
    ))
}
