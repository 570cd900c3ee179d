//! kiln's build graph: ops, vertices and their digests, and the image config a build
//! produces. Pure data, no I/O: the frontend emits it, the solver executes it.
//!
//! The frontend lowers a Dockerfile into a [`Definition`]; the solver executes it. A vertex's
//! digest is the sha256 of the canonical JSON encoding of its op and its inputs' digests, so it is
//! stable across runs and machines (invariant: nothing machine-specific enters an op).

mod image;
mod op;
mod resolve;

pub use image::ImageSpec;
pub use kiln_oci::{Healthcheck, History, ImageConfig, RootFs, RunConfig};
pub use op::{
    CacheSharing, ChownOpt, CopyAction, ExecOp, FileAction, FileOp, LocalSource, Mount, MountKind,
    NetworkMode, Op, SecurityMode, SourceOp,
};
pub use resolve::{ImageResolver, NamedContext, ResolvedImage, context_key};

use kiln_oci::{Digest, sha256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a vertex came from, for people: never part of its digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexMeta {
    /// BuildKit-style name shown in progress: `[build 2/3] RUN make`.
    pub description: String,
    /// Name of the stage (or its index as text) the vertex belongs to.
    pub stage: Option<String>,
    /// 1-based Dockerfile line of the instruction that made the vertex.
    pub line: Option<u32>,
    /// `--no-cache` / `--no-cache-filter`: run even when a cache record exists.
    pub ignore_cache: bool,
}

/// One node of the graph: an op over the outputs of its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    pub op: Op,
    /// Digests of the input vertices, in the order the op refers to them.
    pub inputs: Vec<Digest>,
    #[serde(default)]
    pub meta: VertexMeta,
}

#[derive(Serialize)]
struct DigestInput<'a> {
    op: &'a Op,
    inputs: &'a [Digest],
}

impl Vertex {
    /// The vertex digest: sha256 of the canonical encoding of `{op, inputs}` (metadata excluded).
    ///
    /// The encoding is JSON written straight from the types: struct fields in declaration
    /// order, maps only as `BTreeMap` (sorted), so the bytes are a pure function of the value,
    /// the same on every machine. (Going through `serde_json::Value` to sort keys costs twice
    /// as much and changes nothing for these types.)
    pub fn digest(&self) -> Digest {
        // The proxy env is not part of what a step is (BuildKit clears `ProxyEnv` in its
        // exec op's cache map the same way).
        let without_proxy;
        let op = match &self.op {
            Op::Exec(e) if !e.proxy_env.is_empty() => {
                let mut e = e.clone();
                e.proxy_env.clear();
                without_proxy = Op::Exec(e);
                &without_proxy
            }
            op => op,
        };
        let input = DigestInput {
            op,
            inputs: &self.inputs,
        };
        // These types hold no map with non-string keys, so encoding cannot fail.
        sha256(&serde_json::to_vec(&input).unwrap_or_default())
    }
}

/// A lowered build: the vertices reachable from the target and the image it produces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// Every vertex by its digest (invariant: each key equals `vertex.digest()` and every input is
    /// a key of this map, so the map is closed and acyclic).
    pub vertices: BTreeMap<Digest, Vertex>,
    /// The vertex whose filesystem is the result; `None` for an empty (scratch) result.
    pub root: Option<Digest>,
    /// Image metadata of the target stage (config, history, platform).
    pub image: ImageSpec,
}

impl Definition {
    /// Adds a vertex (deduplicated by digest) and returns its digest.
    pub fn add(&mut self, vertex: Vertex) -> Digest {
        let digest = vertex.digest();
        self.vertices.entry(digest.clone()).or_insert(vertex);
        digest
    }

    /// Vertices in an order where every vertex comes after its inputs (inputs first, then by
    /// digest for stability). Only vertices reachable from `root` are listed.
    pub fn topo_order(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        if let Some(root) = &self.root {
            // Iterative post-order DFS (no recursion: graphs can be deep).
            let mut stack: Vec<(Digest, bool)> = vec![(root.clone(), false)];
            while let Some((d, expanded)) = stack.pop() {
                if expanded {
                    out.push(d);
                    continue;
                }
                if !seen.insert(d.clone()) {
                    continue;
                }
                stack.push((d.clone(), true));
                if let Some(v) = self.vertices.get(&d) {
                    for input in v.inputs.iter().rev() {
                        if !seen.contains(input) {
                            stack.push((input.clone(), false));
                        }
                    }
                }
            }
        }
        out
    }

    /// Checks the closure invariant: every input refers to a vertex of the map and every key is
    /// its vertex's digest.
    pub fn validate(&self) -> Result<(), String> {
        for (d, v) in &self.vertices {
            if &v.digest() != d {
                return Err(format!("vertex {d} is stored under a wrong digest"));
            }
            for i in &v.inputs {
                if !self.vertices.contains_key(i) {
                    return Err(format!("vertex {d} refers to missing input {i}"));
                }
            }
        }
        if let Some(r) = &self.root
            && !self.vertices.contains_key(r)
        {
            return Err(format!("root {r} is not a vertex"));
        }
        Ok(())
    }
}
