//! Watch: started from the watch cache; the transports send the frames of the [`Watching`] it
//! answers with, each in its own wire format.

use std::time::Duration;

use drover_api::Status;
use futures::Stream;

use super::ApiService;
use super::request::Watch;
use crate::cache::{WatchCache, WatchStart};
use crate::watch::{Frame, RenderBookmark, bookmark_object, frames};

/// A started watch.
pub struct Watching {
    cache: WatchCache,
    start: WatchStart,
    bookmarks: Option<(Duration, RenderBookmark)>,
    timeout: Option<Duration>,
}

impl Watching {
    /// The watch's events, then bookmarks while idle if they were asked for, until the timeout
    /// or until the stream is dropped (which ends the watch).
    pub fn frames(self) -> impl Stream<Item = Frame> + Send + 'static {
        frames(self.cache, self.start, self.bookmarks, self.timeout)
    }
}

impl ApiService {
    pub(super) async fn watch(&self, req: &Watch) -> Result<Watching, Status> {
        let o = &req.options;
        let r = self.resolve(&req.target)?;
        let filter = self.filter(&r, o)?;
        let from = self.not_older_than(&o.resource_version).await?;
        let start = self.cache.watch(filter, from)?;
        let bookmarks = o.allow_bookmarks.then(|| {
            let api_version = r.info.api_version();
            let kind = r.info.kind.to_string();
            let render: RenderBookmark =
                Box::new(move |rev| bookmark_object(&api_version, &kind, rev));
            (self.config.bookmark_interval, render)
        });
        Ok(Watching {
            cache: self.cache.clone(),
            start,
            bookmarks,
            timeout: o.timeout,
        })
    }
}
