//! Test fixtures: a busybox root filesystem built in code, and helpers to run plans in it.
#![allow(dead_code)]

use kiln_executor::{ExitStatus, Output, OutputChunk, ProcessPlan, RunRequest, Runtime, Stream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fails loudly when the machine cannot run real containers.
pub fn require_root() -> Runtime {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (real runc, cgroups, overlayfs)"
    );
    Runtime::detect(None).expect("runc must be installed: apt-get install runc")
}

/// Builds a root filesystem from the host's static busybox: applet symlinks in /bin, users
/// root, nobody and app (uid 1000), /tmp mode 1777.
pub fn busybox_rootfs(root: &Path) {
    for dir in [
        "bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev", "var",
    ] {
        fs_err::create_dir_all(root.join(dir)).unwrap();
    }
    fs_err::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    fs_err::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox-static must be installed at /bin/busybox");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    fs_err::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
         app:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    rustix::fs::chown(
        root.join("home/app"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(1000)),
    )
    .unwrap();
}

/// A temporary sandbox world: a rootfs and a state dir. Dropping it lazily unmounts whatever a
/// failed test left mounted below it, so the temporary directory can go.
pub struct World {
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
}

impl Drop for World {
    fn drop(&mut self) {
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for target in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if target.starts_with(&prefix) {
                let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl World {
    pub fn new() -> World {
        let runtime = require_root();
        let dir = tempfile::Builder::new()
            .prefix("kiln-exec-")
            .tempdir()
            .unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        World { dir, runtime }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A fresh container id, unique across the test binary and concurrent test runs.
    pub fn new_id(&self) -> String {
        format!(
            "t{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        )
    }

    pub fn request(&self, plan: ProcessPlan) -> RunRequest {
        RunRequest {
            id: self.new_id(),
            rootfs: self.rootfs(),
            plan,
            state_dir: self.state_dir(),
            log_path: None,
        }
    }

    /// Runs a plan, collecting stdout and stderr.
    pub async fn run(&self, plan: ProcessPlan) -> kiln_executor::Result<Captured> {
        self.run_request(self.request(plan)).await
    }

    pub async fn run_request(&self, req: RunRequest) -> kiln_executor::Result<Captured> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OutputChunk>();
        let status = self.runtime.run(req, Output::Channel(tx)).await?;
        let mut cap = Captured {
            status,
            stdout: String::new(),
            stderr: String::new(),
            chunks: 0,
        };
        while let Ok(chunk) = rx.try_recv() {
            cap.chunks += 1;
            let text = String::from_utf8_lossy(&chunk.data);
            match chunk.stream {
                Stream::Stdout => cap.stdout.push_str(&text),
                Stream::Stderr => cap.stderr.push_str(&text),
            }
        }
        Ok(cap)
    }

    /// `runc list` under this world's state dir.
    pub fn runtime_list(&self) -> String {
        let out = std::process::Command::new(self.runtime.path())
            .arg("--root")
            .arg(kiln_executor::runtime::runtime_root(&self.state_dir()))
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub chunks: usize,
}

pub fn sh(script: &str) -> ProcessPlan {
    ProcessPlan::new(["/bin/sh", "-c", script])
}

/// Pids of host processes whose command line contains `needle`.
pub fn host_pids_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs_err::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs_err::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}
