//! Foreground runs (RUN steps): what the sandbox looks like from inside, exit codes, limits,
//! failures and cleanup.

use crate::support::{World, host_pids_with, sh};
use kiln_executor::spec::DEFAULT_CAPABILITIES;
use kiln_executor::{Error, MountPlan, Network, ProcessPlan, Runtime};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A probe that reports what it sees as `key=value` lines.
const PROBE: &str = r#"
echo "pid=$$"
echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"
echo "procs=$(ls -d /proc/[0-9]* | wc -l)"
echo "hostname=$(hostname)"
echo "capeff=$(grep CapEff /proc/self/status | cut -f2)"
echo "capbnd=$(grep CapBnd /proc/self/status | cut -f2)"
echo "nonewprivs=$(grep NoNewPrivs /proc/self/status | cut -f2)"
echo "seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)"
for p in /proc/asound /proc/acpi /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
  /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
  if [ -d $p ]; then echo "mask:$p=$(ls -A $p | wc -l)";
  elif [ -e $p ]; then echo "mask:$p=$(wc -c < $p)";
  else echo "mask:$p=absent"; fi
done
if touch /rootprobe 2>/dev/null; then echo rootrw=yes; else echo rootrw=no; fi
echo "cwd=$(pwd)"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "foo=$FOO"
echo "home=$HOME"
echo "path=$PATH"
echo "netdevs=$(ls /sys/class/net | tr '\n' ' ')"
echo "nofile=$(ulimit -n)"
echo "sysrw=$(if touch /sys/probe 2>/dev/null; then echo yes; else echo no; fi)"
echo "devs=$(ls /dev | tr '\n' ' ')"
"#;

fn parse(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn default_cap_mask() -> u64 {
    // Bit numbers from linux/capability.h.
    let bit = |name: &str| match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_FOWNER" => 3,
        "CAP_FSETID" => 4,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_SETPCAP" => 8,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_CHROOT" => 18,
        "CAP_MKNOD" => 27,
        "CAP_AUDIT_WRITE" => 29,
        "CAP_SETFCAP" => 31,
        other => panic!("unexpected default capability {other}"),
    };
    DEFAULT_CAPABILITIES.iter().map(|c| 1u64 << bit(c)).sum()
}

#[tokio::test]
async fn probe_as_root_sees_docker_defaults() {
    let w = World::new();
    let mut plan = sh(PROBE);
    plan.network = Network::None;
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    let p = parse(&out.stdout);
    assert_eq!(p["pid"], "1", "the command is PID 1");
    assert!(p["pid1"].starts_with("/bin/sh -c"), "{}", p["pid1"]);
    // sh, the subshell running ls (and maybe wc): nothing of the host.
    assert!(
        p["procs"].parse::<u32>().unwrap() <= 4,
        "host processes visible: {}",
        p["procs"]
    );
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_ne!(p["hostname"], host);
    assert_eq!(
        u64::from_str_radix(&p["capeff"], 16).unwrap(),
        default_cap_mask()
    );
    assert_eq!(
        u64::from_str_radix(&p["capbnd"], 16).unwrap(),
        default_cap_mask()
    );
    assert_eq!(p["nonewprivs"], "0", "as in Docker and BuildKit");
    assert_eq!(p["seccomp"], "2", "Docker's seccomp profile is loaded");
    let mut checked = 0;
    for path in kiln_executor::spec::MASKED_PATHS {
        let seen = &p[&format!("mask:{path}")];
        if Path::new(path).exists() {
            // /proc/kcore is masked when the kernel has it (this CI kernel may not).
            assert_eq!(seen, "0", "{path} is masked");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "too few masked paths exist on this host to prove masking"
    );
    assert_eq!(p["rootrw"], "yes");
    assert_eq!(p["sysrw"], "no", "/sys is read-only");
    assert_eq!(p["uid"], "0");
    assert_eq!(p["home"], "/root");
    assert_eq!(p["path"], kiln_executor::spec::DEFAULT_PATH);
    assert_eq!(p["netdevs"], "lo", "--network none has only lo");
    assert_eq!(p["nofile"], kiln_executor::spec::nofile_limit().to_string());
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue",
    ] {
        assert!(
            p["devs"].split(' ').any(|d| d == dev),
            "/dev/{dev} missing: {}",
            p["devs"]
        );
    }
    assert!(w.rootfs().join("rootprobe").exists());
}

#[tokio::test]
async fn probe_as_app_user_readonly_with_env_and_cwd() {
    let w = World::new();
    let mut plan = sh(PROBE);
    plan.user = "app".into();
    plan.env = vec!["FOO=bar baz".into()];
    plan.cwd = "/work/dir".into();
    plan.create_cwd = true;
    plan.readonly_rootfs = true;
    plan.hostname = Some("probe-host".into());
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    let p = parse(&out.stdout);
    assert_eq!(p["uid"], "1000");
    assert_eq!(p["gid"], "1000");
    assert_eq!(p["groups"], "1000 10", "primary plus wheel from /etc/group");
    assert_eq!(p["cwd"], "/work/dir");
    assert_eq!(p["foo"], "bar baz");
    assert_eq!(p["home"], "/home/app");
    assert_eq!(p["hostname"], "probe-host");
    assert_eq!(p["rootrw"], "no", "root is read-only");
    assert_eq!(
        p["capeff"], "0000000000000000",
        "non-root keeps no effective caps"
    );
    assert!(w.rootfs().join("work/dir").is_dir());
    assert!(!w.rootfs().join("rootprobe").exists());
}

#[tokio::test]
async fn host_network_sees_host_interfaces() {
    let w = World::new();
    let out = w
        .run(sh("ls /sys/class/net | wc -l; hostname"))
        .await
        .unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    let host_ifaces = fs_err::read_dir("/sys/class/net").unwrap().count();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next().unwrap().trim(), host_ifaces.to_string());
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_eq!(lines.next().unwrap(), host);
    // A hostname of its own resolves on the host network as well.
    let mut plan = sh("hostname; grep -w buildkitsandbox /etc/hosts");
    plan.hostname = Some("buildkitsandbox".into());
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    assert_eq!(out.stdout, "buildkitsandbox\n127.0.0.1\tbuildkitsandbox\n");
}

#[tokio::test]
async fn exit_code_is_the_process_code() {
    let w = World::new();
    let out = w.run(sh("exit 3")).await.unwrap();
    assert_eq!(out.status.code, 3);
    assert_eq!(out.status.signal, None);
    assert!(!out.status.oom_killed);
    let out2 = w
        .run(sh("sleep 30 & kill -TERM $!; wait $!"))
        .await
        .unwrap();
    assert_eq!(out2.status.code, 143, "128+SIGTERM: {out2:?}");
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let w = World::new();
    let mut plan = sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
    plan.memory = Some(32 << 20);
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 137, "{out:?}");
    assert_eq!(out.status.signal, Some(9));
    assert!(out.status.oom_killed, "{out:?}");
    assert!(!out.stdout.contains("survived"));
}

#[tokio::test]
async fn within_memory_limit_is_not_oom() {
    let w = World::new();
    let mut plan = sh("x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}; \
                       cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                       || cat /sys/fs/cgroup/memory.max");
    plan.memory = Some(64 << 20);
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1000000");
    // The container sees its limit (on cgroup v1 plus one page, see cgroup::V1_LEAF_SLACK).
    let shown: u64 = lines[1].parse().unwrap();
    assert!((64 << 20..=(64 << 20) + 4096).contains(&shown), "{out:?}");
    // A SIGKILL that is not the OOM killer's is not reported as OOM.
    let mut plan = sh("sleep 10 & kill -KILL $!; wait $!");
    plan.memory = Some(64 << 20);
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 137, "{out:?}");
    assert!(!out.status.oom_killed, "{out:?}");
    assert!(!out.status.oom_killed);
}

#[tokio::test]
async fn pids_limit_is_enforced() {
    let w = World::new();
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; \
                  set -- /proc/[0-9]*; echo procs=$#";
    let mut plan = sh(script);
    plan.pids_limit = Some(6);
    let out = w.run(plan).await.unwrap();
    // busybox sh gives up at the first failed fork.
    assert_ne!(out.status.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("can't fork: Resource temporarily unavailable"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("procs="), "{out:?}");
    // Without the limit all twelve start.
    let out = w.run(sh(script)).await.unwrap();
    let procs: u32 = parse(&out.stdout)
        .get("procs")
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    assert!(procs >= 13, "{out:?}");
}

#[tokio::test]
async fn user_not_found_is_docker_error() {
    let w = World::new();
    let mut plan = sh("true");
    plan.user = "ghost".into();
    let err = w.run(plan).await.unwrap_err();
    assert!(matches!(err, Error::UserNotFound { .. }));
    assert_eq!(
        err.to_string(),
        "unable to find user ghost: no matching entries in passwd file"
    );
}

#[tokio::test]
async fn command_not_found_exits_127() {
    let w = World::new();
    let out = w.run(ProcessPlan::new(["nope"])).await.unwrap();
    assert_eq!(out.status.code, 127, "{out:?}");
    assert!(
        out.stderr
            .contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{out:?}"
    );
    let out = w.run(ProcessPlan::new(["/bin/nope"])).await.unwrap();
    assert_eq!(out.status.code, 127, "{out:?}");
    assert_eq!(w.runtime_list(), "");
}

#[test]
fn runtime_missing_names_the_package() {
    let err = Runtime::detect(Some(Path::new("/nonexistent/runc"))).unwrap_err();
    assert!(err.to_string().contains("apt-get install runc"), "{err}");
    let err = Runtime::detect(Some(Path::new("kiln-no-such-runtime"))).unwrap_err();
    assert!(matches!(err, Error::RuntimeMissing { .. }));
    assert!(err.to_string().contains("apt-get install runc"), "{err}");
}

#[tokio::test]
async fn output_streams_and_is_logged_whole() {
    let w = World::new();
    let mut req = w.request(sh(
        "echo out1; echo err1 >&2; head -c 300000 /dev/zero | tr '\\0' x; echo; echo out2",
    ));
    let log = w.dir.path().join("step.log");
    req.log_path = Some(log.clone());
    let out = w.run_request(req).await.unwrap();
    assert_eq!(out.status.code, 0);
    assert!(out.stdout.starts_with("out1\n"));
    assert!(out.stdout.ends_with("\nout2\n"));
    assert_eq!(out.stdout.len(), 5 + 300_000 + 1 + 5, "nothing clipped");
    assert_eq!(out.stderr, "err1\n");
    assert!(out.chunks >= 3);
    let logged = fs_err::read_to_string(&log).unwrap();
    assert_eq!(logged.len(), out.stdout.len() + out.stderr.len());
    assert!(logged.contains("err1\n"));
}

#[tokio::test]
async fn mounts_bind_ro_and_tmpfs() {
    let w = World::new();
    let data = w.dir.path().join("data");
    fs_err::create_dir_all(&data).unwrap();
    fs_err::write(data.join("in.txt"), "hello").unwrap();
    let mut plan = sh(
        "cat /data/in.txt; echo; if echo x > /data/new 2>/dev/null; then echo ro-broken; fi; \
         echo t > /scratch/f && cat /scratch/f; echo w > /rw/out",
    );
    let rw = w.dir.path().join("rw");
    fs_err::create_dir_all(&rw).unwrap();
    plan.mounts = vec![
        MountPlan::Bind {
            src: data.clone(),
            dst: "/data".into(),
            readonly: true,
        },
        MountPlan::Tmpfs {
            dst: "/scratch".into(),
            options: vec!["size=1m".into()],
        },
        MountPlan::Bind {
            src: rw.clone(),
            dst: "/rw".into(),
            readonly: false,
        },
    ];
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    assert_eq!(out.stdout, "hello\nt\n");
    assert!(!data.join("new").exists());
    assert_eq!(fs_err::read_to_string(rw.join("out")).unwrap(), "w\n");
}

#[tokio::test]
async fn cancellation_leaves_nothing_behind() {
    let w = World::new();
    let req = w.request(sh("sleep 4242; echo never"));
    let id = req.id.clone();
    let run = w.run_request(req);
    let res = tokio::time::timeout(Duration::from_millis(1500), run).await;
    assert!(res.is_err(), "the run must still be going: {res:?}");
    assert_eq!(w.runtime_list(), "", "no runtime state left");
    assert!(host_pids_with("sleep 4242").is_empty(), "no process left");
    let bundle = kiln_executor::runtime::bundle_dir(&w.state_dir(), &id);
    assert!(!bundle.exists(), "bundle removed");
    assert!(
        !Path::new("/sys/fs/cgroup/pids/kiln").join(&id).exists(),
        "cgroup removed"
    );
    assert!(
        !Path::new("/sys/fs/cgroup/memory/kiln").join(&id).exists(),
        "cgroup removed"
    );
}

#[tokio::test]
async fn success_leaves_nothing_behind() {
    let w = World::new();
    let mut plan = sh("cat /etc/hostname; ls /etc/hosts /etc/resolv.conf");
    plan.hostname = Some("stubbed".into());
    let req = w.request(plan);
    let id = req.id.clone();
    let out = w.run_request(req).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("stubbed\n"), "{out:?}");
    // The runtime created empty mount targets in the rootfs; they must not end up in a layer.
    for stub in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        assert!(!w.rootfs().join(stub).exists(), "{stub} left in the rootfs");
    }
    assert!(w.rootfs().join("etc/passwd").exists());
    assert_eq!(w.runtime_list(), "");
    assert!(!kiln_executor::runtime::bundle_dir(&w.state_dir(), &id).exists());
    assert!(!Path::new("/sys/fs/cgroup/pids/kiln").join(&id).exists());
}

#[tokio::test]
async fn killed_kiln_is_cleaned_up_at_next_start() {
    let w = World::new();
    let req = w.request(sh("sleep 4343"));
    let id = req.id.clone();
    let mut run = Box::pin(w.run_request(req));
    assert!(
        tokio::time::timeout(Duration::from_millis(1000), &mut run)
            .await
            .is_err()
    );
    // A killed kiln runs no destructors: forget the run as it was.
    std::mem::forget(run);
    let bundle = kiln_executor::runtime::bundle_dir(&w.state_dir(), &id);
    // runc runs on its own once spawned; give a slow machine time to create the container.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !w.runtime_list().contains(&id) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(w.runtime_list().contains(&id));
    // Runs of a live kiln are left alone...
    kiln_executor::cleanup_stale(&w.state_dir()).unwrap();
    assert!(w.runtime_list().contains(&id));
    // ...those of a dead one are removed.
    fs_err::write(bundle.join("owner"), "999999999 0").unwrap();
    kiln_executor::cleanup_stale(&w.state_dir()).unwrap();
    assert_eq!(w.runtime_list(), "");
    assert!(!bundle.exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !host_pids_with("sleep 4343").is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(host_pids_with("sleep 4343").is_empty());
    assert!(!Path::new("/sys/fs/cgroup/pids/kiln").join(&id).exists());
}

#[tokio::test]
async fn cpu_quota_is_applied() {
    let w = World::new();
    let mut plan = sh(
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us \
                       2>/dev/null || cat /sys/fs/cgroup/cpu.max",
    );
    plan.cpus = Some(1.5);
    let out = w.run(plan).await.unwrap();
    assert_eq!(out.status.code, 0, "{out:?}");
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words, ["150000", "100000"], "{out:?}");
}

#[tokio::test]
async fn concurrent_runs_share_a_state_dir() {
    let w = World::new();
    let (a, b, c, d) = tokio::join!(
        w.run(sh("echo a; sleep 0.3; exit 1")),
        w.run(sh("echo b; sleep 0.2; exit 2")),
        w.run(sh("echo c; sleep 0.1; exit 3")),
        w.run(sh("echo d; exit 4")),
    );
    for (out, (text, code)) in
        [a, b, c, d]
            .into_iter()
            .zip([("a\n", 1), ("b\n", 2), ("c\n", 3), ("d\n", 4)])
    {
        let out = out.unwrap();
        assert_eq!((out.stdout.as_str(), out.status.code), (text, code));
    }
    assert_eq!(w.runtime_list(), "");
}
