//! `kiln build` end to end: real sandbox, real store.

use crate::support::{Context, Kiln, build, cached, events, ran, sandbox_available, text};
use serde_json::Value;

#[test]
fn run_step_builds_and_runs_and_rebuild_is_cached() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN echo built > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
    );
    let first = build(&k, &ctx, &["-t", "t1:latest"]);
    assert_eq!(
        ran(&first),
        ["[2/2] RUN echo built > /built.txt"],
        "{first}"
    );
    assert_eq!(k.ok(&["run", "--rm", "t1"]), "built\n");
    let second = build(&k, &ctx, &["-t", "t1:latest"]);
    assert!(ran(&second).is_empty(), "nothing reruns: {second}");
    assert!(
        cached(&second).iter().any(|n| n.contains("RUN echo built")),
        "{second}"
    );
    let id1 = k.ok(&["build", "-q", ctx.arg()]);
    let id2 = k.ok(&["build", "-q", ctx.arg()]);
    assert_eq!(id1, id2, "same inputs, same image ID");
    assert!(id1.trim().starts_with("sha256:"), "{id1}");
}

#[test]
fn failing_run_reports_line_and_exit_code() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\nRUN echo first-line && echo about to fail >&2 && exit 3\nRUN echo never\n",
    );
    let err = k.fails(&["build", "--progress=plain", ctx.arg()]);
    assert!(
        err.contains("Dockerfile:3: RUN echo first-line && echo about to fail >&2 && exit 3 exited with code 3"),
        "{err}"
    );
    assert!(
        err.contains("about to fail"),
        "the step's last output lines are shown: {err}"
    );
    assert!(!err.contains("never"), "{err}");
}

#[test]
fn unused_stage_never_runs_and_target_selects_a_stage() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox AS broken\nRUN exit 1\n\nFROM busybox AS good\nRUN echo good > /g\n\nFROM busybox\nRUN echo final > /f\n",
    );
    let out = build(&k, &ctx, &["-t", "final"]);
    assert_eq!(ran(&out), ["[stage-2 2/2] RUN echo final > /f"], "{out}");
    let out = build(&k, &ctx, &["--target", "good", "-t", "good"]);
    assert_eq!(ran(&out), ["[good 2/2] RUN echo good > /g"], "{out}");
    assert_eq!(k.ok(&["run", "--rm", "good", "cat", "/g"]), "good\n");
    let err = k.fails(&["build", "--target", "nope", ctx.arg()]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn independent_stages_overlap_in_time() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox AS a\nRUN sleep 1 && echo a > /a\n\nFROM busybox AS b\nRUN sleep 1 && echo b > /b\n\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    );
    let out = build(&k, &ctx, &["--jobs", "2"]);
    let evs = events(&out);
    let span = |needle: &str| {
        let v = evs
            .iter()
            .find(|e| e["event"] == "started" && e["name"].as_str().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no start for {needle}: {out}"));
        let id = v["vertex"].clone();
        let start = v["timestamp_ms"].as_i64().unwrap();
        let end = evs
            .iter()
            .find(|e| e["event"] == "completed" && e["vertex"] == id)
            .unwrap()["timestamp_ms"]
            .as_i64()
            .unwrap();
        (start, end)
    };
    let (a0, a1) = span("echo a");
    let (b0, b1) = span("echo b");
    assert!(
        a0 < b1 && b0 < a1,
        "the two stages ran one after the other: a={a0}..{a1} b={b0}..{b1}"
    );
}

#[test]
fn seed_scenario_editing_a_source_reruns_only_copy_and_after() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox\nWORKDIR /app\nCOPY requirements.txt .\nRUN echo installing && cp requirements.txt /installed.txt\nCOPY . .\nCMD [\"sh\", \"/app/main.sh\"]\n",
        )
        .file("requirements.txt", "alpha==1\n")
        .file("main.sh", "echo v1\n");
    let first = build(&k, &ctx, &["-t", "seed"]);
    assert_eq!(ran(&first).len(), 4, "WORKDIR, COPY, RUN, COPY: {first}");
    assert_eq!(k.ok(&["run", "--rm", "seed"]), "v1\n");

    ctx.write("main.sh", "echo v2\n");
    let second = build(&k, &ctx, &["-t", "seed"]);
    assert_eq!(ran(&second), ["[5/5] COPY . ."], "{second}");
    let c = cached(&second);
    assert!(
        c.iter().any(|n| n.starts_with("[4/5] RUN echo installing")),
        "the slow step is CACHED: {second}"
    );
    assert_eq!(k.ok(&["run", "--rm", "seed"]), "v2\n");

    ctx.write("requirements.txt", "alpha==2\n");
    let third = build(&k, &ctx, &["-t", "seed"]);
    assert_eq!(
        ran(&third),
        [
            "[3/5] COPY requirements.txt .",
            "[4/5] RUN echo installing && cp requirements.txt /installed.txt",
            "[5/5] COPY . ."
        ],
        "{third}"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "seed", "cat", "/installed.txt"]),
        "alpha==2\n"
    );
}

#[test]
fn dockerignored_file_reaches_neither_image_nor_cache_key() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file("Dockerfile", "FROM busybox\nCOPY . /ctx/\n")
        .file(".dockerignore", "secret.txt\n*.log\n!keep.log\n")
        .file("secret.txt", "s3cr3t\n")
        .file("debug.log", "noise\n")
        .file("keep.log", "kept\n")
        .file("app.txt", "app\n");
    build(&k, &ctx, &["-t", "ign"]);
    let ls = k.ok(&["run", "--rm", "ign", "ls", "/ctx"]);
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    assert_eq!(names, ["Dockerfile", "app.txt", "keep.log"], "{ls}");
    // Changing an ignored file changes no cache key.
    ctx.write("secret.txt", "other\n");
    ctx.write("debug.log", "more noise\n");
    let again = build(&k, &ctx, &["-t", "ign"]);
    assert!(ran(&again).is_empty(), "{again}");
    // A kept file does.
    ctx.write("keep.log", "changed\n");
    let changed = build(&k, &ctx, &["-t", "ign"]);
    assert_eq!(ran(&changed), ["[2/2] COPY . /ctx/"], "{changed}");
}

#[test]
fn multistage_example_builds_and_runs() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let dir = crate::support::repo_root().join("examples/multistage");
    let out = k.run(&[
        "build",
        "--progress=rawjson",
        "-t",
        "ms:test",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        !err.contains("would fail"),
        "the unused docs stage never ran: {err}"
    );
    assert!(!ran(&err).iter().any(|n| n.starts_with("[docs")), "{err}");
    assert_eq!(
        k.ok(&["run", "--rm", "--hostname", "kiln", "ms:test"]),
        "hello, world: greet 1.2.0 running as app in kiln\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "--hostname", "kiln", "ms:test", "e2e"]),
        "hello, e2e: greet 1.2.0 running as app in kiln\n"
    );
}

#[test]
fn built_image_passes_skopeo_and_umoci() {
    if !sandbox_available() {
        return;
    }
    for tool in ["skopeo", "umoci"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
                panic!("{tool} missing: apt-get install {tool}");
            }
            eprintln!("skipping: {tool} missing");
            return;
        }
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file("Dockerfile", "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo ran > /ran.txt\nCMD [\"cat\", \"/hello.txt\"]\n")
        .file("hello.txt", "hi\n");
    let archive = ctx.path().join("image.oci.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    k.ok(&["build", "-t", "val:1", "-o", &dest, ctx.arg()]);
    let inspect = std::process::Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", archive.display())])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo: {}",
        text(&inspect.stderr)
    );
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{v}");
    // umoci wants an OCI layout directory.
    let layout = ctx.path().join("layout");
    fs_err::create_dir(&layout).unwrap();
    let untar = std::process::Command::new("tar")
        .args([
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(untar.success());
    let index: Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_string();
    let bundle = ctx.path().join("bundle");
    let unpack = std::process::Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(unpack.status.success(), "umoci: {}", text(&unpack.stderr));
    assert_eq!(
        fs_err::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        fs_err::read_to_string(bundle.join("rootfs/ran.txt")).unwrap(),
        "ran\n"
    );
}

#[test]
fn run_mounts_cache_bind_secret_tmpfs_and_heredoc() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox AS data\nRUN mkdir /data && echo from-stage > /data/file\n\n\
             FROM busybox\n\
             RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/count; wc -l < /cache/count > /count.txt'\n\
             RUN --mount=type=bind,from=data,source=/data,target=/mnt cat /mnt/file > /bound.txt\n\
             RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /secret-len.txt\n\
             RUN --mount=type=bind,target=/ctx ls /ctx > /ctx.txt\n\
             RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs.txt\n\
             RUN <<EOF\n#!/bin/sh\necho heredoc > /heredoc.txt\nEOF\n",
        )
        .file("hello", "hi\n")
        .file("ignored.txt", "never\n")
        .file(".dockerignore", "ignored.txt\n");
    let secret = ctx.path().join("..").join(format!(
        "{}.secret",
        ctx.path().file_name().unwrap().to_string_lossy()
    ));
    fs_err::write(&secret, "supersecret").unwrap();
    let sarg = format!("id=tok,src={}", secret.display());
    build(&k, &ctx, &["--secret", &sarg, "-t", "mnt"]);
    let cat = |f: &str| k.ok(&["run", "--rm", "mnt", "cat", f]);
    assert_eq!(cat("/count.txt"), "1\n");
    assert_eq!(cat("/bound.txt"), "from-stage\n");
    assert_eq!(cat("/secret-len.txt"), "11\n");
    assert_eq!(
        cat("/ctx.txt"),
        "Dockerfile\nhello\n",
        "ignored files never reach a bind mount"
    );
    assert_eq!(cat("/tmpfs.txt"), "x\n");
    assert_eq!(cat("/heredoc.txt"), "heredoc\n");
    // Mount points are not part of the image, and neither is the secret.
    let ls = k.run(&[
        "run",
        "--rm",
        "mnt",
        "ls",
        "/run/secrets",
        "/cache",
        "/mnt",
        "/ctx",
        "/scratch",
    ]);
    assert!(!ls.status.success());
    let saved = ctx.path().join("img.tar");
    k.ok(&["save", "-o", saved.to_str().unwrap(), "mnt"]);
    let all = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("mkdir -p {d}/x && tar -xf {s} -C {d}/x && for b in {d}/x/blobs/sha256/*; do (zcat $b 2>/dev/null || cat $b); done | grep -c supersecret", d = ctx.path().display(), s = saved.display()))
        .output()
        .unwrap();
    assert_eq!(text(&all.stdout).trim(), "0", "the secret is in no blob");
    // The cache mount outlives the build: running the step again sees the earlier content.
    build(&k, &ctx, &["--secret", &sarg, "--no-cache", "-t", "mnt"]);
    assert_eq!(cat("/count.txt"), "2\n");
    fs_err::remove_file(&secret).ok();
}

/// A one-file HTTP server on 127.0.0.1 for `ADD <url>`; counts requests.
fn serve_once_per_request(
    body: &'static [u8],
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    (format!("http://{addr}/files/tool.sh"), hits)
}

#[test]
fn add_url_downloads_and_verifies_checksum() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let body: &'static [u8] = b"echo downloaded\n";
    let (url, hits) = serve_once_per_request(body);
    let sum = {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf 'echo downloaded\\n' | sha256sum | cut -d' ' -f1")
            .output()
            .unwrap();
        format!("sha256:{}", text(&out.stdout).trim())
    };
    let ctx = Context::new().file(
        "Dockerfile",
        &format!("FROM busybox\nADD --checksum={sum} {url} /opt/\nRUN sh /opt/tool.sh > /out && stat -c %a /opt/tool.sh >> /out\n"),
    );
    build(&k, &ctx, &["-t", "add"]);
    assert_eq!(
        k.ok(&["run", "--rm", "add", "cat", "/out"]),
        "downloaded\n600\n"
    );
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let again = build(&k, &ctx, &["-t", "add"]);
    assert!(ran(&again).is_empty(), "{again}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "a checksum-pinned URL is not fetched again"
    );

    let bad = Context::new().file(
        "Dockerfile",
        &format!(
            "FROM busybox\nADD --checksum=sha256:{} {url} /opt/\n",
            "0".repeat(64)
        ),
    );
    let err = k.fails(&["build", bad.arg()]);
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn explain_cache_names_the_changed_file_and_build_arg() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox\nARG LEVEL=1\nCOPY conf/ /conf/\nRUN echo level $LEVEL > /level\n",
        )
        .file("conf/a.txt", "a\n")
        .file("conf/b.txt", "b\n");
    k.ok(&["build", ctx.arg()]);
    // Let the stat cache vouch for the files (it skips files changed in the last 100 ms).
    std::thread::sleep(std::time::Duration::from_millis(150));
    k.ok(&["build", ctx.arg()]);
    ctx.write("conf/b.txt", "B\n");
    let out = k.run(&["build", "--explain-cache", ctx.arg()]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Dockerfile:3: [2/3] COPY conf/ /conf/ missed the cache"),
        "{err}"
    );
    assert!(err.contains("conf/b.txt (content changed)"), "{err}");
    assert!(!err.contains("conf/a.txt"), "{err}");
    let out = k.run(&[
        "build",
        "--explain-cache",
        "--build-arg",
        "LEVEL=2",
        ctx.arg(),
    ]);
    let err = text(&out.stderr);
    assert!(
        err.contains("Dockerfile:4: [3/3] RUN echo level 2 > /level missed the cache"),
        "{err}"
    );
    assert!(err.contains("LEVEL=2"), "{err}");
}

#[test]
fn outputs_stdin_dockerfile_iidfile_and_metadata() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file("data.txt", "payload\n");
    let iid = ctx.path().join("iid");
    let meta = ctx.path().join("meta.json");
    let mut child = k
        .command()
        .args([
            "build",
            "-q",
            "-f",
            "-",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
            "-t",
            "out:1",
            ctx.arg(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nCOPY data.txt /data.txt\nRUN echo ran > /ran\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert!(
        id.starts_with("sha256:"),
        "-q prints only the image ID: {id}"
    );
    assert_eq!(fs_err::read_to_string(&iid).unwrap(), id);
    let m: Value = serde_json::from_str(&fs_err::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id.as_str());

    let dest = ctx.path().join("tree");
    let spec = format!("type=local,dest={}", dest.display());
    let df = ctx.path().join("Dockerfile.out");
    fs_err::write(
        &df,
        "FROM busybox\nCOPY data.txt /data.txt\nRUN rm /bin/vi && echo ran > /ran\n",
    )
    .unwrap();
    k.ok(&["build", "-f", df.to_str().unwrap(), "-o", &spec, ctx.arg()]);
    assert_eq!(
        fs_err::read_to_string(dest.join("data.txt")).unwrap(),
        "payload\n"
    );
    assert_eq!(fs_err::read_to_string(dest.join("ran")).unwrap(), "ran\n");
    assert!(dest.join("bin/busybox").exists());
    assert!(
        !dest.join("bin/vi").exists() && fs_err::symlink_metadata(dest.join("bin/vi")).is_err(),
        "whiteouts applied"
    );

    let tar = ctx.path().join("tree.tar");
    let spec = format!("type=tar,dest={}", tar.display());
    k.ok(&["build", "-f", df.to_str().unwrap(), "-o", &spec, ctx.arg()]);
    let list = std::process::Command::new("tar")
        .args(["-tf", tar.to_str().unwrap()])
        .output()
        .unwrap();
    let names = text(&list.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "data.txt"),
        "{names}"
    );

    let err = k.fails(&["build", "--platform", "linux/s390x", ctx.arg()]);
    assert!(err.contains("--platform linux/s390x"), "{err}");
    let err = k.fails(&["build", "-t", "Bad:Name", ctx.arg()]);
    assert!(err.contains("invalid reference"), "{err}");
}

fn mounts_under(root: &std::path::Path) -> usize {
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    let r = root.to_string_lossy().to_string();
    mounts.lines().filter(|l| l.contains(&r)).count()
}

/// A process as `/proc/<pid>/stat` shows it. A pid is reused; pid and start time together name
/// one process.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    parent: u32,
    state: char,
    start: u64,
}

impl Proc {
    /// `None` once the process is gone.
    fn read(pid: u32) -> Option<Proc> {
        let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the parenthesised command name: state (3), ppid (4), starttime (22).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        Some(Proc {
            pid,
            state: fields.first()?.chars().next()?,
            parent: fields.get(1)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
        })
    }

    /// Whether this very process still runs (a zombie does not).
    fn runs(&self) -> bool {
        Proc::read(self.pid).is_some_and(|now| now.start == self.start && now.state != 'Z')
    }

    fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        fs_err::read_link(format!("/proc/{}/ns/pid", self.pid)).ok()
    }

    fn command_line(&self) -> String {
        let raw = fs_err::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        text(&raw).replace('\0', " ").trim_end().to_owned()
    }
}

/// What `kiln` (a pid) runs in its steps' sandboxes: the processes below it in the process tree
/// that are in another PID namespace.
fn sandboxed_processes(kiln: u32) -> Vec<Proc> {
    let all: Vec<Proc> = fs_err::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(Proc::read)
        .collect();
    let Some(own) = Proc::read(kiln).and_then(|p| p.pid_namespace()) else {
        return Vec::new();
    };
    let mut parents = vec![kiln];
    let mut below = Vec::new();
    while let Some(parent) = parents.pop() {
        for p in all.iter().filter(|p| p.parent == parent) {
            parents.push(p.pid);
            below.push(p.clone());
        }
    }
    below
        .into_iter()
        .filter(|p| p.pid_namespace().is_some_and(|ns| ns != own))
        .collect()
}

#[test]
fn a_killed_build_leaves_nothing_the_next_start_does_not_clean() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file("Dockerfile", "FROM busybox\nRUN sleep 30\n");
    let mut child = k
        .command()
        .args(["build", "--progress=plain", ctx.arg()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step's `sleep` runs in its sandbox, note the sandbox's processes (not every
    // `sleep 30` on the machine), then kill kiln outright.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let step = loop {
        let procs = sandboxed_processes(child.id());
        if procs.iter().any(|p| p.command_line() == "sleep 30") {
            break procs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        mounts_under(k.root.path()) > 0,
        "a SIGKILLed kiln cannot clean up after itself"
    );
    assert!(
        step.iter().any(Proc::runs),
        "the step outlives a SIGKILLed kiln: {step:?}"
    );
    // The next kiln start cleans what the killed one left: container, mounts, scratch.
    let ok = Context::new().file("Dockerfile", "FROM busybox\nRUN true\n");
    k.ok(&["build", ok.arg()]);
    assert_eq!(mounts_under(k.root.path()), 0, "leftover mounts");
    let running: Vec<&Proc> = step.iter().filter(|p| p.runs()).collect();
    assert!(
        running.is_empty(),
        "the killed build's step still runs: {running:?}"
    );
    let leftovers: Vec<_> = fs_err::read_dir(k.root.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Regular files (at most 16 MiB: the index too) under `dir` whose content holds `needle`; with `one_fs`, only
/// those on `dir`'s own filesystem (what is on disk, not in a memory mount over it).
fn files_holding(dir: &std::path::Path, needle: &[u8], one_fs: bool) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs_err::symlink_metadata(dir).unwrap().dev();
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs_err::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(md) = fs_err::symlink_metadata(&p) else {
                continue;
            };
            if one_fs && md.dev() != dev {
                continue;
            }
            if md.is_dir() {
                todo.push(p);
            } else if md.is_file()
                && md.len() <= 16 << 20
                && fs_err::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_secret_is_never_on_disk_even_when_kiln_is_killed() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let value = format!(
        "kiln-secret-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s");
    fs_err::write(&file, &value).unwrap();
    let sarg = format!("id=s,src={}", file.display());

    // In a step, the secret is a file in memory, with the mode and owner asked for.
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=secret,id=s,mode=0440,uid=1000,gid=2 sh -c '\\
         stat -c \"%a %u %g\" /run/secrets/s; \\
         grep /run/secrets/s /proc/mounts | cut -d\" \" -f3; \\
         wc -c < /run/secrets/s' > /seen\n",
    );
    build(&k, &ctx, &["--secret", &sarg, "-t", "sec"]);
    assert_eq!(
        k.ok(&["run", "--rm", "sec", "cat", "/seen"]),
        format!("440 1000 2\ntmpfs\n{}\n", value.len())
    );
    let found = files_holding(k.root.path(), value.as_bytes(), false);
    assert!(found.is_empty(), "the secret is in the store: {found:?}");

    // SIGKILL mid-step: the secret was never written to the store's disk, and the next
    // command unmounts the memory that held it.
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=s cat /run/secrets/s > /dev/null && sleep 30\n",
    );
    let mut child = k
        .command()
        .args(["build", "--secret", &sarg, "--progress=plain", ctx.arg()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let step = loop {
        let procs = sandboxed_processes(child.id());
        if procs.iter().any(|p| p.command_line() == "sleep 30") {
            break procs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let on_disk = files_holding(k.root.path(), value.as_bytes(), true);
    assert!(on_disk.is_empty(), "the secret is on disk: {on_disk:?}");
    let in_memory = files_holding(k.root.path(), value.as_bytes(), false);
    assert_eq!(
        in_memory.len(),
        1,
        "a killed kiln cannot unmount: {in_memory:?}"
    );

    k.ok(&["images"]);
    let anywhere = files_holding(k.root.path(), value.as_bytes(), false);
    assert!(
        anywhere.is_empty(),
        "the secret outlives the sweep: {anywhere:?}"
    );
    assert_eq!(mounts_under(k.root.path()), 0, "leftover mounts");
    let tmp: Vec<_> = fs_err::read_dir(k.root.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "leftover scratch: {tmp:?}");
    // The next build stops the orphaned step.
    let ok = Context::new().file("Dockerfile", "FROM busybox\nRUN true\n");
    k.ok(&["build", ok.arg()]);
    assert!(
        !step.iter().any(Proc::runs),
        "the killed build's step still runs"
    );
}

#[test]
fn a_local_export_replaces_what_is_in_the_way() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN mkdir -p /var/log && echo log > /var/log/x && echo file > /data\n",
    );
    let dest = ctx.path().join("out");
    // A file where the image has a directory, a directory where it has a file.
    fs_err::create_dir_all(dest.join("data/inner")).unwrap();
    fs_err::write(dest.join("data/inner/old"), "old").unwrap();
    fs_err::write(dest.join("var"), "stale").unwrap();
    fs_err::write(dest.join("mine"), "kept").unwrap();
    let spec = format!("type=local,dest={}", dest.display());
    k.ok(&["build", "-o", &spec, ctx.arg()]);
    assert_eq!(
        fs_err::read_to_string(dest.join("var/log/x")).unwrap(),
        "log\n"
    );
    assert_eq!(fs_err::read_to_string(dest.join("data")).unwrap(), "file\n");
    assert!(dest.join("bin/busybox").is_file());
    assert_eq!(fs_err::read_to_string(dest.join("mine")).unwrap(), "kept");
    // Again over the result: nothing in the way, same tree.
    k.ok(&["build", "-o", &spec, ctx.arg()]);
    assert_eq!(
        fs_err::read_to_string(dest.join("var/log/x")).unwrap(),
        "log\n"
    );
}

// BuildKit's semantics at the edges (issue #12, part 2): each test follows one of BuildKit's
// frontend integration tests (named in its doc comment) and asserts what BuildKit does.

/// Makes `name` (a tar, gzipped when it ends in `.gz`) in the context from `files`.
fn tar_in(ctx: &Context, name: &str, files: &[(&str, &str)]) {
    let staging = ctx.path().join(format!(".{name}.d"));
    for (path, content) in files {
        let p = staging.join(path);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(p, content).unwrap();
    }
    let flags = if name.ends_with(".gz") { "-czf" } else { "-cf" };
    let names: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    let out = std::process::Command::new("tar")
        .arg(flags)
        .arg(ctx.path().join(name))
        .arg("-C")
        .arg(&staging)
        .args(&names)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", text(&out.stderr));
    fs_err::remove_dir_all(&staging).unwrap();
}

/// `kiln inspect` of `image` as JSON.
fn inspect(k: &Kiln, image: &str) -> Value {
    let out = k.ok(&["inspect", image]);
    let v: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    match v {
        Value::Array(mut a) if !a.is_empty() => a.remove(0),
        v => v,
    }
}

/// dockerfile_args_test.go testBuiltinArgs: a proxy build arg reaches RUN without an ARG, in
/// both cases, is in neither the image config nor its history, and a new proxy value still hits
/// the cache.
#[test]
fn proxy_build_args_reach_run_and_stay_out_of_the_image() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nARG FOO\nRUN echo -n \"$HTTP_PROXY::$http_proxy::$NO_PROXY::$FOO\" > /out\n",
    );
    build(
        &k,
        &ctx,
        &[
            "--build-arg",
            "http_proxy=hpvalue",
            "--build-arg",
            "NO_PROXY=npvalue",
            "--build-arg",
            "FOO=foo",
            "-t",
            "proxy",
        ],
    );
    assert_eq!(
        k.ok(&["run", "--rm", "proxy", "cat", "/out"]),
        "hpvalue::hpvalue::npvalue::foo"
    );
    let image = inspect(&k, "proxy").to_string();
    assert!(!image.contains("hpvalue"), "{image}");
    assert!(!image.contains("npvalue"), "{image}");
    let history = k.ok(&["history", "--no-trunc", "proxy"]);
    assert!(!history.contains("hpvalue"), "{history}");
    let again = build(
        &k,
        &ctx,
        &[
            "--build-arg",
            "http_proxy=hpvalue2",
            "--build-arg",
            "FOO=foo",
            "-t",
            "proxy",
        ],
    );
    assert!(
        ran(&again).is_empty(),
        "a new proxy is a cache hit: {again}"
    );
}

/// dockerfile_core_test.go testDockerfileLowercase: `dockerfile` is read when `Dockerfile` is
/// absent.
#[test]
fn lowercase_dockerfile_is_read_when_dockerfile_is_absent() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file("dockerfile", "FROM busybox\nLABEL from=lowercase\n");
    build(&k, &ctx, &["-t", "lower"]);
    assert_eq!(
        inspect(&k, "lower")["Config"]["Labels"]["from"],
        "lowercase",
        "{}",
        inspect(&k, "lower")
    );
    let both = Context::new()
        .file("dockerfile", "FROM busybox\nLABEL from=lowercase\n")
        .file("Dockerfile", "FROM busybox\nLABEL from=capital\n");
    build(&k, &both, &["-t", "both"]);
    assert_eq!(inspect(&k, "both")["Config"]["Labels"]["from"], "capital");
    let none = Context::new().file("Containerfile", "FROM busybox\n");
    let err = k.fails(&["build", none.arg()]);
    assert!(err.contains("Dockerfile: no such file"), "{err}");
}

/// dockerfile_add_test.go testDockerfileAddArchive: ADD unpacks a local archive, not with
/// `--unpack=false`, and a URL's archive only with `--unpack=true`.
#[test]
fn add_unpack_true_and_false() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nADD t.tar.gz /a/\nADD --unpack=false t.tar.gz /b/\nADD --unpack=true t.tar.gz /c/\n\
         RUN set -e; [ \"$(cat /a/foo)\" = content ]; [ -f /b/t.tar.gz ]; [ ! -e /b/foo ]; \
         [ \"$(cat /c/foo)\" = content ]\n",
    );
    tar_in(&ctx, "t.tar.gz", &[("foo", "content")]);
    build(&k, &ctx, &[]);

    let gz = ctx.path().join("t.tar.gz");
    let body: &'static [u8] = Box::leak(fs_err::read(&gz).unwrap().into_boxed_slice());
    let (url, _) = serve_once_per_request(body);
    let remote = Context::new().file(
        "Dockerfile",
        &format!(
            "FROM busybox\nADD {url} /plain/\nADD --unpack=true {url} /dest/\n\
             RUN set -e; [ -f /plain/tool.sh ]; [ \"$(cat /dest/foo)\" = content ]\n"
        ),
    );
    build(&k, &remote, &[]);
}

/// dockerfile_mount_test.go testCacheMountUser: a new cache directory gets the mount's uid, gid
/// and mode.
#[test]
fn cache_mount_uid_gid_and_mode_apply_to_the_cache_directory() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/mycache,uid=1001,gid=1002,mode=0751 \
         [ \"$(stat -c '%u %g %f' /mycache)\" = '1001 1002 41e9' ]\n\
         RUN --mount=type=cache,id=locked,target=/l,sharing=private,uid=7,gid=8,mode=0700 \
         [ \"$(stat -c '%u %g %a' /l)\" = '7 8 700' ]\n",
    );
    build(&k, &ctx, &[]);
}

/// dockerfile_copy_test.go testCopyChmod and testCopyChownExistingDir: `--chmod` applies to
/// the parent directories COPY creates; without `--chown` a created destination directory is
/// 0:0 while the copied entries keep their owners, and an existing directory keeps its owner.
#[test]
fn copy_chmod_on_created_parents_and_owner_of_created_destination() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox AS source\n\
             RUN touch /file && chown 100:200 /file && mkdir -p /dir/subdir && \
             touch /dir/subdir/nested && chown 100:200 /dir && chown 101:201 /dir/subdir && \
             chown 102:202 /dir/subdir/nested\n\
             FROM busybox\n\
             RUN mkdir -p /existing && chown 500:600 /existing\n\
             COPY --chmod=0644 foo /\n\
             COPY --chmod=777 foo /parent/foo\n\
             COPY --chmod=770 foo /parent/sub/foo\n\
             COPY --from=source /file /\n\
             COPY --from=source /dir /dir\n\
             COPY --from=source /dir/. /existing\n\
             COPY --from=source --chown=300:400 /dir /chowned\n\
             RUN stat -c '%n %04a' /foo /parent /parent/sub /parent/sub/foo > /modes && \
             stat -c '%n %u:%g' /file /dir /dir/subdir /dir/subdir/nested /existing \
             /existing/subdir /chowned /chowned/subdir > /owners\n",
        )
        .file("foo", "foo-contents");
    build(&k, &ctx, &["-t", "chmod"]);
    assert_eq!(
        k.ok(&["run", "--rm", "chmod", "cat", "/modes"]),
        "/foo 0644\n/parent 0777\n/parent/sub 0770\n/parent/sub/foo 0770\n"
    );
    assert_eq!(
        k.ok(&["run", "--rm", "chmod", "cat", "/owners"]),
        "/file 100:200\n/dir 0:0\n/dir/subdir 101:201\n/dir/subdir/nested 102:202\n\
         /existing 500:600\n/existing/subdir 101:201\n/chowned 300:400\n/chowned/subdir 300:400\n"
    );
}

/// dockerfile_parents_test.go testCopyParents and testCopyRelativeParents: `--parents` keeps
/// the source's path below the `./` pivot (the first one), and works with wildcards, `**` and
/// several sources.
#[test]
fn copy_parents_with_pivot_wildcards_and_several_sources() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox AS base\nWORKDIR /test\n\
             RUN mkdir -p a/b/c/d/e a/b2/c/d/e a/b/c2/d/e a/b/c2/d/e2 && touch a/b/c/d/foo \
             a/b/c/d/e/bay a/b2/c/d/e/bar a/b/c2/d/e/baz a/b/c2/d/e2/baz\n\
             FROM busybox\n\
             COPY --parents ./a/./b/c /ctx/\n\
             COPY --parents foo1/foo2/ba* /glob/\n\
             COPY --from=base --parents /test/a/b/./c/d /middle/\n\
             COPY --from=base --parents /test/a/b/c/d/. /end/\n\
             COPY --from=base --parents ./test/a/b/c/d /start/\n\
             COPY --from=base --parents /test/a/./b/./c /double/\n\
             COPY --from=base --parents /test/a/./*/c /wildcard/\n\
             COPY --from=base --parents /test/a/b*/./c/**/e /doublewildcard/\n\
             COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /inputs/\n\
             RUN <<EOF\nset -ex\n\
             [ \"$(cat /ctx/b/c)\" = bc ]; [ ! -e /ctx/a ]\n\
             [ -f /glob/foo1/foo2/bar ]; [ -f /glob/foo1/foo2/baz ]\n\
             [ -d /middle/c/d/e ]; [ -f /middle/c/d/foo ]; [ ! -d /middle/a ]; [ ! -d /middle/e ]\n\
             [ -d /end/test/a/b/c/d/e ]; [ -f /end/test/a/b/c/d/foo ]\n\
             [ -d /start/test/a/b/c/d/e ]; [ -f /start/test/a/b/c/d/foo ]\n\
             [ -d /double/b/c/d/e ]; [ -f /double/b/c/d/foo ]\n\
             [ -d /wildcard/b/c/d/e ]; [ -f /wildcard/b2/c/d/e/bar ]\n\
             [ -d /doublewildcard/c/d/e ]; [ -f /doublewildcard/c/d/e/bay ]; [ -f /doublewildcard/c/d/e/bar ]\n\
             [ -f /inputs/d/e/baz ]; [ ! -f /inputs/d/e/bay ]; [ -f /inputs/d/e2/baz ]; [ -f /inputs/c/d/e/bar ]\n\
             EOF\n",
        )
        .file("a/b/c", "bc")
        .file("foo1/foo2/bar", "testing")
        .file("foo1/foo2/baz", "testing2");
    build(&k, &ctx, &[]);
}

/// dockerfile_add_test.go testDockerfileAddArchiveWildcard and exclude_patterns_test.go
/// testExcludedFilesOnCopy: one ADD source that matches several archives or directories
/// unpacks or copies each into a destination without a trailing slash.
#[test]
fn add_several_archives_and_directories_by_wildcard() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox\nADD *.tar /dest\n\
             ADD --exclude=*.mp* --exclude=*.png dir* /5\n\
             ADD --exclude=* dir* /6\n\
             RUN <<EOF\nset -ex\n\
             [ \"$(cat /dest/foo)\" = content0 ]; [ \"$(cat /dest/bar)\" = content1 ]\n\
             [ \"$(cat /5/file-102.txt)\" = 3 ]; [ ! -e /5/file-101.png ]; [ ! -e /5/file-301.mp3 ]\n\
             [ ! -e /5/file-302.mpeg ]; [ \"$(cat /5/file-401.txt)\" = 11 ]; [ ! -e /5/dir1 ]\n\
             [ -d /6 ]; [ -z \"$(ls -A /6)\" ]\n\
             EOF\n",
        )
        .file("dir1/file-101.png", "2")
        .file("dir1/file-102.txt", "3")
        .file("dir3/file-301.mp3", "9")
        .file("dir3/file-302.mpeg", "10")
        .file("dir4/file-401.txt", "11");
    tar_in(&ctx, "t.tar", &[("foo", "content0")]);
    tar_in(&ctx, "b.tar", &[("bar", "content1")]);
    build(&k, &ctx, &[]);
}

/// dockerfile_core_test.go testUserAdditionalGids (containerd's CVE-2023-25173 fix): the
/// process gets the supplementary groups of /etc/group, its primary group included.
#[test]
fn run_gets_supplementary_groups_including_the_primary_group() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\
         RUN echo 'daemon:x:1:1:daemon:/:/bin/false' >> /etc/passwd && \
         printf 'root:x:0:\\ndaemon:x:1:\\nwheel:x:10:root\\n' > /etc/group\n\
         RUN [ \"$(id)\" = 'uid=0(root) gid=0(root) groups=0(root),10(wheel)' ]\n\
         USER 1234\n\
         RUN [ \"$(id)\" = 'uid=1234 gid=0(root) groups=0(root)' ]\n\
         USER 1234:1234\n\
         RUN [ \"$(id)\" = 'uid=1234 gid=1234 groups=1234' ]\n\
         USER daemon\n\
         RUN [ \"$(id)\" = 'uid=1(daemon) gid=1(daemon) groups=1(daemon)' ]\n",
    );
    build(&k, &ctx, &[]);
}
