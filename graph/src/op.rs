use kiln_oci::{Digest, Platform};
use serde::{Deserialize, Serialize};

/// What a vertex does. Every field takes part in the vertex digest, so nothing machine-specific
/// (absolute host paths, inode numbers, times, host names) may appear here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Op {
    /// A filesystem that comes from outside the graph.
    Source(SourceOp),
    /// A process run over a snapshot of its rootfs input (`RUN`).
    Exec(ExecOp),
    /// File actions over a base input (`COPY`, `ADD`, heredoc files, `WORKDIR` creation).
    File(FileOp),
    /// Layers of several inputs stacked without copying (`COPY --link`, later).
    Merge,
}

/// Where a source filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SourceOp {
    /// An image by its normalized reference. `digest` is the resolved manifest digest when known
    /// (it is what makes a `FROM` cache key machine-independent yet exact).
    Image {
        reference: String,
        digest: Option<Digest>,
        platform: Platform,
    },
    /// A directory the client provides (the build context, or a named context).
    Local(LocalSource),
    /// A file downloaded over http(s) (`ADD URL`); `checksum` is verified when given.
    Http {
        url: String,
        checksum: Option<String>,
        filename: String,
    },
}

/// A client-side directory, reduced to what the build reads from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSource {
    /// `context` for the main build context.
    pub name: String,
    /// Paths (relative, possibly with wildcards) the build references: only these are walked.
    /// Empty means the whole directory.
    pub include: Vec<String>,
    /// `.dockerignore` patterns, in file order (moby semantics, `!` exceptions included).
    pub exclude: Vec<String>,
}

/// Network of a `RUN` step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// BuildKit's default: a sandboxed network with outbound access (kiln: a namespace of its
    /// own with pasta, the host's when pasta is missing), or what `kiln build --network` says.
    #[default]
    Default,
    /// `--network=none`: a namespace with only `lo`.
    None,
    /// `--network=host`.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

/// A process run over the rootfs input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// Index into the vertex inputs of the rootfs; `None` runs over an empty filesystem.
    pub rootfs: Option<usize>,
    pub args: Vec<String>,
    /// `K=V`, in order: image ENV, then build args in scope.
    pub env: Vec<String>,
    /// Absolute working directory (created when missing).
    pub cwd: String,
    /// `USER` as written after expansion (`name`, `uid`, `name:group`, ...); empty = root.
    pub user: String,
    pub network: NetworkMode,
    pub security: SecurityMode,
    /// `RUN --mount=...` mounts, in the order given.
    pub mounts: Vec<Mount>,
    /// The proxy build args (`HTTP_PROXY=...`, each in both cases, BuildKit's `ProxyEnv`):
    /// given to the process after `env` but left out of the vertex digest, so a new proxy
    /// neither invalidates the cache nor reaches the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_env: Vec<String>,
}

/// A mount of a `RUN` step other than its rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the sandbox.
    pub target: String,
    pub kind: MountKind,
}

/// How a `RUN --mount` sharing mode lets steps use one cache mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// The kinds of `RUN --mount`. Secrets and SSH agents are named by id only: their content never
/// enters the graph, a layer or a cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MountKind {
    Bind {
        /// Index into the vertex inputs; `None` = the build context.
        input: Option<usize>,
        source: String,
        readonly: bool,
    },
    Cache {
        id: String,
        sharing: CacheSharing,
        /// Seed content: index into the vertex inputs and path inside it.
        from: Option<usize>,
        source: String,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Expose as an environment variable instead of a file.
        env: Option<String>,
    },
    Ssh {
        id: String,
        required: bool,
    },
}

/// File actions applied in order over a base filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// Index into the vertex inputs of the filesystem the actions change; `None` = empty.
    pub base: Option<usize>,
    pub actions: Vec<FileAction>,
}

/// `--chown` as written (names are resolved against the destination's /etc/passwd at run time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownOpt {
    pub user: String,
    pub group: Option<String>,
}

/// One file action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum FileAction {
    Copy(CopyAction),
    /// Write a file (heredoc `COPY <<EOF`).
    Mkfile {
        path: String,
        data: String,
        mode: u32,
        chown: Option<ChownOpt>,
    },
    /// Create a directory and its parents (`WORKDIR`).
    Mkdir {
        path: String,
        mode: u32,
        chown: Option<ChownOpt>,
    },
}

/// Docker's COPY/ADD semantics for one instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAction {
    /// Index into the vertex inputs of the source filesystem.
    pub src_input: usize,
    /// Source paths relative to the source root; may hold wildcards.
    pub src: Vec<String>,
    /// Absolute destination; a trailing `/` means "into this directory".
    pub dest: String,
    pub chown: Option<ChownOpt>,
    /// `--chmod` as written (octal).
    pub chmod: Option<String>,
    /// `ADD` of a local tar archive extracts it.
    pub extract_archive: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--parents`: keep the source's parent directories.
    pub parents: bool,
    /// `--link`: the result is an independent layer.
    pub link: bool,
}
