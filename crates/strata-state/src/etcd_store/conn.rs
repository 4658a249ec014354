//! The connection to an etcd cluster: its own small tokio runtime, one gRPC channel per
//! member, failover between members and a bound on the time of every call.
//!
//! Invariants:
//! - a caller never runs a future on its own runtime: [`Conn::run`] spawns the request onto the
//!   store's runtime (one worker thread, `strata-etcd`) and blocks on a std channel, so the
//!   synchronous `Store` trait can be called from any thread, tokio workers included, without
//!   `block_on` (which panics inside a runtime) and without starving the caller's runtime of
//!   the reactor its request needs;
//! - every call ends within its deadline (the store's timeout, or the caller's for `wait`):
//!   each attempt is bounded, and `run` gives up waiting a little after the deadline even if
//!   the runtime were stuck;
//! - a member that refuses, times out, drops the request (`Cancelled`: killed under it) or
//!   answers `Unavailable` (no leader, leader changed, stopping) is skipped and the next one is tried until the deadline; the member that last
//!   answered is tried first. Other errors are the answer and are not retried.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use super::wire;
use crate::StoreError;

/// Pause between two rounds over every member.
const BACKOFF: Duration = Duration::from_millis(100);
/// Shortest time one attempt is given.
const MIN_ATTEMPT: Duration = Duration::from_millis(300);
/// Requests queued on one watch stream (a watch sends only its create request).
const WATCH_QUEUE: usize = 8;

/// Members, channels and the preferred member; shared with the futures on the runtime.
#[derive(Debug)]
pub(super) struct Members {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// The member that answered last.
    preferred: AtomicUsize,
    /// Bound on one request, all attempts included.
    pub(super) timeout: Duration,
}

/// The store's runtime and members.
#[derive(Debug)]
pub(super) struct Conn {
    /// `Some` until dropped (taken in `Drop` to shut it down without blocking).
    rt: Option<Runtime>,
    pub(super) members: Arc<Members>,
}

/// An open watch: its request stream (kept open: closing it ends the watch) and responses.
pub(super) struct Watch {
    pub(super) _requests: mpsc::Sender<wire::WatchRequest>,
    pub(super) responses: Streaming<wire::WatchResponse>,
}

fn backend(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {what}"))
}

/// Whether another member (or a later attempt) may answer where this one failed. A member
/// killed while a request is in flight shows as `Cancelled` (its connection went away under
/// the stream), as much a dead member as a refused connection.
fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

impl Conn {
    /// A runtime and a lazily connected channel per endpoint (`host:port`).
    pub(super) fn new(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoint".into()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-etcd")
            .enable_all()
            .build()
            .map_err(|e| backend(format!("starting the client runtime: {e}")))?;
        // Channels spawn their connection tasks on the runtime they are made in.
        let _in_rt = rt.enter();
        let attempt = (timeout / endpoints.len() as u32).max(MIN_ATTEMPT);
        let mut channels = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let e = Endpoint::from_shared(format!("http://{ep}"))
                .map_err(|e| StoreError::Invalid(format!("etcd endpoint {ep:?}: {e}")))?
                .connect_timeout(attempt)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(attempt)
                .keep_alive_while_idle(true);
            channels.push(e.connect_lazy());
        }
        Ok(Conn {
            rt: Some(rt),
            members: Arc::new(Members {
                endpoints: endpoints.to_vec(),
                channels,
                preferred: AtomicUsize::new(0),
                timeout,
            }),
        })
    }

    /// Runs `f` on the store's runtime and waits for it, at most until `budget` has passed
    /// (plus a second of slack: `f` bounds itself; this only guards against a stuck runtime).
    pub(super) fn run<T, F>(&self, budget: Duration, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.rt.as_ref().expect("runtime lives until drop");
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        match rx.recv_timeout(budget + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(_) => Err(backend(format!("no answer within {budget:?}"))),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // `Runtime`'s own drop blocks, which panics when the store is dropped on a tokio
        // thread of the daemon; its tasks are all bounded requests, so let them go.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Members {
    /// The members in the order to try them: the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.channels.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (first + i) % n)
    }

    fn attempt_budget(&self, deadline: Instant) -> Option<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let share = (self.timeout / self.channels.len() as u32).max(MIN_ATTEMPT);
        Some(left.min(share))
    }

    /// `call` on each member in turn, the preferred one first, round after round with a
    /// pause, until one answers or `deadline` passes; a non-retryable error is the answer.
    async fn with_failover<T, F, Fut>(
        &self,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last = String::from("no attempt made");
        loop {
            for i in self.order().collect::<Vec<_>>() {
                let Some(budget) = self.attempt_budget(deadline) else {
                    return Err(self.unreachable(&last));
                };
                match tokio::time::timeout(budget, call(self.channels[i].clone())).await {
                    Ok(Ok(answer)) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Ok(Err(s)) if retryable(&s) => {
                        last = format!("{}: {}", self.endpoints[i], s.message());
                    }
                    Ok(Err(s)) => {
                        return Err(backend(format!("{}: {}", self.endpoints[i], s.message())))
                    }
                    Err(_) => last = format!("{}: no answer within {budget:?}", self.endpoints[i]),
                }
            }
            tokio::time::sleep(BACKOFF.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// One unary call, tried on each member in turn until one answers or the store's timeout
    /// passes.
    pub(super) async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
    ) -> Result<Resp, StoreError>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        self.with_failover(deadline, |ch| unary_on(ch, path, req.clone()))
            .await
    }

    /// One request on a bidirectional stream, for the calls etcd has only in that form (a
    /// lease keep-alive): open the stream, send `req`, read the first answer, close it.
    /// Tried on each member like [`Members::unary`].
    pub(super) async fn stream_once<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
    ) -> Result<Resp, StoreError>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        self.with_failover(deadline, |ch| stream_once_on(ch, path, req.clone()))
            .await
    }

    /// Opens a watch on the first member that accepts it before `deadline`; returns once the
    /// server has acknowledged the create request (or cancelled it at once).
    pub(super) async fn watch(
        &self,
        create: wire::WatchCreateRequest,
        deadline: Instant,
    ) -> Result<(Watch, wire::WatchResponse), StoreError> {
        self.with_failover(deadline, |ch| watch_on(ch, create.clone()))
            .await
    }

    fn unreachable(&self, last: &str) -> StoreError {
        backend(format!(
            "no member of {} answered within {:?} (last: {last})",
            self.endpoints.join(","),
            self.timeout
        ))
    }
}

async fn unary_on<Req, Resp>(ch: Channel, path: &'static str, req: Req) -> Result<Resp, Status>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let resp = grpc
        .unary(
            tonic::Request::new(req),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    Ok(resp.into_inner())
}

async fn stream_once_on<Req, Resp>(
    ch: Channel,
    path: &'static str,
    req: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    // The request stream ends after its one message; the server answers it, then ends too.
    let resp = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter([req])),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    resp.into_inner()
        .message()
        .await?
        .ok_or_else(|| Status::unavailable("stream closed before its answer"))
}

async fn watch_on(
    ch: Channel,
    create: wire::WatchCreateRequest,
) -> Result<(Watch, wire::WatchResponse), Status> {
    let (tx, rx) = mpsc::channel(WATCH_QUEUE);
    tx.send(wire::WatchRequest {
        request_union: Some(wire::WatchRequestUnion::Create(create)),
    })
    .await
    .map_err(|_| Status::internal("watch request queue closed"))?;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<wire::WatchRequest, wire::WatchResponse>::default();
    let resp = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static(wire::WATCH),
            codec,
        )
        .await?;
    let mut responses = resp.into_inner();
    let first = responses
        .message()
        .await?
        .ok_or_else(|| Status::unavailable("watch stream closed before it was created"))?;
    Ok((
        Watch {
            _requests: tx,
            responses,
        },
        first,
    ))
}
