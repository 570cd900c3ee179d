//! Moving bytes between HTTP bodies and the blob store without blocking the async runtime:
//! a blocking thread reads or writes the store, a channel carries the pieces.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use kiln_oci::Digest;
use reqwest::{Body, Method, Response};
use tokio::sync::{Mutex, mpsc};

use crate::deadline::{Activity, Deadline};
use crate::error::{Error, Result};
use crate::store::{BlobMaker, BlobStore};
use crate::verify::Verifier;

/// A request body that streams once: the request builder may run again (a
/// re-authentication), and then the upload must restart instead.
pub(crate) struct OnceBody(std::sync::Mutex<Option<Body>>);

impl OnceBody {
    pub(crate) fn new(body: Body) -> Self {
        OnceBody(std::sync::Mutex::new(Some(body)))
    }

    /// The body, the first time; after that an interrupted upload of `url`.
    pub(crate) fn take(&self, url: &reqwest::Url) -> Result<Body> {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken.ok_or_else(|| Error::UploadInterrupted {
            url: url.to_string(),
        })
    }
}

/// Size of the pieces streamed through the channels.
const PIECE: usize = 512 * 1024;
/// Pieces buffered between the network and the store.
const DEPTH: usize = 16;

/// A request body that streams `reader` to its end, touching `activity` for each piece sent.
fn reader_body(reader: Box<dyn Read + Send>, activity: &Activity) -> Body {
    let rx = spawn_reader(reader);
    let activity = activity.clone();
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .inspect(move |_| activity.touch());
    Body::wrap_stream(stream)
}

/// Reads `reader` to its end on a blocking thread, in pieces, into a channel.
fn spawn_reader(mut reader: Box<dyn Read + Send>) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = BytesMut::zeroed(PIECE);
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// Opens a blob of the store as a streaming request body (see [`reader_body`]).
pub(crate) fn store_body(
    store: &dyn BlobStore,
    digest: &Digest,
    activity: &Activity,
) -> Result<Body> {
    let reader = store.open_blob(digest).map_err(|error| Error::Store {
        digest: digest.clone(),
        error,
    })?;
    Ok(reader_body(reader, activity))
}

/// The pieces of one blob, read on a blocking thread, shared by consecutive chunk bodies.
struct Pieces {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    /// What the previous chunk left of its last piece.
    pending: Option<Bytes>,
}

/// A blob split into consecutive streaming request bodies, for chunked (PATCH) uploads.
pub(crate) struct ChunkedBody {
    pieces: Arc<Mutex<Pieces>>,
}

impl ChunkedBody {
    /// Starts reading the blob from the store.
    pub(crate) fn open(store: &dyn BlobStore, digest: &Digest) -> Result<ChunkedBody> {
        let reader = store.open_blob(digest).map_err(|error| Error::Store {
            digest: digest.clone(),
            error,
        })?;
        Ok(ChunkedBody {
            pieces: Arc::new(Mutex::new(Pieces {
                rx: spawn_reader(reader),
                pending: None,
            })),
        })
    }

    /// A body streaming the next `len` bytes of the blob, touching `activity` for each piece
    /// sent. Bodies must be consumed in order; a short blob makes the body fail.
    pub(crate) fn next_chunk(&self, len: u64, activity: &Activity) -> Body {
        let state = (self.pieces.clone(), len);
        let stream = futures::stream::unfold(state, |(pieces, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            let mut p = pieces.lock().await;
            let mut piece = match p.pending.take() {
                Some(b) => b,
                None => match p.rx.recv().await {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return Some((Err(e), (pieces.clone(), 0))),
                    None => {
                        let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                        return Some((Err(e), (pieces.clone(), 0)));
                    }
                },
            };
            let take = remaining.min(piece.len() as u64) as usize;
            let head = piece.split_to(take);
            if !piece.is_empty() {
                p.pending = Some(piece);
            }
            drop(p);
            Some((Ok(head), (pieces, remaining - take as u64)))
        });
        let activity = activity.clone();
        Body::wrap_stream(stream.inspect(move |_| activity.touch()))
    }
}

/// A blob being made into a request body: [`made_body`].
pub(crate) struct Made {
    /// The body: the bytes as they are made; it fails if making them fails.
    pub(crate) body: Body,
    /// The maker's outcome.
    pub(crate) done: tokio::task::JoinHandle<std::io::Result<kiln_oci::Descriptor>>,
    /// Set when the maker stopped because the body was gone (the upload broke).
    pub(crate) stopped: Arc<AtomicBool>,
    /// Dropping it stops the maker at its next piece, however the body fares.
    pub(crate) cancel: tokio::sync::oneshot::Sender<()>,
}

/// Runs `maker` on a blocking thread into a streaming request body (of unknown length),
/// touching `activity` for each piece sent.
pub(crate) fn made_body(maker: Arc<dyn BlobMaker>, activity: &Activity) -> Made {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(DEPTH);
    let (cancel, cancelled) = tokio::sync::oneshot::channel();
    let stopped = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::current();
    let mut out = PieceWriter {
        tx: Some(tx),
        buf: BytesMut::with_capacity(PIECE),
        cancelled,
        handle,
        stopped: stopped.clone(),
    };
    let done = tokio::task::spawn_blocking(move || {
        let made = maker.make(&mut out).and_then(|desc| {
            // A maker that did not flush ends the body now.
            out.end()?;
            Ok(desc)
        });
        if made.is_err()
            && !out.stopped.load(Ordering::Relaxed)
            && let Some(tx) = out.tx.take()
        {
            // The body must fail, not end as if the blob were whole.
            let _ = tx.blocking_send(Err(std::io::Error::other("blob not made")));
        }
        made
    });
    let activity = activity.clone();
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .inspect(move |_| activity.touch());
    Made {
        body: Body::wrap_stream(stream),
        done,
        stopped,
        cancel,
    }
}

/// A maker's output: pieces of [`PIECE`] bytes into a body's channel, from a blocking thread.
/// A flush sends the rest and ends the body (see [`BlobMaker::make`]).
struct PieceWriter {
    /// `None` once the body ended.
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    buf: BytesMut,
    cancelled: tokio::sync::oneshot::Receiver<()>,
    handle: tokio::runtime::Handle,
    stopped: Arc<AtomicBool>,
}

impl PieceWriter {
    /// Sends what is buffered; fails once the body is gone or the upload was given up.
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(upload_stopped());
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(std::io::Error::other("blob written past its end"));
        };
        let piece = self.buf.split().freeze();
        let cancelled = &mut self.cancelled;
        let sent = self.handle.block_on(async move {
            let send = std::pin::pin!(tx.send(Ok(piece)));
            match futures::future::select(send, cancelled).await {
                futures::future::Either::Left((sent, _)) => sent.is_ok(),
                futures::future::Either::Right(_) => false,
            }
        });
        if sent {
            return Ok(());
        }
        self.stopped.store(true, Ordering::Relaxed);
        Err(upload_stopped())
    }

    /// Sends the rest and ends the body (once).
    fn end(&mut self) -> std::io::Result<()> {
        if self.tx.is_some() {
            self.send_buffered()?;
            self.tx = None;
        }
        Ok(())
    }
}

fn upload_stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped")
}

impl Write for PieceWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.end()
    }
}

enum Piece {
    Data(Bytes),
    End,
}

/// Streams a response body into a new store blob, hashing on the way; commits only if the size
/// and digest match. Nothing is read past `size`: the first piece beyond it fails the download.
/// `progress` gets the running byte count.
pub(crate) async fn download_into(
    mut resp: Response,
    deadline: &Deadline,
    what: &str,
    expected: &Digest,
    size: Option<u64>,
    store: &dyn BlobStore,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<()> {
    let store_err = |error| Error::Store {
        digest: expected.clone(),
        error,
    };
    let mut verifier = Verifier::for_digest(expected)?;
    if let (Some(want), Some(got)) = (size, resp.content_length())
        && want != got
    {
        return Err(Error::SizeMismatch {
            digest: expected.clone(),
            expected: want,
            actual: got,
        });
    }
    let mut sink = store.begin_blob().map_err(store_err)?;
    let (tx, mut rx) = mpsc::channel::<Piece>(DEPTH);
    let want = expected.clone();
    let what_owned = what.to_owned();
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        let store_err = |error| Error::Store {
            digest: want.clone(),
            error,
        };
        loop {
            match rx.blocking_recv() {
                Some(Piece::Data(b)) => {
                    verifier.update(&b);
                    sink.write_all(&b).map_err(store_err)?;
                }
                Some(Piece::End) => break,
                // The download failed: drop the sink uncommitted.
                None => return Ok(()),
            }
        }
        sink.flush().map_err(store_err)?;
        let actual = verifier.finish();
        if actual != want.to_string() {
            return Err(Error::DigestMismatch {
                what: what_owned,
                expected: want,
                actual,
            });
        }
        sink.commit(&want).map_err(store_err)
    });
    let mut total: u64 = 0;
    let body = format!("blob {expected}");
    let streamed: Result<()> = async {
        while let Some(chunk) = deadline
            .chunk(&mut resp, &Method::GET, &body, total)
            .await?
        {
            total += chunk.len() as u64;
            if let Some(want) = size
                && total > want
            {
                return Err(Error::SizeMismatch {
                    digest: expected.clone(),
                    expected: want,
                    actual: total,
                });
            }
            if tx.send(Piece::Data(chunk)).await.is_err() {
                // The writer failed; its error is reported below.
                return Ok(());
            }
            progress(total);
        }
        if let Some(want) = size
            && total != want
        {
            return Err(Error::SizeMismatch {
                digest: expected.clone(),
                expected: want,
                actual: total,
            });
        }
        let _ = tx.send(Piece::End).await;
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| store_err(std::io::Error::other(e.to_string())))?;
    streamed?;
    written
}
