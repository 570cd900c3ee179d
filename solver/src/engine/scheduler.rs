//! The scheduler: cache keys first (cheap, top-down), then a lazy, memoized resolution from the
//! root: a vertex whose key is in the cache never needs its inputs, so a fully cached build runs
//! nothing. Misses run in parallel up to `jobs` at a time. Everything runs inside the one
//! `solve` future (no spawned tasks), so dropping it, or the first failure, cancels all work.

use super::progress::{Event, EventKind, ProgressSender};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, try_join_all};
use kiln_graph::{Definition, Vertex};
use kiln_oci::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// A cache key: op digest, input keys and (for sources) content, hashed.
pub type CacheKey = Digest;

/// Errors a worker returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Runs the ops. The scheduler decides what runs when; the worker knows what ops mean.
pub trait Worker: Send + Sync + 'static {
    /// The result of a vertex (a layer chain, a directory, ...).
    type Output: Clone + Send + Sync + 'static;

    /// The vertex's cache key from its digest and its inputs' keys. Sources hash their content
    /// here. Must be machine-independent.
    fn cache_key(
        &self,
        digest: &Digest,
        vertex: &Vertex,
        input_keys: &[CacheKey],
    ) -> impl Future<Output = Result<CacheKey, BoxError>> + Send;

    /// A cached result for `key`, if the cache has one that is usable now.
    fn lookup(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
    ) -> impl Future<Output = Result<Option<Self::Output>, BoxError>> + Send;

    /// Runs the vertex over its inputs' results (in `vertex.inputs` order).
    fn execute(
        &self,
        job: Job<'_>,
        vertex: &Vertex,
        inputs: Vec<Self::Output>,
    ) -> impl Future<Output = Result<Self::Output, BoxError>> + Send;

    /// For a vertex whose lookup always hits because it is really read afresh each build (a
    /// local context source): the status line of that work (`transferring context: 32B done`).
    /// Such a vertex is shown done with that line instead of CACHED, as BuildKit shows its
    /// `load build context`.
    fn fresh_status(&self, _digest: &Digest) -> Option<String> {
        None
    }

    /// Records the result under `key` for later builds.
    fn save(
        &self,
        key: &CacheKey,
        vertex: &Vertex,
        output: &Self::Output,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// What a worker gets to know about the vertex it runs.
pub struct Job<'a> {
    pub digest: &'a Digest,
    pub key: &'a CacheKey,
    events: Option<&'a ProgressSender>,
    jobs: &'a Semaphore,
    permit: Mutex<Option<tokio::sync::SemaphorePermit<'a>>>,
}

impl Job<'_> {
    /// Runs `fut` without holding a job slot. `--jobs` bounds kiln's own work (snapshots,
    /// copies, layer compression); a process in the sandbox is scheduled by the kernel, as
    /// BuildKit leaves it, so steps that wait (sleep, network) never hold up others. The slot
    /// is taken back before the step's own work resumes.
    pub async fn outside_jobs<T>(&self, fut: impl Future<Output = T>) -> T {
        drop(lock(&self.permit).take());
        let out = fut.await;
        if let Ok(p) = self.jobs.acquire().await {
            *lock(&self.permit) = Some(p);
        }
        out
    }

    /// Sends a progress event about this vertex.
    pub fn emit(&self, kind: EventKind) {
        if let Some(tx) = self.events {
            let _ = tx.send(Event::now(self.digest.clone(), kind));
        }
    }

    /// A sender for events of this vertex that can move into another task.
    pub fn events(&self) -> Option<ProgressSender> {
        self.events.cloned()
    }
}

/// A failed solve: the vertex that failed and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SolveError {
    /// The failing vertex, when one failed (not for a malformed graph).
    pub vertex: Option<Digest>,
    /// Its description (`[build 2/3] RUN make`).
    pub description: String,
    /// The worker's error, rendered.
    pub message: String,
    /// The worker's error itself.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl SolveError {
    fn graph(message: String) -> SolveError {
        SolveError {
            vertex: None,
            description: String::new(),
            message,
            source: None,
        }
    }

    fn at(vertex: &Digest, v: &Vertex, err: BoxError) -> SolveError {
        SolveError {
            vertex: Some(vertex.clone()),
            description: v.meta.description.clone(),
            message: err.to_string(),
            source: Some(Arc::from(err)),
        }
    }
}

/// How a vertex was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VertexOutcome {
    Cached,
    Executed,
}

/// What a solve produced.
#[derive(Debug)]
pub struct SolveResult<O> {
    /// The root's result (`None` when the definition has no root).
    pub root: Option<O>,
    /// Cache key of every vertex reachable from the root.
    pub keys: BTreeMap<Digest, CacheKey>,
    /// The vertices that were needed and how each was satisfied (cached vertices' inputs are
    /// absent: they were never needed).
    pub outcomes: BTreeMap<Digest, VertexOutcome>,
}

type SharedResult<O> = Shared<BoxFuture<'static, Result<O, Arc<SolveError>>>>;

struct Inner<W: Worker> {
    worker: Arc<W>,
    def: Arc<Definition>,
    keys: BTreeMap<Digest, CacheKey>,
    jobs: Semaphore,
    events: Option<ProgressSender>,
    memo: Mutex<HashMap<Digest, SharedResult<W::Output>>>,
    outcomes: Mutex<BTreeMap<Digest, VertexOutcome>>,
    running: Mutex<BTreeSet<Digest>>,
    /// Vertices already reported as cached (hits, and the inputs a hit made unneeded).
    announced: Mutex<BTreeSet<Digest>>,
}

/// Executes definitions with a worker.
pub struct Solver<W: Worker> {
    worker: Arc<W>,
    jobs: usize,
    events: Option<ProgressSender>,
}

impl<W: Worker> Solver<W> {
    /// A solver running at most `jobs` vertices at once (at least one).
    pub fn new(worker: Arc<W>, jobs: usize) -> Solver<W> {
        Solver {
            worker,
            jobs: jobs.max(1),
            events: None,
        }
    }

    /// Sends progress events to `tx`.
    pub fn with_events(mut self, tx: ProgressSender) -> Solver<W> {
        self.events = Some(tx);
        self
    }

    /// Computes every reachable vertex's cache key (inputs first).
    pub async fn cache_keys(
        &self,
        def: &Definition,
    ) -> Result<BTreeMap<Digest, CacheKey>, SolveError> {
        def.validate().map_err(SolveError::graph)?;
        let mut keys: BTreeMap<Digest, CacheKey> = BTreeMap::new();
        for d in def.topo_order() {
            let v = &def.vertices[&d];
            let input_keys: Vec<CacheKey> = v.inputs.iter().map(|i| keys[i].clone()).collect();
            let key = self
                .worker
                .cache_key(&d, v, &input_keys)
                .await
                .map_err(|e| SolveError::at(&d, v, e))?;
            keys.insert(d, key);
        }
        Ok(keys)
    }

    /// Solves `def`: the root's result, from the cache where possible.
    pub async fn solve(&self, def: Arc<Definition>) -> Result<SolveResult<W::Output>, SolveError> {
        let keys = self.cache_keys(&def).await?;
        let Some(root) = def.root.clone() else {
            return Ok(SolveResult {
                root: None,
                keys,
                outcomes: BTreeMap::new(),
            });
        };
        let inner = Arc::new(Inner {
            worker: self.worker.clone(),
            def,
            keys,
            jobs: Semaphore::new(self.jobs),
            events: self.events.clone(),
            memo: Mutex::new(HashMap::new()),
            outcomes: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeSet::new()),
            announced: Mutex::new(BTreeSet::new()),
        });
        let result = resolve(inner.clone(), root).await;
        // Whatever still runs is cancelled when the futures drop; say so.
        let leftover: Vec<Digest> = lock(&inner.running).iter().cloned().collect();
        for d in leftover {
            emit(&inner.events, &d, EventKind::Cancelled);
        }
        lock(&inner.memo).clear();
        let out = result.map_err(|e| (*e).clone())?;
        Ok(SolveResult {
            root: Some(out),
            keys: inner.keys.clone(),
            outcomes: lock(&inner.outcomes).clone(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn emit(events: &Option<ProgressSender>, d: &Digest, kind: EventKind) {
    if let Some(tx) = events {
        let _ = tx.send(Event::now(d.clone(), kind));
    }
}

/// Reports `d` as cached, after the inputs its hit made unneeded (inputs first), as BuildKit
/// lists every step of a cached build: they are never looked up or run (resolution stays
/// lazy), only named. A vertex some other path is resolving reports for itself.
fn announce_cached<W: Worker>(inner: &Inner<W>, d: &Digest) {
    let Some(events) = &inner.events else {
        return;
    };
    let memo = lock(&inner.memo);
    let mut announced = lock(&inner.announced);
    // Depth first, children before parents, without recursion.
    let mut order = Vec::new();
    let mut stack = vec![(d.clone(), false)];
    while let Some((v, expanded)) = stack.pop() {
        if expanded {
            order.push(v);
            continue;
        }
        if announced.contains(&v) || (v != *d && memo.contains_key(&v)) {
            continue;
        }
        announced.insert(v.clone());
        stack.push((v.clone(), true));
        if let Some(vertex) = inner.def.vertices.get(&v) {
            for i in vertex.inputs.iter().rev() {
                stack.push((i.clone(), false));
            }
        }
    }
    drop(memo);
    for v in order {
        let Some(vertex) = inner.def.vertices.get(&v) else {
            continue;
        };
        let name = vertex.meta.description.clone();
        match inner.worker.fresh_status(&v) {
            Some(message) => {
                let _ = events.send(Event::now(v.clone(), EventKind::Started { name }));
                let _ = events.send(Event::now(v.clone(), EventKind::Status { message }));
                let _ = events.send(Event::now(v, EventKind::Completed { duration_ms: 0 }));
            }
            None => {
                let _ = events.send(Event::now(v, EventKind::Cached { name }));
            }
        }
    }
}

fn resolve<W: Worker>(inner: Arc<Inner<W>>, d: Digest) -> SharedResult<W::Output> {
    let mut memo = lock(&inner.memo);
    if let Some(f) = memo.get(&d) {
        return f.clone();
    }
    let span = tracing::debug_span!("vertex", vertex = %d);
    let fut = run_vertex(inner.clone(), d.clone())
        .instrument(span)
        .boxed()
        .shared();
    memo.insert(d, fut.clone());
    fut
}

async fn run_vertex<W: Worker>(
    inner: Arc<Inner<W>>,
    d: Digest,
) -> Result<W::Output, Arc<SolveError>> {
    let v = &inner.def.vertices[&d];
    let key = &inner.keys[&d];
    let fail = |e: BoxError| Arc::new(SolveError::at(&d, v, e));
    let name = v.meta.description.clone();

    if !v.meta.ignore_cache
        && let Some(out) = inner.worker.lookup(key, v).await.map_err(fail)?
    {
        announce_cached(&inner, &d);
        lock(&inner.outcomes).insert(d.clone(), VertexOutcome::Cached);
        return Ok(out);
    }

    let inputs = try_join_all(v.inputs.iter().map(|i| resolve(inner.clone(), i.clone()))).await?;

    let permit = inner.jobs.acquire().await.map_err(|e| fail(Box::new(e)))?;
    lock(&inner.running).insert(d.clone());
    emit(&inner.events, &d, EventKind::Started { name });
    let started = Instant::now();
    let job = Job {
        digest: &d,
        key,
        events: inner.events.as_ref(),
        jobs: &inner.jobs,
        permit: Mutex::new(Some(permit)),
    };
    let result = inner.worker.execute(job, v, inputs).await;
    lock(&inner.running).remove(&d);
    match result {
        Ok(out) => {
            inner.worker.save(key, v, &out).await.map_err(fail)?;
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            emit(&inner.events, &d, EventKind::Completed { duration_ms });
            lock(&inner.outcomes).insert(d.clone(), VertexOutcome::Executed);
            Ok(out)
        }
        Err(e) => {
            emit(
                &inner.events,
                &d,
                EventKind::Failed {
                    error: e.to_string(),
                },
            );
            Err(fail(e))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fake ops with call counters (as BuildKit's scheduler tests do) prove dedupe, pruning,
    //! parallelism, cache hits and cancellation without any I/O.
    use super::*;
    use kiln_graph::{FileAction, FileOp, Op, VertexMeta};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake op: its "output" is the concatenation of its inputs and its own name.
    #[derive(Default)]
    struct Fake {
        executed: Mutex<Vec<String>>,
        cache: Mutex<HashMap<CacheKey, String>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
        dropped_while_running: AtomicUsize,
        /// Each running op waits until this many ops run at once (or the gate opens).
        gate: tokio::sync::Notify,
    }

    fn name_of(v: &Vertex) -> String {
        match &v.op {
            Op::File(f) => match &f.actions[0] {
                FileAction::Mkdir { path, .. } => path.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        }
    }

    struct RunningGuard<'a>(&'a Fake);
    impl Drop for RunningGuard<'_> {
        fn drop(&mut self) {
            self.0.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Worker for Fake {
        type Output = String;
        async fn cache_key(
            &self,
            digest: &Digest,
            _v: &Vertex,
            inputs: &[CacheKey],
        ) -> Result<CacheKey, BoxError> {
            let mut s = digest.to_string();
            for i in inputs {
                s.push_str(&i.to_string());
            }
            Ok(kiln_oci::sha256(s.as_bytes()))
        }
        async fn lookup(&self, key: &CacheKey, _v: &Vertex) -> Result<Option<String>, BoxError> {
            Ok(lock(&self.cache).get(key).cloned())
        }
        async fn execute(
            &self,
            _job: Job<'_>,
            v: &Vertex,
            inputs: Vec<String>,
        ) -> Result<String, BoxError> {
            let name = name_of(v);
            lock(&self.executed).push(name.clone());
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let guard = RunningGuard(self);
            if name.starts_with("slow") {
                // Wait until a sibling runs too (proves overlap without timing), or forever.
                if now >= 2 {
                    self.gate.notify_waiters();
                } else {
                    self.gate.notified().await;
                }
            }
            if name.starts_with("hang") {
                let _count_drop = DropCounter(&self.dropped_while_running);
                std::future::pending::<()>().await;
            }
            if name.starts_with("fail") {
                return Err(format!("{name} exited with code 3").into());
            }
            drop(guard);
            Ok(format!("{}{}", inputs.join(""), name))
        }
        async fn save(&self, key: &CacheKey, _v: &Vertex, out: &String) -> Result<(), BoxError> {
            lock(&self.cache).insert(key.clone(), out.clone());
            Ok(())
        }
    }

    struct DropCounter<'a>(&'a AtomicUsize);
    impl Drop for DropCounter<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn v(def: &mut Definition, name: &str, inputs: &[&Digest]) -> Digest {
        def.add(Vertex {
            op: Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Mkdir {
                    path: name.to_string(),
                    mode: 0o755,
                    chown: None,
                }],
            }),
            inputs: inputs.iter().map(|d| (*d).clone()).collect(),
            meta: VertexMeta {
                description: name.to_string(),
                ..VertexMeta::default()
            },
        })
    }

    #[tokio::test]
    async fn runs_each_vertex_once_and_prunes_unreachable() {
        let mut def = Definition::default();
        let a = v(&mut def, "a", &[]);
        let b = v(&mut def, "b", &[&a]);
        let c = v(&mut def, "c", &[&a]);
        let _unused = v(&mut def, "unused", &[&a]);
        let root = v(&mut def, "root", &[&b, &c]);
        def.root = Some(root);
        let w = Arc::new(Fake::default());
        let res = Solver::new(w.clone(), 4)
            .solve(Arc::new(def))
            .await
            .unwrap();
        assert_eq!(res.root.as_deref(), Some("abacroot"));
        let mut ran = lock(&w.executed).clone();
        ran.sort();
        assert_eq!(ran, ["a", "b", "c", "root"], "a once, unused never");
    }

    #[tokio::test]
    async fn second_solve_is_all_cached_and_a_change_reruns_only_successors() {
        let mut def = Definition::default();
        let a = v(&mut def, "a", &[]);
        let b = v(&mut def, "b", &[&a]);
        def.root = Some(v(&mut def, "root", &[&b]));
        let w = Arc::new(Fake::default());
        let solver = Solver::new(w.clone(), 2);
        solver.solve(Arc::new(def.clone())).await.unwrap();
        lock(&w.executed).clear();
        let res = solver.solve(Arc::new(def)).await.unwrap();
        assert!(lock(&w.executed).is_empty());
        // Only the root was even looked at: its key hit, so its inputs were never needed.
        assert_eq!(res.outcomes.len(), 1);
        assert!(res.outcomes.values().all(|o| *o == VertexOutcome::Cached));

        let mut changed = Definition::default();
        let a = v(&mut changed, "a", &[]);
        let b2 = v(&mut changed, "b2", &[&a]);
        changed.root = Some(v(&mut changed, "root", &[&b2]));
        solver.solve(Arc::new(changed)).await.unwrap();
        assert_eq!(*lock(&w.executed), ["b2", "root"]);
    }

    #[tokio::test]
    async fn a_cached_root_names_every_step_it_made_unneeded_once() {
        let mut def = Definition::default();
        let a = v(&mut def, "a", &[]);
        let b = v(&mut def, "b", &[&a]);
        let c = v(&mut def, "c", &[&a]);
        def.root = Some(v(&mut def, "root", &[&b, &c]));
        let w = Arc::new(Fake::default());
        Solver::new(w.clone(), 2)
            .solve(Arc::new(def.clone()))
            .await
            .unwrap();
        lock(&w.executed).clear();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let res = Solver::new(w.clone(), 2)
            .with_events(tx)
            .solve(Arc::new(def))
            .await
            .unwrap();
        assert!(lock(&w.executed).is_empty());
        assert_eq!(
            res.outcomes.len(),
            1,
            "still lazy: only the root was looked up"
        );
        let mut names = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            match ev.kind {
                EventKind::Cached { name } => names.push(name),
                other => panic!("only cached events, got {other:?}"),
            }
        }
        assert_eq!(names, ["a", "b", "c", "root"], "inputs first, a once");
    }

    #[tokio::test]
    async fn independent_vertices_overlap() {
        let mut def = Definition::default();
        let s1 = v(&mut def, "slow1", &[]);
        let s2 = v(&mut def, "slow2", &[]);
        def.root = Some(v(&mut def, "root", &[&s1, &s2]));
        let w = Arc::new(Fake::default());
        // If the two slow ops could not overlap, the first would wait forever on the gate.
        Solver::new(w.clone(), 2)
            .solve(Arc::new(def))
            .await
            .unwrap();
        assert_eq!(w.max_running.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn work_outside_jobs_does_not_hold_a_slot() {
        // Two "sandboxed" waits under --jobs 1: each must see the other running, which only
        // works if the wait gives its slot back.
        struct Waiter {
            running: AtomicUsize,
            gate: tokio::sync::Notify,
        }
        impl Worker for Waiter {
            type Output = ();
            async fn cache_key(
                &self,
                d: &Digest,
                _v: &Vertex,
                _i: &[CacheKey],
            ) -> Result<CacheKey, BoxError> {
                Ok(d.clone())
            }
            async fn lookup(&self, _k: &CacheKey, _v: &Vertex) -> Result<Option<()>, BoxError> {
                Ok(None)
            }
            async fn execute(&self, job: Job<'_>, v: &Vertex, _i: Vec<()>) -> Result<(), BoxError> {
                if name_of(v) == "root" {
                    return Ok(());
                }
                job.outside_jobs(async {
                    if self.running.fetch_add(1, Ordering::SeqCst) + 1 >= 2 {
                        self.gate.notify_waiters();
                    } else {
                        self.gate.notified().await;
                    }
                })
                .await;
                Ok(())
            }
            async fn save(&self, _k: &CacheKey, _v: &Vertex, _o: &()) -> Result<(), BoxError> {
                Ok(())
            }
        }
        let mut def = Definition::default();
        let a = v(&mut def, "wait-a", &[]);
        let b = v(&mut def, "wait-b", &[]);
        def.root = Some(v(&mut def, "root", &[&a, &b]));
        let w = Arc::new(Waiter {
            running: AtomicUsize::new(0),
            gate: tokio::sync::Notify::new(),
        });
        let solver = Solver::new(w.clone(), 1);
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            solver.solve(Arc::new(def)),
        )
        .await
        .expect("a wait outside the job slots blocked the other step")
        .unwrap();
        assert_eq!(w.running.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn jobs_limit_is_respected() {
        let mut def = Definition::default();
        let ins: Vec<Digest> = (0..6).map(|i| v(&mut def, &format!("x{i}"), &[])).collect();
        let refs: Vec<&Digest> = ins.iter().collect();
        def.root = Some(v(&mut def, "root", &refs));
        let w = Arc::new(Fake::default());
        Solver::new(w.clone(), 1)
            .solve(Arc::new(def))
            .await
            .unwrap();
        assert_eq!(w.max_running.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn first_failure_cancels_running_siblings() {
        let mut def = Definition::default();
        let hang = v(&mut def, "hang", &[]);
        let fail = v(&mut def, "fail", &[]);
        def.root = Some(v(&mut def, "root", &[&hang, &fail]));
        let w = Arc::new(Fake::default());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let err = Solver::new(w.clone(), 4)
            .with_events(tx)
            .solve(Arc::new(def))
            .await
            .unwrap_err();
        assert_eq!(err.description, "fail");
        assert_eq!(err.message, "fail exited with code 3");
        assert_eq!(w.dropped_while_running.load(Ordering::SeqCst), 1);
        assert_eq!(w.running.load(Ordering::SeqCst), 0);
        let mut kinds = Vec::new();
        while let Ok(e) = rx.try_recv() {
            kinds.push(
                serde_json::to_value(&e).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(kinds.contains(&"failed".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"cancelled".to_string()), "{kinds:?}");
        assert!(!lock(&w.executed).contains(&"root".to_string()));
    }

    #[tokio::test]
    async fn malformed_graph_is_an_error_not_a_panic() {
        let mut def = Definition::default();
        let a = v(&mut def, "a", &[]);
        def.vertices
            .get_mut(&a)
            .unwrap()
            .inputs
            .push(kiln_oci::sha256(b"missing"));
        def.root = Some(a);
        let w = Arc::new(Fake::default());
        assert!(Solver::new(w, 1).solve(Arc::new(def)).await.is_err());
    }
}
