//! Issue 14: the store's disk as docker shows and reclaims it (`system df`, the prunes,
//! volumes), the automatic GC after a build, and prunes that never take what a running kiln
//! uses.

use crate::support::{Context, Kiln, build, ran, sandbox_available, text};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `du` of the store in bytes (disk blocks, as `system df` counts them).
fn du(k: &Kiln) -> u64 {
    let out = Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(k.root.path())
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// docker's sizes back to bytes (`12.4MB`).
fn bytes(s: &str) -> f64 {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap();
    n * match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other}"),
    }
}

/// The SIZE column of each row of `system df`.
fn df_sizes(k: &Kiln) -> Vec<(String, f64)> {
    k.ok(&["system", "df"])
        .lines()
        .skip(1)
        .map(|l| {
            let (name, rest) = l.split_at(16);
            let size = rest.split_whitespace().nth(2).unwrap();
            (name.trim().to_owned(), bytes(size))
        })
        .collect()
}

fn changing_builds(k: &Kiln, n: usize) -> Context {
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nCOPY data /data\nRUN wc -c /data > /size\n",
    );
    for i in 0..n {
        // 300 kB that differ every time, as a copied file that changes per commit.
        let data: String = (0..30_000)
            .map(|j| format!("{:09}\n", i * 1_000_003 + j))
            .collect();
        ctx.write("data", &data);
        build(k, &ctx, &["-t", "app:latest"]);
    }
    ctx
}

#[test]
fn system_df_adds_up_to_du_and_system_prune_gives_the_disk_back() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    changing_builds(&k, 6);
    let before = du(&k);
    let rows = df_sizes(&k);
    let total: f64 = rows.iter().map(|(_, s)| s).sum();
    let diff = (total - before as f64).abs() / before as f64;
    assert!(
        diff < 0.01,
        "system df sums to {total}, du says {before} ({:.2}%): {rows:?}",
        diff * 100.0
    );
    let df = k.ok(&["system", "df"]);
    assert!(
        df.contains("Images          7"),
        "six app images and busybox: {df}"
    );

    // Without -f and no answer on stdin, nothing is removed.
    let images = k.ok(&["images", "-q"]);
    let out = k.run(&["system", "prune", "-a"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("Are you sure you want to continue? [y/N]"));
    assert_eq!(k.ok(&["images", "-q"]), images);

    let out = k.ok(&["system", "prune", "-af"]);
    assert!(out.contains("Deleted Images:"), "{out}");
    assert!(out.contains("Deleted build cache objects:"), "{out}");
    let reclaimed = out.lines().last().unwrap().to_owned();
    assert!(reclaimed.starts_with("Total reclaimed space: "), "{out}");
    let after = du(&k);
    assert!(
        after * 10 < before,
        "{before} bytes before, {after} after ({reclaimed})"
    );
    let freed = bytes(reclaimed.trim_start_matches("Total reclaimed space: "));
    assert!(
        (freed - (before - after) as f64).abs() / freed < 0.05,
        "{reclaimed} but du went from {before} to {after}"
    );
    assert!(k.ok(&["images", "-q"]).is_empty());
}

#[test]
fn builder_prune_keeps_what_images_use_unless_all_and_honours_its_filters() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = changing_builds(&k, 3);
    // Dangling build cache only: the current image's steps stay cached.
    let out = k.ok(&["builder", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    let again = build(&k, &ctx, &["-t", "app:latest"]);
    assert!(ran(&again).is_empty(), "still cached: {:?}", ran(&again));

    // Nothing has gone unused for an hour yet.
    let out = k.ok(&["builder", "prune", "-af", "--filter", "until=1h"]);
    assert!(!out.contains("Deleted build cache objects"), "{out}");
    let err = k.fails(&["builder", "prune", "-af", "--filter", "until=soon"]);
    assert!(err.contains("until=soon"), "{err}");

    // -a: every record goes; the next build runs its steps again.
    let out = k.ok(&["builder", "prune", "-af"]);
    assert!(out.contains("Deleted build cache objects:"), "{out}");
    let rebuilt = build(&k, &ctx, &["-t", "app:latest"]);
    assert!(!ran(&rebuilt).is_empty(), "{rebuilt}");
    assert_eq!(
        k.ok(&["run", "--rm", "app:latest", "cat", "/size"]),
        "300000 /data\n"
    );
}

#[test]
fn a_build_trims_the_build_cache_to_its_budget_least_recently_used_first() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = changing_builds(&k, 8);
    let cache = |k: &Kiln| {
        df_sizes(k)
            .into_iter()
            .find(|(n, _)| n == "Build Cache")
            .unwrap()
            .1
    };
    let before = cache(&k);
    ctx.write("data", "small\n");
    let out = k.run(&[
        "build",
        "--gc-keep-storage",
        "3MB",
        "-t",
        "app:latest",
        ctx.arg(),
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("build cache over its 3.00MB budget"), "{err}");
    let after = cache(&k);
    assert!(after <= 3e6 && after < before * 0.75, "{before} → {after}");
    // The newest build's steps were used last: they survive, so it is still cached.
    let again = build(&k, &ctx, &["-t", "app:latest"]);
    assert!(ran(&again).is_empty(), "{:?}", ran(&again));
    // A budget in the store's config file works the same; a bad one is an error.
    fs_err::write(
        k.root.path().join("config.json"),
        r#"{"gc":{"keepStorage":"lots"}}"#,
    )
    .unwrap();
    let err = k.fails(&["build", "-t", "app:latest", ctx.arg()]);
    assert!(err.contains("gc.keepStorage"), "{err}");
}

#[test]
fn volumes_are_created_listed_inspected_and_kept_while_a_container_uses_them() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    assert_eq!(k.ok(&["volume", "create", "data"]), "data\n");
    let err = k.fails(&["volume", "create", "bad/name"]);
    assert!(err.contains("invalid characters"), "{err}");
    k.ok(&["volume", "create", "spare"]);
    k.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    let ls = k.ok(&["volume", "ls", "-q"]);
    assert_eq!(ls, "data\nspare\n");
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["volume", "inspect", "data"])).unwrap();
    assert_eq!(v[0]["UsageData"]["RefCount"], 1);
    let err = k.fails(&["volume", "rm", "data"]);
    assert!(err.contains("volume is in use"), "{err}");
    let out = k.ok(&["volume", "prune", "-f"]);
    assert!(out.contains("Deleted Volumes:\nspare\n"), "{out}");
    assert_eq!(k.ok(&["volume", "ls", "-q"]), "data\n");
    k.ok(&["rm", "-f", "user"]);
    // Stopped containers go with container prune, then the volume is free.
    k.ok(&["run", "--name", "done", "busybox", "true"]);
    let out = k.ok(&["container", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert_eq!(k.ok(&["volume", "rm", "data"]), "data\n");
}

#[test]
fn a_prune_waits_for_running_builds_and_a_killed_prune_leaves_a_working_store() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN sleep 2 && echo slow > /slow\nRUN cat /slow > /copy\n",
    );
    let mut builds: Vec<_> = (0..2)
        .map(|i| {
            k.command()
                .args(["build", "-t", &format!("slow:{i}"), "--no-cache", ctx.arg()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // And a foreground run of an image the prune would otherwise remove nothing of, but
    // whose snapshot it must not take while mounted.
    let run = k
        .command()
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "sleep 2; cat /bin/busybox > /dev/null && echo ran",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let prune = k.run(&["builder", "prune", "-af"]);
    assert!(prune.status.success(), "{}", text(&prune.stderr));
    assert!(
        text(&prune.stderr).contains("waiting for the other kiln processes"),
        "{}",
        text(&prune.stderr)
    );
    for b in builds.iter_mut() {
        let st = b.wait().unwrap();
        assert!(st.success());
    }
    let ran = run.wait_with_output().unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert_eq!(text(&ran.stdout), "ran\n");
    for i in 0..2 {
        assert_eq!(
            k.ok(&["run", "--rm", &format!("slow:{i}"), "cat", "/copy"]),
            "slow\n"
        );
    }

    // SIGKILL a prune at several points: the next commands work and a build reuses or
    // rebuilds cleanly.
    for delay in [0u64, 5, 20, 60] {
        changing_builds(&k, 1);
        let mut p = k
            .command()
            .args(["builder", "prune", "-af"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = p.kill();
        let _ = p.wait();
        k.ok(&["system", "df"]);
    }
    let ctx2 = Context::new().file("Dockerfile", "FROM busybox\nRUN echo ok > /ok\n");
    build(&k, &ctx2, &["-t", "ok:1"]);
    k.ok(&["builder", "prune", "-af"]);
    build(&k, &ctx2, &["-t", "ok:2"]);
    assert_eq!(k.ok(&["run", "--rm", "ok:1", "cat", "/ok"]), "ok\n");
}
