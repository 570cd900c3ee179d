//! Deadlines of one request attempt, so a registry that stops answering becomes a retryable
//! error naming what timed out instead of a hang:
//!
//! - **idle**: no response headers, and no body byte, for this long (every request);
//! - **overall**: a small request (manifest, token, `HEAD`, upload session) must be done, body
//!   included, within this long. Blob transfers have no overall deadline: a layer of many
//!   gigabytes on a slow link is not a stalled one.
//!
//! Connecting is bounded by reqwest's connect timeout. Each retry gets fresh deadlines.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, Response, Url};
use tokio::time::Instant;

use crate::client::ClientOptions;
use crate::error::{Error, Result};

/// When an upload body last sent a piece: the body stream touches it, and waiting for the
/// response counts idleness from there, so a long upload is not a stalled one.
#[derive(Clone)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records progress now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// The deadlines of one attempt.
pub(crate) struct Deadline {
    idle: Duration,
    /// Small requests: when the exchange must be over, and the budget that gives.
    end: Option<(Instant, Duration)>,
    activity: Activity,
}

impl Deadline {
    /// A small request: idle timeout and overall deadline, starting now.
    pub(crate) fn small(opts: &ClientOptions) -> Deadline {
        Deadline {
            idle: opts.idle_timeout,
            end: Some((Instant::now() + opts.request_timeout, opts.request_timeout)),
            activity: Activity::new(),
        }
    }

    /// A blob download: idle timeout only.
    pub(crate) fn transfer(opts: &ClientOptions) -> Deadline {
        Deadline {
            idle: opts.idle_timeout,
            end: None,
            activity: Activity::new(),
        }
    }

    /// A blob upload whose body touches `activity`: idle timeout counted from its last piece.
    pub(crate) fn upload(opts: &ClientOptions, activity: Activity) -> Deadline {
        Deadline {
            idle: opts.idle_timeout,
            end: None,
            activity,
        }
    }

    /// The idle timeout.
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    fn overdue(&self, now: Instant) -> Option<Duration> {
        self.end
            .filter(|(end, _)| now >= *end)
            .map(|(_, total)| total)
    }

    /// Awaits `fut`, the response headers of `method url`.
    pub(crate) async fn response<T>(
        &self,
        method: &Method,
        url: &Url,
        fut: impl Future<Output = T>,
    ) -> Result<T> {
        self.activity.touch();
        let mut fut = std::pin::pin!(fut);
        loop {
            let idle_end = self.activity.last() + self.idle;
            let until = match self.end {
                Some((end, _)) => idle_end.min(end),
                None => idle_end,
            };
            if let Ok(v) = tokio::time::timeout_at(until, fut.as_mut()).await {
                return Ok(v);
            }
            let now = Instant::now();
            let after = match self.overdue(now) {
                Some(total) => total,
                // An upload that sent a piece meanwhile is still going.
                None if self.activity.last() + self.idle > now => continue,
                None => self.idle,
            };
            return Err(Error::NoResponse {
                method: method.to_string(),
                url: url.to_string(),
                after,
            });
        }
    }

    /// The next piece of `resp`'s body; `what` names the body and `received` counts what came
    /// before, for the error.
    pub(crate) async fn chunk(
        &self,
        resp: &mut Response,
        method: &Method,
        what: &str,
        received: u64,
    ) -> Result<Option<Bytes>> {
        let idle_end = Instant::now() + self.idle;
        let until = match self.end {
            Some((end, _)) => idle_end.min(end),
            None => idle_end,
        };
        let url = resp.url().to_string();
        match tokio::time::timeout_at(until, resp.chunk()).await {
            Ok(Ok(chunk)) => {
                self.activity.touch();
                Ok(chunk)
            }
            Ok(Err(transport)) => Err(Error::Http {
                method: method.to_string(),
                url,
                transport,
            }),
            Err(_) => Err(match self.overdue(Instant::now()) {
                Some(after) => Error::Deadline {
                    what: what.to_owned(),
                    received,
                    after,
                },
                None => Error::Stalled {
                    what: what.to_owned(),
                    received,
                    idle: self.idle,
                },
            }),
        }
    }
}
