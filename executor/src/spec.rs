//! The OCI runtime spec kiln writes: Docker's default hardening, derived from a [`ProcessPlan`].

use crate::plan::{MountPlan, Network, ProcessPlan, Seccomp};
use crate::seccomp::{Profile, Target};
use crate::user::ResolvedUser;
use crate::{Error, Result};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Docker's `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's 14 default capabilities. A sandbox on the host's network gets them without
/// `CAP_NET_RAW` (see [`plan_capabilities`]).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability `--cap-add ALL` grants (Linux 5.9 set), in the order of their bit numbers
/// (`linux/capability.h`).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths Docker masks (bind of /dev/null or an empty read-only tmpfs).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker remounts read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's (and runc's) `RLIMIT_NOFILE` for containers.
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// The `RLIMIT_NOFILE` containers get here: Docker's 1048576, or our own hard limit when we lack
/// `CAP_SYS_RESOURCE` to raise it (some CI sandboxes); runc would fail to start otherwise.
pub fn nofile_limit() -> u64 {
    const CAP_SYS_RESOURCE: u32 = 24;
    let has_sys_resource =
        own_capabilities("CapEff").is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0);
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    if has_sys_resource {
        NOFILE_LIMIT
    } else {
        NOFILE_LIMIT.min(hard)
    }
}

/// One of this process's capability sets (`CapEff`, `CapBnd`...) from `/proc/self/status`.
fn own_capabilities(set: &str) -> Option<u64> {
    let status = fs_err::read_to_string("/proc/self/status").ok()?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(set)?.strip_prefix(':'))?;
    u64::from_str_radix(value.trim(), 16).ok()
}

/// The files in a bundle that are bind-mounted over `/etc/{hosts,hostname,resolv.conf}`.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Normalizes a capability name (`net_admin`, `CAP_NET_ADMIN`) to `CAP_NET_ADMIN`.
fn cap_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capabilities a plan's process gets, sorted, `CAP_` prefixed: every one with
/// `privileged` (which ignores `cap_add` and `cap_drop`, as Docker does); otherwise Docker's
/// default set after the `cap_add`/`cap_drop` rules, where a sandbox that shares the host's
/// network namespace starts without `CAP_NET_RAW`.
///
/// Docker's containers keep `CAP_NET_RAW` in a network namespace of their own, where raw and
/// packet sockets see only the container's traffic. On the host's namespace the same capability
/// lets any step or container open an `AF_PACKET` socket and capture (or forge) the host's
/// traffic, so kiln grants it there only when asked (`--cap-add NET_RAW`, `--privileged`).
pub fn plan_capabilities(plan: &ProcessPlan) -> Result<Vec<String>> {
    if plan.privileged {
        // Every capability there is, as far as we can give it: runc cannot grant one outside
        // our own bounding set (some CI sandboxes withhold CAP_SYS_RESOURCE), nor one the
        // kernel does not know.
        let bounding = own_capabilities("CapBnd").unwrap_or(u64::MAX);
        let mut all: Vec<String> = ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, _)| bounding & (1 << bit) != 0)
            .map(|(_, c)| (*c).to_owned())
            .collect();
        all.sort();
        return Ok(all);
    }
    let base: Vec<&str> = DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| plan.network != Network::Host || *c != "CAP_NET_RAW")
        .collect();
    capabilities_from(&base, &plan.cap_add, &plan.cap_drop)
}

/// The capability set after Docker's `--cap-add`/`--cap-drop` rules over its default set,
/// sorted, `CAP_` prefixed.
pub fn effective_capabilities(cap_add: &[String], cap_drop: &[String]) -> Result<Vec<String>> {
    capabilities_from(&DEFAULT_CAPABILITIES, cap_add, cap_drop)
}

fn capabilities_from(
    base: &[&str],
    cap_add: &[String],
    cap_drop: &[String],
) -> Result<Vec<String>> {
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    for name in cap_add.iter().chain(cap_drop).filter(|c| !is_all(c)) {
        let full = cap_name(name);
        if !ALL_CAPABILITIES.contains(&full.as_str()) {
            return Err(Error::UnknownCapability { name: name.clone() });
        }
    }
    let mut caps: Vec<String> = if cap_add.iter().any(is_all) {
        ALL_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()
    } else {
        base.iter().map(|c| (*c).to_owned()).collect()
    };
    if cap_drop.iter().any(is_all) {
        caps.clear();
    } else {
        let drops: Vec<String> = cap_drop.iter().map(|c| cap_name(c)).collect();
        caps.retain(|c| !drops.contains(c));
    }
    for add in cap_add.iter().filter(|c| !is_all(c)) {
        let add = cap_name(add);
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    caps.sort();
    Ok(caps)
}

fn to_oci_caps(names: &[String]) -> Result<Capabilities> {
    names
        .iter()
        .map(|n| {
            Capability::from_str(n.trim_start_matches("CAP_"))
                .map_err(|_| Error::UnknownCapability { name: n.clone() })
        })
        .collect()
}

fn dev_rule(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    Ok(b.build()?)
}

/// Docker's device cgroup rules: deny everything, allow mknod and the default devices.
pub fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>> {
    use LinuxDeviceType::{B, C};
    Ok(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
        dev_rule(C, None, None, "m")?,
        dev_rule(B, None, None, "m")?,
        dev_rule(C, Some(1), Some(3), "rwm")?,    // null
        dev_rule(C, Some(1), Some(5), "rwm")?,    // zero
        dev_rule(C, Some(1), Some(7), "rwm")?,    // full
        dev_rule(C, Some(1), Some(8), "rwm")?,    // random
        dev_rule(C, Some(1), Some(9), "rwm")?,    // urandom
        dev_rule(C, Some(5), Some(0), "rwm")?,    // tty
        dev_rule(C, Some(5), Some(2), "rwm")?,    // ptmx
        dev_rule(C, Some(136), None, "rwm")?,     // pts/*
        dev_rule(C, Some(10), Some(200), "rwm")?, // net/tun
    ])
}

/// Directories of the host's `/dev` that `--privileged` does not copy: mounts of their own in
/// a container (`pts`, `shm`, `mqueue`), or not devices of the host's (`fd`, the
/// bookkeeping of udev and LXD).
const HOST_DEV_SKIPPED: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// The character and block devices under the host's `dir` (`/dev`), as `--privileged` gives
/// them to a container (Docker's rule): every one but `console` and those below
/// [`HOST_DEV_SKIPPED`], with the host's mode and owner. Symlinks are not followed.
pub fn host_devices(dir: &Path) -> Result<Vec<LinuxDevice>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs_err::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path: PathBuf = entry.path();
        let name = entry.file_name();
        let Ok(meta) = fs_err::symlink_metadata(&path) else {
            continue; // gone meanwhile
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !HOST_DEV_SKIPPED.iter().any(|s| name == *s) {
                out.extend(host_devices(&path)?);
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        if name == "console" {
            continue;
        }
        let rdev = meta.rdev();
        out.push(
            LinuxDeviceBuilder::default()
                .path(&path)
                .typ(typ)
                .major(i64::from(rustix::fs::major(rdev)))
                .minor(i64::from(rustix::fs::minor(rdev)))
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()?,
        );
    }
    Ok(out)
}

/// The `linux.seccomp` of a plan whose process holds `caps`: none when privileged or
/// unconfined, else its profile resolved for those capabilities and this host.
pub fn plan_seccomp(plan: &ProcessPlan, caps: &[String]) -> Result<Option<LinuxSeccomp>> {
    if plan.privileged {
        return Ok(None);
    }
    let target = || Target::host(caps.to_vec());
    Ok(match &plan.seccomp {
        Seccomp::Unconfined => None,
        Seccomp::Default => Some(Profile::docker_default().to_oci(&target())?),
        Seccomp::Profile { profile, .. } => Some(profile.to_oci(&target())?),
    })
}

fn mount(dst: &str, typ: &str, src: &str, opts: &[&str]) -> Result<Mount> {
    Ok(MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()?)
}

fn check_abs(what: &str, path: &str) -> Result<()> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(Error::InvalidPlan {
            reason: format!("{what} {path:?} is not an absolute path"),
        })
    }
}

/// The container id a bundle belongs to: the bundle directory's name.
fn bundle_id(bundle: &Path) -> String {
    bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The cgroup path (relative to each hierarchy's root) that kiln gives container `id`:
/// `/kiln/<id>/ctr`, so that `/kiln/<id>` stays ours to watch for OOM kills.
pub fn cgroups_path(id: &str) -> String {
    format!("/kiln/{id}/ctr")
}

/// Hostname used when the plan sets none: the first 12 characters of the container id with its
/// own network namespace (as Docker), the host's name with the host network.
pub fn default_hostname(plan: &ProcessPlan, id: &str) -> String {
    match (&plan.hostname, plan.network) {
        (Some(h), _) => h.clone(),
        (None, Network::None | Network::Bridge | Network::Container) => {
            id.chars().take(12).collect()
        }
        (None, Network::Host) => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    }
}

/// The final environment: the plan's, plus `PATH` (Docker's default), `HOME` (from passwd) and
/// `TERM=xterm` with a terminal, each only when not set.
pub fn process_env(plan: &ProcessPlan, user: &ResolvedUser) -> Vec<String> {
    let mut env = plan.env.clone();
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    };
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    if plan.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".to_owned());
    }
    env
}

/// Builds the runtime spec for `plan` over `rootfs`, Docker's default hardening. `bundle` is the
/// bundle directory (named after the container id) holding the generated `hosts`, `hostname`
/// and `resolv.conf` that are bind-mounted into the container.
///
/// Resources go to `linux.resources` under cgroup path [`cgroups_path`]; memory is limited with
/// swap equal to the limit (no swap), as `--memory-swap` equal to `--memory` does in Docker.
pub fn build_spec(
    plan: &ProcessPlan,
    user: &ResolvedUser,
    rootfs: &Path,
    bundle: &Path,
) -> Result<Spec> {
    if plan.args.is_empty() {
        return Err(Error::InvalidPlan {
            reason: "no command to run".to_owned(),
        });
    }
    check_abs("working directory", &plan.cwd)?;
    let id = bundle_id(bundle);

    let cap_names = plan_capabilities(plan)?;
    let caps = to_oci_caps(&cap_names)?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?;
    let mut user_b = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        user_b = user_b.additional_gids(user.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(plan.tty)
        .user(user_b.build()?)
        .args(plan.args.clone())
        .env({
            let mut env = process_env(plan, user);
            // docker sets HOSTNAME to the container's hostname unless given.
            if matches!(plan.network, Network::Bridge | Network::Container)
                && !env.iter().any(|e| e.starts_with("HOSTNAME="))
            {
                env.push(format!("HOSTNAME={}", default_hostname(plan, &id)));
            }
            env
        })
        .cwd(plan.cwd.clone())
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(nofile_limit())
                .soft(nofile_limit())
                .build()?,
        ])
        .no_new_privileges(plan.no_new_privileges)
        .build()?;
    // A privileged sandbox may write /sys (and its cgroup tree), as Docker's may.
    let sys_ro: &[&str] = if plan.privileged { &[] } else { &["ro"] };

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &[&["nosuid", "noexec", "nodev"][..], sys_ro].concat(),
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[&["nosuid", "noexec", "nodev", "relatime"][..], sys_ro].concat(),
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ];
    let etc_opts: &[&str] = if plan.readonly_rootfs {
        &["rbind", "rprivate", "ro"]
    } else {
        &["rbind", "rprivate"]
    };
    for name in ETC_FILES {
        let src = bundle.join(name);
        mounts.push(
            MountBuilder::default()
                .destination(format!("/etc/{name}"))
                .typ("bind")
                .source(src)
                .options(etc_opts.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
                .build()?,
        );
    }
    for m in &plan.mounts {
        check_abs("mount destination", m.destination())?;
        mounts.push(match m {
            MountPlan::Bind { src, dst, readonly } => {
                let mut opts = vec!["rbind".to_owned(), "rprivate".to_owned()];
                if *readonly {
                    opts.push("ro".to_owned());
                }
                MountBuilder::default()
                    .destination(dst)
                    .typ("bind")
                    .source(src)
                    .options(opts)
                    .build()?
            }
            MountPlan::Tmpfs { dst, options } => {
                let mut opts = vec!["nosuid".to_owned(), "nodev".to_owned()];
                opts.extend(options.iter().cloned());
                MountBuilder::default()
                    .destination(dst)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(opts)
                    .build()?
            }
        });
    }

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if plan.network != Network::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| {
            let mut ns = LinuxNamespaceBuilder::default().typ(t);
            if t == LinuxNamespaceType::Network && plan.network == Network::Bridge {
                // Made and wired before the runtime starts (`network::setup`).
                ns = ns.path(crate::network::netns_path(bundle));
            }
            if t == LinuxNamespaceType::Network
                && plan.network == Network::Container
                && let Some((path, _)) = &plan.join_netns
            {
                // Another container's namespace (`--network container:NAME`).
                ns = ns.path(path.clone());
            }
            ns.build()
        })
        .collect::<Result<Vec<_>, _>>()?;

    let device_rules = if plan.privileged {
        // Every device, as Docker's privileged containers.
        vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access("rwm")
                .build()?,
        ]
    } else {
        default_device_rules()?
    };
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(bytes) = plan.memory {
        let bytes = i64::try_from(bytes).map_err(|_| Error::InvalidPlan {
            reason: format!("memory limit {bytes} is too large"),
        })?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()?,
        );
    }
    if let Some(cpus) = plan.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(Error::InvalidPlan {
                reason: format!("cpus {cpus} must be a positive number"),
            });
        }
        let period: u64 = 100_000;
        let quota = (cpus * period as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota(quota.max(1000))
                .build()?,
        );
    }
    if let Some(limit) = plan.pids_limit.filter(|l| *l > 0) {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(cgroups_path(&id));
    if plan.privileged {
        // Explicitly empty: the builder's defaults are oci-spec's own lists.
        linux = linux
            .devices(host_devices(Path::new("/dev"))?)
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect::<Vec<_>>(),
            );
    }
    if let Some(seccomp) = plan_seccomp(plan, &cap_names)? {
        linux = linux.seccomp(seccomp);
    }
    let linux = linux.build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(plan.readonly_rootfs)
                .build()?,
        )
        .hostname(default_hostname(plan, &id))
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

/// The spec as canonical JSON: keys sorted (through `serde_json::Value`), capability sets sorted.
pub fn spec_json(spec: &Spec) -> Result<Vec<u8>> {
    let json_err = |source| Error::Json {
        path: "config.json".into(),
        source,
    };
    let mut value = serde_json::to_value(spec).map_err(json_err)?;
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut out = serde_json::to_vec_pretty(&value).map_err(json_err)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec_value(plan: &ProcessPlan) -> Value {
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
            home: "/home/app".to_owned(),
        };
        let spec = build_spec(
            plan,
            &user,
            Path::new("/r/rootfs"),
            Path::new("/s/bundles/abc123"),
        )
        .unwrap();
        serde_json::from_slice(&spec_json(&spec).unwrap()).unwrap()
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn docker_default_hardening() {
        let v = spec_value(&ProcessPlan::new(["/bin/sh", "-c", "true"]));
        let mut want: Vec<String> = DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| **c != "CAP_NET_RAW")
            .map(|c| c.to_string())
            .collect();
        want.sort();
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(
                strings(&v["process"]["capabilities"][set]),
                want,
                "{set}: Docker's set without NET_RAW on the host network"
            );
        }
        assert_eq!(
            strings(&v["process"]["capabilities"]["inheritable"]),
            Vec::<String>::new()
        );
        assert_eq!(v["process"]["noNewPrivileges"], false, "Docker's default");
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(seccomp["defaultErrnoRet"], 1);
        let names: Vec<&str> = seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["names"].as_array().unwrap())
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(names.contains(&"read") && names.contains(&"clone"));
        assert!(!names.contains(&"keyctl") && !names.contains(&"mount"));
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(v["process"]["rlimits"][0]["soft"], nofile_limit());
        assert_eq!(v["process"]["rlimits"][0]["hard"], nofile_limit());
        assert!(nofile_limit() <= 1_048_576);
        assert_eq!(strings(&v["linux"]["maskedPaths"]).len(), 11);
        assert!(strings(&v["linux"]["maskedPaths"]).contains(&"/proc/kcore".to_owned()));
        assert_eq!(
            strings(&v["linux"]["readonlyPaths"]),
            READONLY_PATHS.to_vec()
        );
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount"], "host network: no netns");
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/hosts",
                "/etc/hostname",
                "/etc/resolv.conf"
            ]
        );
        assert_eq!(v["mounts"][7]["source"], "/s/bundles/abc123/hosts");
        assert!(strings(&v["mounts"][3]["options"]).contains(&"ro".to_owned()));
        let devices = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(devices[0]["allow"], false);
        assert_eq!(devices[0]["access"], "rwm");
        assert!(
            devices
                .iter()
                .any(|d| d["major"] == 1 && d["minor"] == 3 && d["allow"] == true)
        );
        assert_eq!(v["linux"]["cgroupsPath"], "/kiln/abc123/ctr");
        assert_eq!(v["root"]["path"], "/r/rootfs");
        assert_eq!(v["root"]["readonly"], false);
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["additionalGids"][0], 10);
    }

    #[test]
    fn env_defaults_and_overrides() {
        let v = spec_value(&ProcessPlan::new(["x"]));
        assert_eq!(
            strings(&v["process"]["env"]),
            [format!("PATH={DEFAULT_PATH}"), "HOME=/home/app".to_owned()]
        );
        let mut plan = ProcessPlan::new(["x"]);
        plan.env = vec!["PATH=/only".into(), "HOME=/h".into(), "A=b=c".into()];
        plan.tty = true;
        let v = spec_value(&plan);
        assert_eq!(
            strings(&v["process"]["env"]),
            ["PATH=/only", "HOME=/h", "A=b=c", "TERM=xterm"]
        );
        assert_eq!(v["process"]["terminal"], true);
    }

    #[test]
    fn bridge_and_container_networks_join_namespaces_by_path() {
        let netns = |plan: &ProcessPlan| {
            let v = spec_value(plan);
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["type"] == "network")
                .map(|n| n["path"].clone())
        };
        let mut plan = ProcessPlan::new(["x"]);
        plan.network = Network::Bridge;
        assert_eq!(
            netns(&plan),
            Some(serde_json::json!("/s/bundles/abc123/netns"))
        );
        plan.network = Network::Container;
        plan.join_netns = Some(("/s/bundles/other/netns".into(), "other".into()));
        assert_eq!(
            netns(&plan),
            Some(serde_json::json!("/s/bundles/other/netns"))
        );
        let v = spec_value(&plan);
        assert_eq!(v["hostname"], "abc123");
        assert!(
            strings(&v["process"]["env"]).contains(&"HOSTNAME=abc123".to_owned()),
            "{}",
            v["process"]["env"]
        );
        plan.network = Network::None;
        plan.join_netns = None;
        assert_eq!(netns(&plan), Some(serde_json::Value::Null), "a fresh one");
    }

    #[test]
    fn network_none_limits_mounts_and_hostname() {
        let mut plan = ProcessPlan::new(["x"]);
        plan.network = Network::None;
        plan.readonly_rootfs = true;
        plan.memory = Some(32 << 20);
        plan.cpus = Some(1.5);
        plan.pids_limit = Some(20);
        plan.mounts = vec![
            MountPlan::Bind {
                src: "/host/data".into(),
                dst: "/data".into(),
                readonly: true,
            },
            MountPlan::Tmpfs {
                dst: "/scratch".into(),
                options: vec!["size=1m".into()],
            },
        ];
        let v = spec_value(&plan);
        assert!(
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
        assert_eq!(v["hostname"], "abc123");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(v["linux"]["resources"]["memory"]["swap"], 32 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 150_000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 20);
        let mounts = v["mounts"].as_array().unwrap();
        assert_eq!(strings(&mounts[7]["options"]), ["rbind", "rprivate", "ro"]);
        let data = &mounts[10];
        assert_eq!(data["destination"], "/data");
        assert_eq!(strings(&data["options"]), ["rbind", "rprivate", "ro"]);
        assert_eq!(mounts[11]["type"], "tmpfs");
        assert!(strings(&mounts[11]["options"]).contains(&"size=1m".to_owned()));
    }

    #[test]
    fn net_raw_only_in_a_namespace_of_its_own_or_when_asked() {
        let caps = |network, add: &[&str]| {
            let mut plan = ProcessPlan::new(["x"]);
            plan.network = network;
            plan.cap_add = add.iter().map(|c| c.to_string()).collect();
            plan_capabilities(&plan).unwrap()
        };
        let raw = "CAP_NET_RAW".to_owned();
        assert!(!caps(Network::Host, &[]).contains(&raw));
        assert_eq!(caps(Network::Host, &[]).len(), 13);
        assert!(caps(Network::None, &[]).contains(&raw));
        assert_eq!(caps(Network::None, &[]).len(), 14);
        assert!(caps(Network::Host, &["NET_RAW"]).contains(&raw));
        assert!(caps(Network::Host, &["ALL"]).contains(&raw));
    }

    #[test]
    fn security_options() {
        let mut plan = ProcessPlan::new(["x"]);
        plan.no_new_privileges = true;
        plan.seccomp = Seccomp::Unconfined;
        let v = spec_value(&plan);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert!(v["linux"].get("seccomp").is_none(), "unconfined");
        // Capabilities the plan adds open the syscalls they guard.
        let mut plan = ProcessPlan::new(["x"]);
        plan.cap_add = vec!["SYS_ADMIN".into()];
        let v = spec_value(&plan);
        let rules = v["linux"]["seccomp"]["syscalls"].as_array().unwrap();
        assert!(
            rules
                .iter()
                .any(|r| r["names"].as_array().unwrap().iter().any(|n| n == "mount"))
        );
        // A profile of one's own replaces the default.
        let mut plan = ProcessPlan::new(["x"]);
        plan.seccomp = Seccomp::Profile {
            source: "p.json".into(),
            profile: Box::new(
                Profile::from_json(
                    br#"{"defaultAction": "SCMP_ACT_ALLOW",
                         "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
                )
                .unwrap(),
            ),
        };
        let v = spec_value(&plan);
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(v["linux"]["seccomp"]["syscalls"][0]["names"][0], "mkdir");
    }

    #[test]
    fn privileged_lifts_the_hardening() {
        let mut plan = ProcessPlan::new(["x"]);
        plan.privileged = true;
        plan.cap_drop = vec!["ALL".into()]; // ignored, as by Docker
        plan.seccomp = Seccomp::Default;
        let v = spec_value(&plan);
        let ours = own_capabilities("CapBnd").unwrap();
        assert_eq!(
            strings(&v["process"]["capabilities"]["bounding"]).len(),
            (ours & ((1 << 41) - 1)).count_ones() as usize,
            "every capability we hold"
        );
        assert!(v["linux"].get("seccomp").is_none());
        assert_eq!(v["linux"]["maskedPaths"], serde_json::json!([]));
        assert_eq!(v["linux"]["readonlyPaths"], serde_json::json!([]));
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(!strings(&sys["options"]).contains(&"ro".to_owned()));
        let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["allow"], true);
        assert_eq!(rules[0]["access"], "rwm");
        let devices = v["linux"]["devices"].as_array().unwrap();
        assert!(
            devices.iter().any(|d| d["path"] == "/dev/null"
                && d["type"] == "c"
                && d["major"] == 1
                && d["minor"] == 3),
            "{devices:?}"
        );
        assert!(
            devices
                .iter()
                .all(|d| !d["path"].as_str().unwrap().starts_with("/dev/pts/")
                    && d["path"] != "/dev/console")
        );
    }

    #[test]
    fn host_devices_are_read_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir(dir.path().join("pts")).unwrap();
        fs_err::write(dir.path().join("regular"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        assert!(host_devices(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn capability_rules_follow_docker() {
        let caps =
            effective_capabilities(&["net_admin".into()], &["CAP_CHOWN".into(), "mknod".into()])
                .unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        assert!(!caps.contains(&"CAP_MKNOD".to_owned()));
        assert_eq!(caps.len(), 13);
        assert_eq!(
            effective_capabilities(&["KILL".into()], &["ALL".into()]).unwrap(),
            ["CAP_KILL"]
        );
        assert_eq!(
            effective_capabilities(&["ALL".into()], &[]).unwrap().len(),
            41
        );
        assert!(matches!(
            effective_capabilities(&["NOPE".into()], &[]),
            Err(Error::UnknownCapability { .. })
        ));
        // Bit numbers, as `privileged` reads them against our bounding set.
        assert_eq!(ALL_CAPABILITIES[13], "CAP_NET_RAW");
        assert_eq!(ALL_CAPABILITIES[21], "CAP_SYS_ADMIN");
        assert_eq!(ALL_CAPABILITIES[24], "CAP_SYS_RESOURCE");
        assert_eq!(ALL_CAPABILITIES[40], "CAP_CHECKPOINT_RESTORE");
        // Every name we know must map to an oci-spec capability.
        let all: Vec<String> = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        assert_eq!(to_oci_caps(&all).unwrap().len(), 41);
    }

    #[test]
    fn json_is_canonical() {
        let plan = ProcessPlan::new(["x"]);
        let user = ResolvedUser::root();
        let a = spec_json(&build_spec(&plan, &user, Path::new("/r"), Path::new("/b/id")).unwrap())
            .unwrap();
        for _ in 0..5 {
            let b =
                spec_json(&build_spec(&plan, &user, Path::new("/r"), Path::new("/b/id")).unwrap())
                    .unwrap();
            assert_eq!(a, b);
        }
        let text = String::from_utf8(a).unwrap();
        assert!(text.find("\"hostname\"").unwrap() < text.find("\"linux\"").unwrap());
    }

    #[test]
    fn bad_plans_are_refused() {
        let user = ResolvedUser::root();
        let b = Path::new("/b/id");
        assert!(build_spec(&ProcessPlan::default(), &user, Path::new("/r"), b).is_err());
        let mut plan = ProcessPlan::new(["x"]);
        plan.cwd = "relative".into();
        assert!(build_spec(&plan, &user, Path::new("/r"), b).is_err());
        let mut plan = ProcessPlan::new(["x"]);
        plan.cpus = Some(-1.0);
        assert!(build_spec(&plan, &user, Path::new("/r"), b).is_err());
    }
}
