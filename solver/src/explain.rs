//! `--explain-cache`: why a step missed. After every build, each step's cache-key ingredients
//! are kept per step slot (stage and position, e.g. `builder#3`) in the store's `explain`
//! table; on a miss, the first step that ran is compared with its slot's last record and the
//! first ingredient that differs is named: the instruction (its Dockerfile line, a build arg,
//! an environment value), the base image digest, or the files of the context it copies.
//!
//! invariant: records hold digests, commands and env as they appear in the graph; never file
//! contents or secret values (secrets are referred to by id only in the graph).

use crate::context::ContextHasher;
use kiln_cache::Store;
use kiln_graph::{Definition, Op, SourceOp, Vertex};
use kiln_oci::{Digest, canonical_json, sha256};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

const TABLE: &str = "explain";

/// One input of a step, as it went into the step's cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// The input vertex's digest (its definition).
    pub digest: Digest,
    /// The input's cache key (its definition plus content).
    pub key: Digest,
    /// What the input is, for people: `image docker.io/library/busybox@sha256:…`,
    /// `context [src/]`, or the step's description.
    pub what: String,
}

/// What one step's cache key was made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub key: Digest,
    pub description: String,
    pub line: Option<u32>,
    /// Digest of the op alone (without its inputs).
    pub op_digest: Digest,
    /// The op itself, to name what changed in it.
    pub op: serde_json::Value,
    pub inputs: Vec<InputRecord>,
}

/// `stage#position` from a description like `[builder 3/4] RUN make` (`#3` without a stage).
pub fn slot(v: &Vertex) -> Option<String> {
    let inner = v
        .meta
        .description
        .strip_prefix('[')?
        .split_once(']')?
        .0
        .trim();
    let (stage, pos) = match inner.rsplit_once(' ') {
        Some((stage, pos)) => (stage.trim(), pos),
        None => ("", inner),
    };
    let n = pos.split_once('/')?.0.trim();
    Some(format!("{stage}#{n}"))
}

fn what(v: &Vertex) -> String {
    match &v.op {
        Op::Source(SourceOp::Image {
            reference, digest, ..
        }) => match digest {
            Some(d) => format!("base image {reference} ({d})"),
            None => format!("base image {reference}"),
        },
        Op::Source(SourceOp::Local(l)) => {
            format!("build context files {}", l.include.join(" "))
        }
        Op::Source(SourceOp::Http { url, .. }) => format!("download {url}"),
        _ => v.meta.description.clone(),
    }
}

/// The record of every exec/file step of `def`.
pub fn records(def: &Definition, keys: &BTreeMap<Digest, Digest>) -> Vec<(String, StepRecord)> {
    let mut out = Vec::new();
    for (d, v) in &def.vertices {
        if !matches!(v.op, Op::Exec(_) | Op::File(_)) {
            continue;
        }
        let (Some(slot), Some(key)) = (slot(v), keys.get(d)) else {
            continue;
        };
        let inputs = v
            .inputs
            .iter()
            .filter_map(|i| {
                Some(InputRecord {
                    digest: i.clone(),
                    key: keys.get(i)?.clone(),
                    what: def.vertices.get(i).map(what).unwrap_or_default(),
                })
            })
            .collect();
        out.push((
            slot,
            StepRecord {
                key: key.clone(),
                description: v.meta.description.clone(),
                line: v.meta.line,
                op_digest: sha256(&canonical_json(&v.op).unwrap_or_default()),
                op: serde_json::to_value(&v.op).unwrap_or_default(),
                inputs,
            },
        ));
    }
    out
}

/// Keeps this build's records (writes only those that changed: a no-op build writes nothing).
pub fn save(store: &Store, def: &Definition, keys: &BTreeMap<Digest, Digest>) {
    for (slot, rec) in records(def, keys) {
        let Ok(bytes) = serde_json::to_vec(&rec) else {
            continue;
        };
        if store.kv_get(TABLE, &slot).ok().flatten().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if let Err(e) = store.kv_put(TABLE, &slot, &bytes) {
            tracing::warn!("explain record {slot}: {e}");
        }
    }
}

/// Names the fields of two ops that differ (`args`, `env A=1 → A=2`, ...).
fn op_diff(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return vec!["the instruction changed".to_string()];
    };
    for (k, nv) in n {
        let ov = o.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if &ov == nv {
            continue;
        }
        if k == "env"
            && let (Some(oa), Some(na)) = (ov.as_array(), nv.as_array())
        {
            for e in na {
                if !oa.contains(e) {
                    out.push(format!(
                        "environment/build arg now {}",
                        e.as_str().unwrap_or("")
                    ));
                }
            }
            for e in oa {
                let name = e.as_str().unwrap_or("").split('=').next().unwrap_or("");
                if !na
                    .iter()
                    .any(|x| x.as_str().unwrap_or("").split('=').next() == Some(name))
                {
                    out.push(format!("environment/build arg {name} no longer set"));
                }
            }
            continue;
        }
        out.push(format!("{k}: {ov} → {nv}"));
    }
    if out.is_empty() {
        out.push("the instruction changed".to_string());
    }
    out
}

/// Why `missed` (the first step that ran) did not hit the cache, compared with the last record
/// of its slot.
pub fn explain(
    store: &Store,
    def: &Definition,
    keys: &BTreeMap<Digest, Digest>,
    missed: &Digest,
    hasher: &ContextHasher,
    contexts: &BTreeMap<String, PathBuf>,
    file_name: &str,
) -> String {
    let Some(v) = def.vertices.get(missed) else {
        return String::new();
    };
    let at = v
        .meta
        .line
        .map(|l| format!("{file_name}:{l}: "))
        .unwrap_or_default();
    let head = format!("{at}{} missed the cache", v.meta.description);
    let Some(slot) = slot(v) else {
        return format!("{head}: no step position to compare with");
    };
    let key = keys.get(missed);
    let current = records(def, keys)
        .into_iter()
        .find(|(_, r)| Some(&r.key) == key)
        .map(|(_, r)| r);
    let previous: Option<StepRecord> = store
        .kv_get(TABLE, &slot)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (Some(cur), Some(prev)) = (current, previous) else {
        return format!("{head}: this step was never built before on this store");
    };
    if cur.key == prev.key {
        return format!(
            "{head}: its key equals the last build's, but that result is gone from the store"
        );
    }
    if cur.op_digest != prev.op_digest {
        let mut lines = vec![format!(
            "{head}: the instruction differs from the last build's ({})",
            prev.description
        )];
        lines.extend(
            op_diff(&prev.op, &cur.op)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
        return lines.join("\n");
    }
    for (i, input) in cur.inputs.iter().enumerate() {
        let Some(old) = prev.inputs.get(i) else {
            return format!("{head}: it has more inputs than the last build's");
        };
        if input.key == old.key {
            continue;
        }
        if input.digest != old.digest {
            return format!(
                "{head}: input changed: was {}, now {}",
                old.what, input.what
            );
        }
        // Same definition, other content: for the context, name the files.
        if let Some(Op::Source(SourceOp::Local(src))) =
            def.vertices.get(&input.digest).map(|v| &v.op)
            && let Some(root) = contexts.get(&src.name)
        {
            return match hasher.changed_files(root, src) {
                Ok(files) if !files.is_empty() => {
                    let mut lines = vec![format!("{head}: files of the build context changed:")];
                    for (f, known) in files.iter().take(20) {
                        lines.push(format!(
                            "  {f} ({})",
                            if *known {
                                "content changed"
                            } else {
                                "new, or changed since it was last hashed"
                            }
                        ));
                    }
                    if files.len() > 20 {
                        lines.push(format!("  … and {} more", files.len() - 20));
                    }
                    lines.join("\n")
                }
                _ => format!(
                    "{head}: {} changed (type, mode, owner or a removed file)",
                    input.what
                ),
            };
        }
        return format!(
            "{head}: input {} has other content than in the last build",
            input.what
        );
    }
    format!("{head}: its inputs are in a different order than in the last build's")
}
