//! Command-line syntax: docker's flags and names where kiln does the same job.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "A daemonless container image builder",
    max_term_width = 100
)]
pub struct Cli {
    /// Store root (images, layers, cache, containers)
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// OCI runtime binary (default: runc from PATH)
    #[arg(long, global = true, env = "KILN_RUNTIME", value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// Verbose logs on stderr (also KILN_LOG=debug)
    #[arg(long, global = true)]
    pub debug: bool,
    /// Registry to reach over plain HTTP (loopback registries always are); repeatable
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<BuildArgs>),
    /// Run a command in a new container
    Run(Box<RunArgs>),
    #[command(flatten)]
    Life(LifeCommand),
    /// List images
    Images(ImagesArgs),
    /// Give an image another name
    Tag { source: String, target: String },
    /// Remove images
    Rmi {
        /// Remove even if containers use it
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the history of an image
    History {
        /// Do not truncate output
        #[arg(long)]
        no_trunc: bool,
        image: String,
    },
    /// Show low-level information on images or containers (JSON)
    Inspect {
        /// Go-template-style format: {{.State.ExitCode}}, {{json .Config}}
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Load images from a docker or OCI archive (plain or gzipped)
    Load {
        /// Read from this file instead of stdin
        #[arg(short, long)]
        input: Option<PathBuf>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save images to an archive
    Save {
        /// Write to this file instead of stdout
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ArchiveFormat::Docker)]
        format: ArchiveFormat,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create an image from a root filesystem tarball
    Import {
        /// The tarball (`-` for stdin)
        file: PathBuf,
        /// NAME[:TAG]
        reference: String,
    },
    /// List containers
    Ps {
        /// Show all containers (default shows just running)
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        no_trunc: bool,
        /// Go-template-style format ({{.ID}} {{.Names}}, {{json .}}, table ...)
        #[arg(long)]
        format: Option<String>,
        /// id=, name=, status=, exited=, ancestor=
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
    },
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Stop running containers (SIGTERM, then SIGKILL)
    Stop {
        /// Seconds to wait before killing
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill running containers
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Kill a running container first
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container
    Exec {
        #[arg(short, long)]
        interactive: bool,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long = "env", value_name = "K=V")]
        env: Vec<String>,
        #[arg(short, long)]
        workdir: Option<String>,
        #[arg(short, long)]
        user: Option<String>,
        container: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Pull an image from a registry
    Pull {
        /// os/arch[/variant] (default: this machine's)
        #[arg(long)]
        platform: Option<String>,
        #[arg(short, long)]
        quiet: bool,
        reference: String,
    },
    /// Push an image to a registry
    Push {
        #[arg(short, long)]
        quiet: bool,
        reference: String,
    },
    /// Log in to a registry (credentials go to docker's config.json)
    Login {
        #[arg(short, long)]
        username: Option<String>,
        /// Password (prefer --password-stdin)
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin
        #[arg(long)]
        password_stdin: bool,
        /// Registry host (default: docker.io)
        registry: Option<String>,
    },
    /// Log out from a registry
    Logout { registry: Option<String> },
    /// Show the kiln version and the runtime it drives
    Version {
        /// Go-template-style format, or `json`
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Display system-wide information
    Info {
        /// Go-template-style format, or `json`
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Frontend internals: the syntax tree and the build graph
    #[command(subcommand)]
    Debug(DebugCommand),
    /// The store's disk: usage and pruning
    #[command(subcommand)]
    System(SystemCommand),
    /// Build cache
    #[command(subcommand)]
    Builder(BuilderCommand),
    /// Images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Named volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// User networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// List a container's published ports, or the host address of one
    Port {
        container: String,
        /// PORT[/PROTO]
        port: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network
    Create {
        /// Subnet in CIDR form (a free one of 172.18-31.0.0/16 by default)
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (the subnet's first address by default)
        #[arg(long)]
        gateway: Option<String>,
        /// No outbound connectivity
        #[arg(long)]
        internal: bool,
        /// Driver (only bridge)
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Show networks (JSON)
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while containers are attached)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network
    Connect {
        /// Another name of the container on the network
        #[arg(long)]
        alias: Vec<String>,
        /// IPv4 address (on networks created with --subnet)
        #[arg(long)]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
    /// Remove networks no running container uses
    Prune {
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show the store's disk usage
    Df {
        #[arg(short, long)]
        verbose: bool,
    },
    /// Remove stopped containers, unused images and build cache
    Prune {
        /// Every image without a container, and all build cache
        #[arg(short, long)]
        all: bool,
        /// Also volumes no container uses
        #[arg(long)]
        volumes: bool,
        /// Do not prompt
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune {
        /// All build cache, not only dangling
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        force: bool,
        /// Keep this much build cache (least recently used goes first)
        #[arg(long = "keep-storage", value_name = "SIZE")]
        keep_storage: Option<String>,
        /// until=DURATION: only cache unused for that long
        #[arg(long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Remove unused images
    Prune {
        /// Every image without a container, not only dangling ones
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove all stopped containers
    Prune {
        #[arg(short, long)]
        force: bool,
    },
    #[command(flatten)]
    Life(LifeCommand),
}

/// The container lifecycle commands, as `kiln VERB` and `kiln container VERB`.
#[derive(Subcommand, Debug)]
pub enum LifeCommand {
    /// Create a new container (as run does, without starting it)
    Create(Box<RunArgs>),
    /// Start created or stopped containers
    Start(StartArgs),
    /// Restart containers
    Restart(RestartArgs),
    /// Block until containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Attach to a running container's output (and its stdin if it was created with -i)
    Attach(AttachArgs),
    /// Copy files between a container and the host
    Cp(CpArgs),
    /// Show files a container added (A), changed (C) or deleted (D)
    Diff(NameArgs),
    /// Write a container's filesystem as a tar archive
    Export(ExportArgs),
    /// Show the processes of a container
    Top(TopArgs),
    /// Show containers' resource usage
    Stats(StatsArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Freeze every process of containers
    Pause(NamesArgs),
    /// Thaw paused containers
    Unpause(NamesArgs),
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the output and wait for the end (the exit status is the container's)
    #[arg(short, long)]
    pub attach: bool,
    /// Attach stdin
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Seconds to wait before killing
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long)]
    pub no_stdin: bool,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a host path (`-`: a tar stream on stdin)
    pub src: String,
    /// CONTAINER:DEST_PATH or a host path (`-`: a tar stream on stdout)
    pub dst: String,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// ps options (default: -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Go-template-style format ({{.Name}} {{.CPUPerc}}, table ...)
    #[arg(long)]
    pub format: Option<String>,
    #[arg(value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub old: String,
    pub new: String,
}

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume
    Create { name: String },
    /// List volumes
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes (JSON)
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses
    Prune {
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Docker,
    Oci,
}

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Print the syntax tree in BuildKit's dump form
    Ast {
        /// Dockerfile path (`-` for stdin)
        #[arg(short, long, default_value = "Dockerfile")]
        file: PathBuf,
    },
    /// Print the lowered build graph
    Graph {
        #[arg(short, long, default_value = "Dockerfile")]
        file: PathBuf,
        #[arg(long)]
        target: Option<String>,
        #[arg(long = "build-arg", value_name = "K=V")]
        build_args: Vec<String>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Json)]
        format: GraphFormat,
    },
    /// Start a shell in the state a failed RUN left (the newest, or ID)
    Shell {
        id: Option<String>,
        /// A secret for the step's secret mounts, as for build
        #[arg(long = "secret", value_name = "id=ID,src=FILE")]
        secrets: Vec<String>,
        /// Run this instead of /bin/sh
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List the states kept of failed RUN steps
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove kept states of failed RUN steps
    Rm {
        #[arg(short, long)]
        all: bool,
        ids: Vec<String>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail (the state stays kept for `kiln debug shell`)
    #[default]
    Error,
    /// Start a shell in the failed step's state, then fail
    Shell,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Quiet,
    Rawjson,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Dockerfile (default: CONTEXT/Dockerfile; `-` reads stdin)
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Build-time variable; `--build-arg K` takes K from the environment
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for these stages
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Additional named context (NAME=PATH|docker-image://REF|oci-layout://PATH[:TAG|@DIGEST]|URL)
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Network of RUN steps without a RUN --network of their own: default (a namespace of
    /// their own with outbound access), none or host
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Extra /etc/hosts entry of every RUN step: NAME:IP (IP may be host-gateway)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Build cache budget kept after the build (default: the store's config, else 10% of
    /// the disk, at most 20GB)
    #[arg(long = "gc-keep-storage", value_name = "SIZE")]
    pub gc_keep_storage: Option<String>,
    /// What a failed RUN does: fail, or first start a shell in its state
    #[arg(long = "on-error", value_enum, default_value_t = OnError::Error)]
    pub on_error: OnError,
    /// Always look up base image tags again
    #[arg(long)]
    pub pull: bool,
    /// auto, tty, plain, quiet or rawjson
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// type=image|oci|docker|local|tar[,dest=PATH]
    #[arg(short, long, value_name = "SPEC")]
    pub output: Vec<String>,
    /// Metadata label for the image; repeatable
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (JSON) to this file
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Target platform (only the host's for now)
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID
    #[arg(short, long)]
    pub quiet: bool,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR | type=inline
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a build cache (tried in order): type=registry,ref=REF | type=local,src=DIR | REF
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Say why the first step that ran missed the cache (which input differed)
    #[arg(long)]
    pub explain_cache: bool,
    /// Run the build checks (BuildKit's lint rules) without building; exit 1 when one fires
    /// under `# check=error=true`
    #[arg(long)]
    pub check: bool,
    /// Push the image to its registry after the build (the -t names)
    #[arg(long)]
    pub push: bool,
    /// Vertices to run at once (default: number of CPUs)
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Wall-clock image and file times instead of the build's epoch (SOURCE_DATE_EPOCH, else
    /// the context's clean git HEAD commit time, else 0)
    #[arg(long)]
    pub no_reproducible: bool,
    /// Secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR]
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,
    /// Build context: a directory, `-` (a tar or a Dockerfile on stdin), an http(s) URL of a
    /// tarball or a Dockerfile, or a git repository (`URL#REF:SUBDIR`)
    pub context: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Run a tiny init (tini) as PID 1 that forwards signals and reaps zombies
    #[arg(long)]
    pub init: bool,
    /// Restart policy: no, on-failure[:MAX], always, unless-stopped
    #[arg(long, default_value = "no", value_name = "POLICY")]
    pub restart: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable; `-e K` takes K from the environment
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount or named volume: SRC:DST[:ro]
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    #[arg(long = "tmpfs", value_name = "PATH")]
    pub tmpfs: Vec<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// bridge (a namespace of its own, the default), none, host, a user network's name, or
    /// container:NAME
    #[arg(long, alias = "net", default_value = "bridge")]
    pub network: String,
    /// Another name of the container on its user network
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address on its user network (one created with --subnet)
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a port: [IP:][HOST:]CONTAINER[/tcp|udp]
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CONTAINER")]
    pub publish: Vec<String>,
    /// Publish every EXPOSEd port on a free host port
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Extra /etc/hosts entry: NAME:IP (IP may be host-gateway)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// DNS server (replaces the host's)
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// seccomp=PROFILE.json|unconfined, no-new-privileges[=true|false]
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Every capability, no seccomp filter, no masked paths, the host's devices
    #[arg(long)]
    pub privileged: bool,
    /// Memory limit (e.g. 64m)
    #[arg(short, long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub cpus: Option<f64>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Keep stdin open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Pass the signals kiln receives on to the container
    #[arg(long = "sig-proxy", value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Command to run to check health (replaces the image's HEALTHCHECK)
    #[arg(long = "health-cmd", value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval", value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout", value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", value_name = "N")]
    pub health_retries: Option<i64>,
    /// Start period for the container to initialize before failures count (ms|s|m|h)
    #[arg(long = "health-start-period", value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h)
    #[arg(long = "health-start-interval", value_name = "DURATION")]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// `json` (JSON lines) or a Go-template-style format ({{.Repository}}, table ...)
    #[arg(long)]
    pub format: Option<String>,
    /// Show all images (kiln keeps no intermediate ones: the same as without)
    #[arg(short, long)]
    pub all: bool,
    /// reference=PATTERN, dangling=true|false
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Only images named REPO[:TAG]
    #[arg(value_name = "REPO[:TAG]")]
    pub reference: Option<String>,
}

/// `kiln logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since a timestamp (2026-12-03T10:00:00Z, 1764756000) or a relative time (42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or a relative time
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details (accepted, as docker's; kiln logs no attributes)
    #[arg(long)]
    pub details: bool,
    pub container: String,
}
