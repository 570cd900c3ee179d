//! Test support: a kiln binary with a private store, the offline busybox base image, and
//! build contexts made in code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `kiln` binary cargo built next to this test binary.
pub fn kiln_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/kiln
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("kiln");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace --bins` first (the README's test command does)",
        bin.display()
    );
    bin
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf()
}

/// True when the real sandbox can run here (root, runc, busybox). Without them a test fails
/// under `KILN_REQUIRE_ALL=1` (CI) and is skipped with a message otherwise.
pub fn sandbox_available() -> bool {
    let root = rustix_is_root();
    let runc = Command::new("runc").arg("--version").output().is_ok();
    let busybox = Path::new("/bin/busybox").exists();
    if root && runc && busybox {
        return true;
    }
    let why = format!("needs root ({root}), runc ({runc}) and /bin/busybox ({busybox})");
    if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
        panic!("{why}: install runc and busybox-static and run as root");
    }
    eprintln!("skipping: {why}");
    false
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A kiln with its own store under a temp dir.
pub struct Kiln {
    pub root: tempfile::TempDir,
    pub bin: PathBuf,
}

impl Kiln {
    /// A fresh store with `busybox:latest` imported from Debian's busybox-static.
    pub fn with_busybox() -> Kiln {
        let k = Kiln::empty();
        let out = Command::new("bash")
            .arg(repo_root().join("examples/busybox-base.sh"))
            .arg(&k.bin)
            .env("KILN_ROOT", k.root.path())
            .output()
            .expect("run busybox-base.sh");
        assert!(
            out.status.success(),
            "busybox-base.sh failed: {}",
            text(&out.stderr)
        );
        k
    }

    /// A fresh, empty store.
    pub fn empty() -> Kiln {
        Kiln {
            root: tempfile::Builder::new()
                .prefix("kiln-e2e-")
                .tempdir_in(scratch())
                .expect("tempdir"),
            bin: kiln_bin(),
        }
    }

    /// A `kiln` command on this store.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KILN_ROOT", self.root.path())
            .env_remove("KILN_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs kiln with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("spawn kiln")
    }

    /// Runs kiln with `args`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs kiln with `args`, asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} should have failed:\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }
}

/// Where test stores and contexts live: on the same disk as the repo (not a tmpfs or overlay,
/// which overlayfs upper dirs cannot use).
fn scratch() -> PathBuf {
    let dir = repo_root().join("target").join("e2e-scratch");
    fs_err::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Lossy text of a command's output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A build context made in code.
pub struct Context {
    pub dir: tempfile::TempDir,
}

impl Context {
    pub fn new() -> Context {
        Context {
            dir: tempfile::Builder::new()
                .prefix("ctx-")
                .tempdir_in(scratch())
                .expect("tempdir"),
        }
    }

    /// Adds (or replaces) a file, creating its parents.
    pub fn file(self, rel: &str, content: &str) -> Context {
        self.write(rel, content);
        self
    }

    /// Writes a file in place.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent).expect("mkdir");
        }
        fs_err::write(&p, content).expect("write");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 path")
    }
}

/// A real `docker-registry` (Debian's CNCF distribution) on 127.0.0.1 with temp storage,
/// killed on drop.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one, or returns None (skip) when the package is missing outside CI.
    pub fn start() -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
                panic!("docker-registry missing: apt-get install docker-registry");
            }
            eprintln!("skipping: docker-registry missing");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        let cfg = dir.path().join("config.yml");
        fs_err::write(&cfg, config).expect("config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry");
        let reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(reg)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Events of a `--progress=rawjson` build.
pub fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Names of the steps that ran (completed, not cached) in a rawjson build; internal vertices
/// (context loading, inline documents, the export) left out.
pub fn ran(stderr: &str) -> Vec<String> {
    let evs = events(stderr);
    let mut names = std::collections::HashMap::new();
    for e in &evs {
        if e["event"] == "started" {
            names.insert(
                e["vertex"].to_string(),
                e["name"].as_str().unwrap_or("").to_string(),
            );
        }
    }
    evs.iter()
        .filter(|e| e["event"] == "completed")
        .filter_map(|e| names.get(&e["vertex"].to_string()).cloned())
        .filter(|n| {
            !n.is_empty()
                && !n.starts_with("[internal]")
                && !n.starts_with("preparing")
                && n != "exporting to image"
        })
        .collect()
}

/// Names of the steps that came from the cache.
pub fn cached(stderr: &str) -> Vec<String> {
    events(stderr)
        .iter()
        .filter(|e| e["event"] == "cached")
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `kiln build --progress=rawjson EXTRA… CONTEXT`, asserting success; returns stderr.
pub fn build(k: &Kiln, ctx: &Context, extra: &[&str]) -> String {
    let mut args = vec!["build", "--progress=rawjson"];
    args.extend_from_slice(extra);
    args.push(ctx.arg());
    let out = k.run(&args);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    text(&out.stderr)
}

/// A kiln with busybox whose containers are force-removed, and whose leftover mounts are
/// detached, when it is dropped: a failing assertion must not leave processes or mounts behind.
/// Test modules add their own helpers in `impl Runner` blocks of their own.
pub struct Runner {
    pub k: Kiln,
}

impl Runner {
    /// `None` where runc and overlayfs cannot run (the test then passes without running).
    pub fn new() -> Option<Runner> {
        sandbox_available().then(|| Runner {
            k: Kiln::with_busybox(),
        })
    }

    /// The IDs `ps -aq` lists.
    pub fn ids(&self) -> Vec<String> {
        text(&self.k.run(&["ps", "-aq"]).stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The STATUS column of container `name` in `ps -a`.
    pub fn status(&self, name: &str) -> String {
        let filter = format!("name={name}");
        self.k
            .ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Status}}"])
            .trim()
            .to_owned()
    }

    /// `inspect -f FORMAT NAME`, trimmed.
    pub fn inspect_f(&self, name: &str, format: &str) -> String {
        self.k
            .ok(&["inspect", "-f", format, name])
            .trim()
            .to_owned()
    }

    /// Waits (at most 30 s, then fails showing every container's state) until `check` holds.
    pub fn until(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            if Instant::now() >= deadline {
                let mut states = vec![
                    "inspect".to_owned(),
                    "-f".to_owned(),
                    "{{.Name}} {{.RestartCount}} {{json .State}}".to_owned(),
                ];
                states.extend(self.ids());
                let states: Vec<&str> = states.iter().map(String::as_str).collect();
                panic!(
                    "never: {what}\n{}\n{}",
                    text(&self.k.run(&["ps", "-a"]).stdout),
                    text(&self.k.run(&states).stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `kiln logs NAME` (both streams) contains `needle`; the log.
    pub fn wait_log(&self, name: &str, needle: &str) -> String {
        let mut log = String::new();
        self.until(&format!("{needle:?} in the log of {name}"), || {
            let out = self.k.run(&["logs", name]);
            log = text(&out.stdout) + &text(&out.stderr);
            log.contains(needle)
        });
        log
    }

    /// Mount points below the store root.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.k.root.path().to_string_lossy().into_owned();
        fs_err::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.starts_with(&prefix))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.k.run(&["rm", "-f", &id]);
        }
        for m in self.mounts() {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
    }
}

/// Asserts that skopeo copies the image `target` from a plain-HTTP registry into an OCI
/// layout (it verifies every digest and diffID on the way).
pub fn skopeo_copies(target: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{target}"))
        .arg(format!("oci:{}:x", dir.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `skopeo inspect --raw` of a manifest pushed to a plain-HTTP registry.
pub fn skopeo_raw(reference: &str) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
