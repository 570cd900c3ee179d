//! Seccomp profiles in Docker's format (`--security-opt seccomp=PROFILE.json`), kiln's built-in
//! default with the semantics of Docker's default profile, and the conversion of a profile into
//! the OCI spec's `linux.seccomp` for one container.
//!
//! A profile is data: a default action and rules, each rule naming syscalls and an action,
//! optionally with argument conditions and with `includes`/`excludes` filters on the container's
//! capabilities, the host's architecture and its kernel version. [`Profile::to_oci`] resolves the
//! filters for one container (as dockerd does when it creates one) and leaves runc a plain list.
//!
//! The default denies everything with `EPERM` and allows an explicit list. What it keeps out
//! (Docker documents each): the kernel keyring (`add_key`, `keyctl`, `request_key`), `io_uring`,
//! `userfaultfd`, `bpf`, `perf_event_open`, module loading, mounting, namespaces (`unshare`,
//! `setns`, `clone` with namespace flags), clock setting, `reboot`, `swapon`, `kexec_*`,
//! `personality` beyond the few personas programs need, `ptrace` on kernels before 4.8, and
//! `socket(AF_VSOCK)`. `clone3` fails with `ENOSYS` rather than `EPERM`: its flags live in
//! memory a filter cannot read, and `ENOSYS` makes libc fall back to `clone`, whose flags the
//! filter checks. A capability granted with `--cap-add` lifts the rules it guards (`CAP_SYS_ADMIN`
//! allows `mount`, `unshare`, `setns` and namespace flags on `clone`, and so on).

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

/// A seccomp profile in Docker's JSON format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What a syscall no rule matches gets.
    pub default_action: LinuxSeccompAction,
    /// The errno of `SCMP_ACT_ERRNO` as the default action (libseccomp's default: `EPERM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Per native architecture, the architectures the filter covers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arch_map: Vec<ArchMap>,
    /// The older form: the architectures the filter covers, whatever the host.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub architectures: Vec<Arch>,
    /// Filter flags (`SECCOMP_FILTER_FLAG_*`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    /// The socket of a seccomp agent (`SCMP_ACT_NOTIFY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<PathBuf>,
    /// Opaque data for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    /// The rules, in order.
    #[serde(default, deserialize_with = "nullable")]
    pub syscalls: Vec<Rule>,
}

/// The architectures a filter covers when the host's native one is `architecture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// The native architecture.
    pub architecture: Arch,
    /// The compatible ones (x86 and x32 for x86-64, arm for aarch64).
    #[serde(default, deserialize_with = "nullable")]
    pub sub_architectures: Vec<Arch>,
}

/// One rule: syscalls, an action, argument conditions, and when the rule applies at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The old single-name form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The syscalls.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// What they get.
    pub action: LinuxSeccompAction,
    /// The errno of `SCMP_ACT_ERRNO` (or the value of `SCMP_ACT_TRACE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<LinuxSeccompArg>,
    /// The rule applies only when all of these hold.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Filter::is_empty"
    )]
    pub includes: Filter,
    /// The rule does not apply when any of these holds.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Filter::is_empty"
    )]
    pub excludes: Filter,
}

/// Conditions on the container and the host (`includes` / `excludes` of a rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Host architectures, by Go's names (`amd64`, `arm64`, `386`...), as Docker spells them.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arches: Vec<String>,
    /// Capabilities (`CAP_SYS_ADMIN`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    /// A kernel version, `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.arches.is_empty() && self.caps.is_empty() && self.min_kernel.is_none()
    }
}

/// `null` reads as the default (Docker's own profiles write `"args": null`).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why a profile cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A rule has both `name` and `names`.
    #[error("seccomp rule {index} has both \"name\" and \"names\"")]
    NameAndNames {
        /// The rule's position in `syscalls`.
        index: usize,
    },
    /// A rule names no syscall.
    #[error("seccomp rule {index} names no syscall")]
    NoNames {
        /// The rule's position in `syscalls`.
        index: usize,
    },
    /// Both forms of the architecture list are given.
    #[error("a seccomp profile has both \"architectures\" and \"archMap\"")]
    ArchitecturesAndArchMap,
    /// `minKernel` is not `major.minor`.
    #[error("seccomp rule {index}: invalid minKernel {value:?} (expected major.minor)")]
    MinKernel {
        /// The rule's position in `syscalls`.
        index: usize,
        /// The value as written.
        value: String,
    },
}

/// What the rules of a profile are resolved against: the container and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The container's capabilities, `CAP_` prefixed.
    pub caps: Vec<String>,
    /// The host architecture by Go's name (`amd64`, `arm64`, ...).
    pub arch: String,
    /// The host kernel's `(major, minor)`; `None` when unknown (no `minKernel` rule applies).
    pub kernel: Option<(u32, u32)>,
}

impl Target {
    /// A target on this host with the container's capabilities `caps`.
    pub fn host(caps: Vec<String>) -> Target {
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Target {
            caps,
            arch: go_arch(std::env::consts::ARCH).to_owned(),
            kernel: parse_kernel(&release),
        }
    }
}

/// Go's name of a Rust target architecture (the names Docker's profiles use).
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" => "mips64",
        other => other,
    }
}

/// The seccomp architecture of a host architecture, by Go's name.
fn native_arch(go_arch: &str) -> Option<Arch> {
    Some(match go_arch {
        "amd64" => Arch::ScmpArchX86_64,
        "386" => Arch::ScmpArchX86,
        "arm64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "s390x" => Arch::ScmpArchS390x,
        "s390" => Arch::ScmpArchS390,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loong64" => Arch::ScmpArchLoongarch64,
        "mips64" => Arch::ScmpArchMips64,
        "mips64le" => Arch::ScmpArchMipsel64,
        _ => return None,
    })
}

/// `major.minor` from a kernel release such as `6.1.0-18-amd64`.
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn cap_full(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

impl Profile {
    /// Parses a profile from Docker's JSON format.
    pub fn from_json(data: &[u8]) -> Result<Profile, serde_json::Error> {
        serde_json::from_slice(data)
    }

    /// Kiln's default profile: Docker's default semantics, see the module documentation.
    pub fn docker_default() -> Profile {
        default_profile()
    }

    /// Checks what serde cannot: rule names and filter values.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !self.architectures.is_empty() && !self.arch_map.is_empty() {
            return Err(ProfileError::ArchitecturesAndArchMap);
        }
        for (index, rule) in self.syscalls.iter().enumerate() {
            match (&rule.name, rule.names.is_empty()) {
                (Some(_), false) => return Err(ProfileError::NameAndNames { index }),
                (None, true) => return Err(ProfileError::NoNames { index }),
                _ => {}
            }
            for f in [&rule.includes, &rule.excludes] {
                if let Some(v) = &f.min_kernel
                    && parse_kernel(v).is_none()
                {
                    return Err(ProfileError::MinKernel {
                        index,
                        value: v.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The OCI `linux.seccomp` of this profile for `target`: the architectures for the host's
    /// native one, and the rules whose filters hold, in order, without their filters.
    pub fn to_oci(&self, target: &Target) -> Result<LinuxSeccomp, ProfileError> {
        self.validate()?;
        let architectures = if self.arch_map.is_empty() {
            self.architectures.clone()
        } else {
            let native = native_arch(&target.arch);
            self.arch_map
                .iter()
                .filter(|m| Some(m.architecture) == native)
                .flat_map(|m| std::iter::once(m.architecture).chain(m.sub_architectures.clone()))
                .collect()
        };
        let caps: Vec<String> = target.caps.iter().map(|c| cap_full(c)).collect();
        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            if !applies(rule, &caps, target) {
                continue;
            }
            let names = match &rule.name {
                Some(n) => vec![n.clone()],
                None => rule.names.clone(),
            };
            let mut s = LinuxSyscall::default();
            s.set_names(names);
            s.set_action(rule.action);
            s.set_errno_ret(rule.errno_ret);
            if !rule.args.is_empty() {
                s.set_args(Some(rule.args.clone()));
            }
            syscalls.push(s);
        }
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures((!architectures.is_empty()).then_some(architectures));
        out.set_flags((!self.flags.is_empty()).then(|| self.flags.clone()));
        out.set_listener_path(self.listener_path.clone());
        out.set_listener_metadata(self.listener_metadata.clone());
        out.set_syscalls(Some(syscalls));
        Ok(out)
    }
}

/// Whether a rule's `includes` all hold and none of its `excludes` does.
fn applies(rule: &Rule, caps: &[String], target: &Target) -> bool {
    let kernel_at_least = |min: &Option<String>| {
        let min = min.as_deref().and_then(parse_kernel);
        match (min, target.kernel) {
            (Some(min), Some(k)) => Some(k >= min),
            (Some(_), None) => Some(false),
            (None, _) => None,
        }
    };
    let has = |c: &String| caps.contains(&cap_full(c));
    let inc = &rule.includes;
    let included = (inc.arches.is_empty() || inc.arches.contains(&target.arch))
        && inc.caps.iter().all(has)
        && kernel_at_least(&inc.min_kernel) != Some(false);
    let exc = &rule.excludes;
    let excluded = exc.arches.contains(&target.arch)
        || exc.caps.iter().any(has)
        || kernel_at_least(&exc.min_kernel) == Some(true);
    included && !excluded
}

// ---------------------------------------------------------------------------------------------
// The default profile, as tables. Names are the kernel's syscall names (as libseccomp spells
// them); a name the host's libseccomp does not know is skipped by runc, and one the architecture
// lacks never matches.

/// Syscalls every container may make: files, memory, processes and threads, signals, time,
/// sockets (but see `socket` below), IPC, event loops, and the 32-bit and time64 variants.
const ALLOWED: &[&str] = &[
    // Files and directories.
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "flock",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "lchown",
    "lchown32",
    "link",
    "linkat",
    "_llseek",
    "lseek",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    // Extended attributes.
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "fsetxattr",
    "getxattr",
    "getxattrat",
    "lgetxattr",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lsetxattr",
    "removexattr",
    "removexattrat",
    "setxattr",
    "setxattrat",
    // Mount information (reading only).
    "listmount",
    "statmount",
    // File change notification.
    "fanotify_mark",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    // Asynchronous I/O (the old interface; io_uring stays out).
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioprio_get",
    "ioprio_set",
    // Memory.
    "brk",
    "cachestat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "mseal",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    // Processes, threads, ids, limits, scheduling.
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "getuid",
    "getuid32",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setuid",
    "setuid32",
    "ugetrlimit",
    "uname",
    "sysinfo",
    "times",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    // Randomness (libc, language runtimes and TLS libraries seed from it).
    "getrandom",
    // Landlock: a process may sandbox itself further.
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    // Signals.
    "kill",
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "tgkill",
    "tkill",
    // Time and timers (reading clocks; setting them needs CAP_SYS_TIME, below).
    "adjtimex",
    "alarm",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    // Waiting: futexes, polling, event loops.
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "_newselect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
    // Pipes and sockets.
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "pipe",
    "pipe2",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketcall",
    "socketpair",
    // System V and POSIX IPC (namespaced).
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // Device control (the device cgroup limits which devices a container can open).
    "ioctl",
    // Uprobes return through this one.
    "uretprobe",
];

/// Syscalls a capability unlocks, as Docker's default grants them with `--cap-add`.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// Syscalls that exist on some architectures only, by the Go names of those architectures.
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["amd64", "x32", "386"], &["arch_prctl", "modify_ldt"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "sync_file_range2",
        ],
    ),
    (&["ppc64le"], &["swapcontext", "sync_file_range2"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// Tracing and reading other processes' memory: harmless since Linux 4.8, where seccomp is
/// checked again after a tracer changed a syscall (before, ptrace could bypass the filter).
const SINCE_4_8: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// The `personality(2)` values allowed without a rule of one's own: `PER_LINUX`,
/// `PER_LINUX32` (`linux32` runs 32-bit builds), `UNAME26` and `UNAME26 | PER_LINUX32` (old
/// software that wants a 2.6 kernel version), and `0xffffffff`, which only queries.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// `clone(2)` flags that make a namespace (`CLONE_NEWNS`, `CLONE_NEWCGROUP`, `CLONE_NEWUTS`,
/// `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`, `CLONE_NEWNET`).
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `AF_VSOCK`: sockets to the hypervisor or other VMs, which no network namespace confines.
const AF_VSOCK: u64 = 40;

/// `EPERM`: what a denied syscall returns.
const EPERM: u32 = 1;
/// `ENOSYS`: what `clone3` returns without `CAP_SYS_ADMIN`.
const ENOSYS: u32 = 38;

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field is set: building cannot fail.
    b.build().unwrap_or_default()
}

fn allow(names: &[&str]) -> Rule {
    Rule {
        name: None,
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        action: LinuxSeccompAction::ScmpActAllow,
        errno_ret: None,
        args: Vec::new(),
        includes: Filter::default(),
        excludes: Filter::default(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn default_profile() -> Profile {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpMaskedEq, ScmpCmpNe};
    let mut rules = vec![allow(ALLOWED)];
    // socket(2) for every family but AF_VSOCK.
    rules.push(Rule {
        args: vec![arg(0, AF_VSOCK, None, ScmpCmpNe)],
        ..allow(&["socket"])
    });
    for persona in PERSONAS {
        rules.push(Rule {
            args: vec![arg(0, persona, None, ScmpCmpEq)],
            ..allow(&["personality"])
        });
    }
    for (arches, names) in BY_ARCH {
        rules.push(Rule {
            includes: Filter {
                arches: strings(arches),
                ..Filter::default()
            },
            ..allow(names)
        });
    }
    for (cap, names) in BY_CAPABILITY {
        rules.push(Rule {
            includes: Filter {
                caps: vec![(*cap).to_owned()],
                ..Filter::default()
            },
            ..allow(names)
        });
    }
    rules.push(Rule {
        includes: Filter {
            min_kernel: Some("4.8".to_owned()),
            ..Filter::default()
        },
        ..allow(SINCE_4_8)
    });
    // Without CAP_SYS_ADMIN: clone without namespace flags (the flags are the first argument,
    // the second on s390), clone3 not at all, with ENOSYS.
    let no_admin = |arches: &[&str]| Filter {
        caps: vec!["CAP_SYS_ADMIN".to_owned()],
        arches: strings(arches),
        min_kernel: None,
    };
    rules.push(Rule {
        args: vec![arg(0, CLONE_NAMESPACE_FLAGS, Some(0), ScmpCmpMaskedEq)],
        excludes: no_admin(&["s390", "s390x"]),
        ..allow(&["clone"])
    });
    rules.push(Rule {
        args: vec![arg(1, CLONE_NAMESPACE_FLAGS, Some(0), ScmpCmpMaskedEq)],
        includes: Filter {
            arches: strings(&["s390", "s390x"]),
            ..Filter::default()
        },
        excludes: no_admin(&[]),
        ..allow(&["clone"])
    });
    rules.push(Rule {
        action: LinuxSeccompAction::ScmpActErrno,
        errno_ret: Some(ENOSYS),
        excludes: no_admin(&[]),
        ..allow(&["clone3"])
    });

    let map = |native: Arch, subs: &[Arch]| ArchMap {
        architecture: native,
        sub_architectures: subs.to_vec(),
    };
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(EPERM),
        arch_map: vec![
            map(
                Arch::ScmpArchX86_64,
                &[Arch::ScmpArchX86, Arch::ScmpArchX32],
            ),
            map(Arch::ScmpArchAarch64, &[Arch::ScmpArchArm]),
            map(Arch::ScmpArchPpc64le, &[]),
            map(Arch::ScmpArchS390x, &[Arch::ScmpArchS390]),
            map(Arch::ScmpArchRiscv64, &[]),
            map(Arch::ScmpArchLoongarch64, &[]),
        ],
        architectures: Vec::new(),
        flags: Vec::new(),
        listener_path: None,
        listener_metadata: None,
        syscalls: rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPABILITIES;

    fn target(arch: &str, extra_caps: &[&str]) -> Target {
        let mut caps = strings(&DEFAULT_CAPABILITIES);
        caps.extend(strings(extra_caps));
        Target {
            caps,
            arch: arch.to_owned(),
            kernel: Some((6, 1)),
        }
    }

    fn oci(t: &Target) -> LinuxSeccomp {
        Profile::docker_default().to_oci(t).unwrap()
    }

    /// The rules that mention `name`, as (action, errno, args).
    fn rules_for(s: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    fn allowed_unconditionally(s: &LinuxSeccomp, name: &str) -> bool {
        rules_for(s, name)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    #[test]
    fn default_denies_with_eperm_and_allows_ordinary_work() {
        let s = oci(&target("amd64", &[]));
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "mmap",
            "futex",
            "wait4",
            "chroot",
            "getrandom",
        ] {
            assert!(allowed_unconditionally(&s, name), "{name}");
        }
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "io_uring_enter",
            "perf_event_open",
            "bpf",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "userfaultfd",
            "kexec_load",
            "init_module",
            "reboot",
            "swapon",
            "clock_settime",
            "open_by_handle_at",
            "pivot_root",
        ] {
            assert!(rules_for(&s, name).is_empty(), "{name} must be denied");
        }
    }

    #[test]
    fn conditional_rules() {
        let s = oci(&target("amd64", &[]));
        let personality = rules_for(&s, "personality");
        let values: Vec<u64> = personality
            .iter()
            .map(|r| {
                let args = r.args().as_ref().unwrap();
                assert_eq!(args.len(), 1);
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        assert_eq!(values, PERSONAS);

        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1, "{clone:?}");
        let a = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(
            (a.index(), a.value(), a.value_two(), a.op()),
            (
                0,
                0x7E02_0000,
                Some(0),
                LinuxSeccompOperator::ScmpCmpMaskedEq
            )
        );

        let clone3 = rules_for(&s, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));

        let socket = rules_for(&s, "socket");
        let a = socket[0].args().as_ref().unwrap()[0];
        assert_eq!(
            (a.index(), a.value(), a.op()),
            (0, 40, LinuxSeccompOperator::ScmpCmpNe)
        );

        assert!(allowed_unconditionally(&s, "ptrace"), "kernel 6.1 >= 4.8");
        let old = Target {
            kernel: Some((4, 4)),
            ..target("amd64", &[])
        };
        assert!(rules_for(&oci(&old), "ptrace").is_empty());
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let s = oci(&target("amd64", &["CAP_SYS_ADMIN"]));
        for name in [
            "mount",
            "unshare",
            "setns",
            "clone3",
            "perf_event_open",
            "bpf",
        ] {
            assert!(allowed_unconditionally(&s, name), "{name}");
        }
        // No masked clone rule or ENOSYS clone3 rule next to the plain allow.
        assert_eq!(rules_for(&s, "clone").len(), 1);
        assert_eq!(rules_for(&s, "clone3").len(), 1);
        assert!(
            rules_for(&s, "keyctl").is_empty(),
            "no capability allows keyctl"
        );

        let s = oci(&target(
            "amd64",
            &["SYS_PTRACE", "sys_module", "CAP_SYS_TIME"],
        ));
        for name in [
            "kcmp",
            "pidfd_getfd",
            "init_module",
            "finit_module",
            "clock_settime",
        ] {
            assert!(allowed_unconditionally(&s, name), "{name}");
        }
        assert!(rules_for(&s, "mount").is_empty());

        // Dropping SYS_CHROOT takes chroot away.
        let mut t = target("amd64", &[]);
        t.caps.retain(|c| c != "CAP_SYS_CHROOT");
        assert!(rules_for(&oci(&t), "chroot").is_empty());
    }

    #[test]
    fn architectures_follow_the_host() {
        let s = oci(&target("amd64", &[]));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert!(allowed_unconditionally(&s, "arch_prctl"));
        assert!(rules_for(&s, "arm_fadvise64_64").is_empty());

        let s = oci(&target("arm64", &[]));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert!(allowed_unconditionally(&s, "arm_fadvise64_64"));
        assert!(allowed_unconditionally(&s, "sync_file_range2"));
        assert!(rules_for(&s, "arch_prctl").is_empty());

        let s = oci(&target("s390x", &[]));
        let clone = rules_for(&s, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 1);
    }

    #[test]
    fn docker_json_profiles_parse_and_convert() {
        let json = br#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": null}
            ],
            "syscalls": [
                {"names": ["keyctl", "add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": null, "comment": "", "includes": {}, "excludes": {}},
                {"name": "mkdir", "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
                {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO",
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["old"], "action": "SCMP_ACT_LOG", "includes": {"minKernel": "99.0"}}
            ]
        }"#;
        let p = Profile::from_json(json).unwrap();
        let s = p.to_oci(&target("amd64", &[])).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(s.default_errno_ret(), None);
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86][..])
        );
        let rules = s.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0].names(), &["keyctl", "add_key"]);
        assert_eq!(rules[0].errno_ret(), Some(13));
        assert_eq!(rules[1].names(), &["mkdir"]);
        assert_eq!(rules[1].args().as_ref().unwrap()[0].value(), 511);
        assert_eq!(rules[2].names(), &["sethostname"]);
        let admin = p.to_oci(&target("amd64", &["CAP_SYS_ADMIN"])).unwrap();
        assert_eq!(admin.syscalls().as_ref().unwrap().len(), 2);

        // The built-in profile goes through the same format.
        let d = Profile::docker_default();
        let back: Profile = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn bad_profiles_are_refused() {
        let both = br#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#;
        let p = Profile::from_json(both).unwrap();
        assert_eq!(
            p.to_oci(&target("amd64", &[])),
            Err(ProfileError::NameAndNames { index: 0 })
        );
        let none = br#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(
            Profile::from_json(none).unwrap().validate(),
            Err(ProfileError::NoNames { index: 0 })
        );
        let arches = br#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
            "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#;
        assert_eq!(
            Profile::from_json(arches).unwrap().validate(),
            Err(ProfileError::ArchitecturesAndArchMap)
        );
        let kernel = br#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
            "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "five"}}]}"#;
        assert!(matches!(
            Profile::from_json(kernel).unwrap().validate(),
            Err(ProfileError::MinKernel { .. })
        ));
        assert!(Profile::from_json(br#"{"defaultAction": "SCMP_ACT_NOPE"}"#).is_err());
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_kernel("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), None);
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }
}
