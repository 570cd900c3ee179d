//! The results of vertices: layer chains and local directory selections. A leaf module: the
//! worker, the ops and the remote cache all speak of refs, and it speaks of none of them.

use kiln_cache::LayerInfo;
use kiln_graph::LocalSource;
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// One layer of a chain and the vertex that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLayer {
    pub layer: LayerInfo,
    /// Digest of the vertex whose step produced the layer (the image source for base layers).
    pub step: Digest,
}

/// A filesystem as a stack of layers, bottom first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub layers: Vec<ChainLayer>,
}

impl Chain {
    /// The layers without their steps.
    pub fn infos(&self) -> Vec<LayerInfo> {
        self.layers.iter().map(|l| l.layer.clone()).collect()
    }
}

/// The result of a vertex.
#[derive(Debug, Clone)]
pub enum Ref {
    /// A filesystem.
    Layers(Arc<Chain>),
    /// A client directory, reduced to what the source selects (read at copy time), with what
    /// the walk of its checksum selected when this build made one.
    Local {
        root: PathBuf,
        source: LocalSource,
        listing: Option<Arc<crate::context::walk::Selected>>,
    },
}

impl Ref {
    /// The chain of a filesystem result (an empty chain for other kinds).
    pub fn chain(&self) -> Arc<Chain> {
        match self {
            Ref::Layers(c) => c.clone(),
            Ref::Local { .. } => Arc::new(Chain::default()),
        }
    }
}
