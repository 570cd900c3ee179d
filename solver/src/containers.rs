//! Containers of images for `kiln run` and the container commands: the executor's container
//! store, with each container's rootfs an overlay of the image's snapshot.

use crate::error::Result;
use crate::host::{Host, tokio_runtime};
use kiln_cache::ImageRecord;
use std::path::PathBuf;

pub use kiln_executor::cgroup::Usage;
pub use kiln_executor::network;
pub use kiln_executor::networks;
pub use kiln_executor::seccomp::Profile as SeccompProfile;
pub use kiln_executor::{
    Container, ContainerConfig, ContainerState, Containers, ExecOptions, ExitStatus, Health,
    HealthConfig, INIT_PATH, LogOptions, MountPlan, Network, Output, ProcessPlan, RestartName,
    RestartPolicy, SHIM_ARG, Seccomp, Status, shim_main,
};

impl Host {
    /// The containers of this store, with the runtime when one is found (what killed kiln
    /// processes left running was reaped when the store was opened: [`Host::reap`]).
    pub fn containers(&self) -> Result<Containers> {
        let mut c = Containers::open(self.root().join("containers"))?;
        if let Ok(rt) = self.runtime() {
            c = c.with_runtime(rt);
        }
        Ok(c)
    }

    /// [`containers`](Self::containers) for running one in the foreground: fails early when no
    /// OCI runtime is found.
    pub fn containers_to_run(&self) -> Result<Containers> {
        let runtime = self.runtime()?;
        Ok(self.containers()?.with_runtime(runtime))
    }

    /// The user networks of this store (`kiln network`).
    pub fn networks(&self) -> Result<kiln_executor::networks::Networks> {
        Ok(kiln_executor::networks::Networks::open(
            self.root().join("networks"),
        )?)
    }

    /// The directory of named volume `name` (`run -v name:/path`).
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.root().join("volumes").join(name).join("_data")
    }

    /// Mounts `c`'s rootfs (an overlay of `image`'s layers under the container's own upper
    /// directory); the mount is the container's, which unmounts it when it is removed.
    fn mount_rootfs(&self, image: &ImageRecord, c: &Container) -> Result<()> {
        let snapshot = self.store().prepare_snapshot(&image.layers)?;
        kiln_cache::mount_overlay(
            &snapshot.lowerdirs,
            Some((&c.upper_dir(), &c.work_dir())),
            &c.rootfs_dir(),
        )?
        .leak();
        Ok(())
    }

    /// `run -d`: mounts the rootfs and starts `c` under a shim that outlives this process and
    /// records its exit. On failure the container is removed.
    pub fn start_detached(&self, image: &ImageRecord, c: &Container) -> Result<()> {
        let started = self
            .mount_rootfs(image, c)
            .and_then(|()| Ok(c.start_detached().map(|_| ())?));
        if started.is_err() {
            let _ = c.remove(true);
        }
        started
    }

    /// `run` in the foreground: mounts the rootfs and runs `c` on this process's stdio.
    pub fn run_attached(&self, image: &ImageRecord, c: &Container) -> Result<ExitStatus> {
        self.mount_rootfs(image, c)?;
        Ok(tokio_runtime()?.block_on(c.run_attached(Output::Inherit))?)
    }

    /// The image container `c` was made from: by the ID it recorded (its name may have moved
    /// on since), else by that name.
    pub fn container_image(&self, c: &Container) -> Result<ImageRecord> {
        let config = c.config();
        for name in config.image_id.iter().chain([&config.image]) {
            if let Some(rec) = self.store().resolve(name)? {
                return Ok(rec);
            }
        }
        Err(crate::error::Error::MissingImage {
            reference: config.image.clone(),
            digest: config.image_id.clone().unwrap_or_default(),
        })
    }

    /// `start` of a created or stopped container: mounts its rootfs again and starts it
    /// under a shim. On failure the rootfs is unmounted and the container kept.
    pub fn start(&self, c: &Container) -> Result<()> {
        let image = self.container_image(c)?;
        let started = self
            .mount_rootfs(&image, c)
            .and_then(|()| Ok(c.start_detached().map(|_| ())?));
        if started.is_err() {
            let _ = c.unmount_rootfs();
        }
        started
    }

    /// `start -a` of a created container without a restart policy: runs it in the foreground
    /// as `run` does.
    pub fn start_attached(&self, c: &Container) -> Result<ExitStatus> {
        let image = self.container_image(c)?;
        self.run_attached(&image, c)
    }

    /// Runs `f` with container `c`'s filesystem at a host path (`cp`, `export`): its mounted
    /// rootfs while it runs, else its overlay mounted for the call. The path is the root of
    /// an untrusted tree: resolve paths in it with `kiln_sys::Root`.
    pub fn with_rootfs<T>(
        &self,
        c: &Container,
        f: impl FnOnce(&std::path::Path) -> Result<T>,
    ) -> Result<T> {
        if c.state()?.is_up() {
            return f(&c.rootfs_dir());
        }
        let image = self.container_image(c)?;
        let snapshot = self.store().prepare_snapshot(&image.layers)?;
        let guard = kiln_cache::mount_overlay(
            &snapshot.lowerdirs,
            Some((&c.upper_dir(), &c.work_dir())),
            &c.rootfs_dir(),
        )?;
        let out = f(&c.rootfs_dir());
        drop(guard);
        out
    }

    /// The image layers under container `c`'s writable layer, top first (`diff`).
    pub fn container_lowerdirs(&self, c: &Container) -> Result<Vec<PathBuf>> {
        let image = self.container_image(c)?;
        Ok(self.store().prepare_snapshot(&image.layers)?.lowerdirs)
    }

    /// `exec`: runs `command` in running container `c`.
    pub fn exec(
        &self,
        c: &Container,
        command: &[String],
        opts: &ExecOptions,
    ) -> Result<ExitStatus> {
        Ok(tokio_runtime()?.block_on(c.exec_with(command, opts, Output::Inherit))?)
    }
}
