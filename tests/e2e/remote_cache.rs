//! Issue 6: a build cache shared through a real registry, two stores standing in for two
//! machines.

use crate::support::{Context, Kiln, Registry, build, ran, sandbox_available, text};
use serde_json::Value;

fn image_id(k: &Kiln, name: &str) -> String {
    let v: Value = serde_json::from_str(&k.ok(&["inspect", name])).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

struct Setup {
    reg: Registry,
    a: Kiln,
    ctx: Context,
}

fn setup() -> Option<Setup> {
    if !sandbox_available() {
        return None;
    }
    let reg = Registry::start()?;
    let a = Kiln::with_busybox();
    let base = format!("{}/kiln/busybox:latest", reg.host());
    a.ok(&["tag", "busybox:latest", &base]);
    a.ok(&["push", &base]);
    let ctx = Context::new()
        .file(
            "Dockerfile",
            &format!(
                "FROM {base} AS builder\nWORKDIR /src\nCOPY src/ ./\nRUN cat a.txt b.txt > /out.txt\n\n\
                 FROM {base}\nCOPY --from=builder /out.txt /out.txt\nCOPY extra.txt /extra.txt\nRUN wc -c /out.txt > /size.txt\n"
            ),
        )
        .file("src/a.txt", "a\n")
        .file("src/b.txt", "b\n")
        .file("extra.txt", "extra\n");
    Some(Setup { reg, a, ctx })
}

#[test]
fn second_store_builds_everything_from_the_registry_cache() {
    let Some(Setup { reg, a, ctx }) = setup() else {
        return;
    };
    let cache = format!("type=registry,ref={}/kiln/cache:main,mode=max", reg.host());
    let from = format!("type=registry,ref={}/kiln/cache:main", reg.host());
    let first = build(&a, &ctx, &["--cache-to", &cache, "-t", "app:1"]);
    assert!(
        ran(&first).iter().any(|n| n.contains("RUN cat a.txt")),
        "{first}"
    );
    let id_a = image_id(&a, "app:1");

    let b = Kiln::empty();
    let out = build(&b, &ctx, &["--cache-from", &from, "-t", "app:1"]);
    assert!(
        ran(&out).is_empty(),
        "every step comes from the remote cache: {:?}\n{out}",
        ran(&out)
    );
    assert_eq!(image_id(&b, "app:1"), id_a, "same image ID on both stores");
    // The base was resolved without its layers; the image output needed them, so it is now
    // an image of store B, as if pulled.
    assert!(
        b.ok(&["images"]).contains("kiln/busybox"),
        "{}",
        b.ok(&["images"])
    );
    assert_eq!(b.ok(&["run", "--rm", "app:1", "cat", "/out.txt"]), "a\nb\n");

    // One edited file: only its COPY and what follows run again.
    ctx.write("extra.txt", "changed\n");
    let edited = build(&b, &ctx, &["--cache-from", &from, "-t", "app:2"]);
    let r = ran(&edited);
    assert!(r.iter().any(|n| n.contains("COPY extra.txt")), "{r:?}");
    assert!(r.iter().any(|n| n.contains("RUN wc -c")), "{r:?}");
    assert!(
        !r.iter().any(|n| n.contains("RUN cat a.txt")),
        "the builder stays cached: {r:?}"
    );
}

#[test]
fn min_mode_does_not_serve_the_builder_stage_max_does() {
    let Some(Setup { reg, a, ctx }) = setup() else {
        return;
    };
    for mode in ["min", "max"] {
        let cache = format!(
            "type=registry,ref={}/kiln/cache:{mode},mode={mode}",
            reg.host()
        );
        build(&a, &ctx, &["--cache-to", &cache, "-t", "app:1"]);
    }
    // The builder stage's own steps: only a max export has records for them.
    let b = Kiln::empty();
    let from_min = format!("type=registry,ref={}/kiln/cache:min", reg.host());
    let out = build(
        &b,
        &ctx,
        &["--cache-from", &from_min, "--target", "builder"],
    );
    assert!(
        ran(&out).iter().any(|n| n.contains("RUN cat a.txt")),
        "min has no builder records: {out}"
    );
    let c = Kiln::empty();
    let from_max = format!("type=registry,ref={}/kiln/cache:max", reg.host());
    let out = build(
        &c,
        &ctx,
        &["--cache-from", &from_max, "--target", "builder"],
    );
    assert!(ran(&out).is_empty(), "max serves the builder: {out}");
}

#[test]
fn broken_or_missing_cache_refs_are_warnings() {
    let Some(Setup { reg, a, ctx }) = setup() else {
        return;
    };
    let missing = format!("type=registry,ref={}/kiln/nothing:here", reg.host());
    let not_a_cache = format!("type=registry,ref={}/kiln/busybox:latest", reg.host());
    let out = a.run(&[
        "build",
        "--cache-from",
        &missing,
        "--cache-from",
        &not_a_cache,
        "--cache-from",
        "type=local,src=/nonexistent/dir",
        ctx.arg(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.matches("warning: --cache-from").count() >= 3, "{err}");
}

#[test]
fn local_directory_cache_round_trip() {
    let Some(Setup { reg: _reg, a, ctx }) = setup() else {
        return;
    };
    let dir = ctx.path().join("..").join(format!(
        "{}-cache",
        ctx.path().file_name().unwrap().to_string_lossy()
    ));
    let to = format!("type=local,dest={},mode=max", dir.display());
    let from = format!("type=local,src={}", dir.display());
    build(&a, &ctx, &["--cache-to", &to]);
    let b = Kiln::empty();
    let out = build(&b, &ctx, &["--cache-from", &from]);
    assert!(ran(&out).is_empty(), "{out}");
    fs_err::remove_dir_all(&dir).ok();
}

/// The `pushed NAME DIGEST (…)` line of a push, as (digest, the rest).
fn pushed_line(stderr: &str, name: &str) -> (String, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("pushed {name} ")))
        .unwrap_or_else(|| panic!("no push of {name}:\n{stderr}"));
    let rest = &line[format!("pushed {name} ").len()..];
    let (digest, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    (digest.to_string(), tail.to_string())
}

#[test]
fn push_only_build_mounts_cached_layers_without_downloading_them() {
    let Some(Setup { reg, a, ctx }) = setup() else {
        return;
    };
    let cache = format!("type=registry,ref={}/kiln/cache:push,mode=max", reg.host());
    let from = format!("type=registry,ref={}/kiln/cache:push", reg.host());
    let app_a = format!("{}/kiln/app:a", reg.host());
    let out = build(&a, &ctx, &["--cache-to", &cache, "--push", "-t", &app_a]);
    let (digest_a, _) = pushed_line(&out, &app_a);

    // An empty store, only a registry output, in another repository than the cache's.
    let b = Kiln::empty();
    let app_b = format!("{}/kiln/other:b", reg.host());
    let out = build(
        &b,
        &ctx,
        &[
            "--cache-from",
            &from,
            "--output",
            &format!("type=registry,name={app_b}"),
        ],
    );
    assert!(ran(&out).is_empty(), "all cached: {:?}\n{out}", ran(&out));
    let (digest_b, counts) = pushed_line(&out, &app_b);
    assert_eq!(digest_b, digest_a, "the same manifest as store A pushed");
    // Only the config travels; every layer is mounted from the cache's repository.
    assert!(counts.starts_with("(1 blobs uploaded, "), "{counts}");
    assert!(!counts.contains(" 0 mounted"), "{counts}");

    // The registry serves the image, and store B never downloaded a layer of it.
    let raw = match std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{app_b}"))
        .output()
    {
        Ok(raw) => raw,
        Err(_) if std::env::var_os("KILN_REQUIRE_ALL").is_none() => return,
        Err(e) => panic!("skopeo missing ({e}): apt-get install skopeo"),
    };
    assert!(raw.status.success(), "{}", text(&raw.stderr));
    let manifest: Value = serde_json::from_slice(&raw.stdout).expect("manifest json");
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(layers.len() >= 2, "{manifest}");
    for l in layers {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            !b.root.path().join("blobs/sha256").join(hex).exists(),
            "layer {hex} was downloaded"
        );
    }
    // Not an image of store B: it only went to the registry.
    assert!(!b.ok(&["images"]).contains("kiln/other"));
}

/// Issue 17: `RUN --mount=type=cache` directories travel with `--cache-to …,cache-mounts=true`
/// and are restored by `--cache-from` on another store before the steps that use them; an
/// unchanged cache mount uploads nothing the next time.
#[test]
fn cache_mounts_travel_through_the_registry() {
    let Some(Setup { reg, a, .. }) = setup() else {
        return;
    };
    let base = format!("{}/kiln/busybox:latest", reg.host());
    let fill = Context::new().file(
        "Dockerfile",
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,id=deps,target=/cache \
             mkdir -p /cache/pkgs && echo downloaded-once > /cache/pkgs/dep.txt && echo built > /built\n"
        ),
    );
    let cache = format!(
        "type=registry,ref={}/kiln/mounts:main,mode=max,cache-mounts=true",
        reg.host()
    );
    let first = build(&a, &fill, &["--cache-to", &cache, "-t", "fill:1"]);
    assert!(first.contains("exported"), "{first}");

    // Another machine: a different step (so nothing is cached) reading the same cache id.
    let b = Kiln::empty();
    let read = Context::new().file(
        "Dockerfile",
        &format!(
            "FROM {base}\n\
             RUN --mount=type=cache,id=deps,target=/cache cat /cache/pkgs/dep.txt > /found\n"
        ),
    );
    let from = format!("type=registry,ref={}/kiln/mounts:main", reg.host());
    build(&b, &read, &["--cache-from", &from, "-t", "read:1"]);
    assert_eq!(
        b.ok(&["run", "--rm", "read:1", "cat", "/found"]),
        "downloaded-once\n"
    );

    // Without cache-mounts= an export carries none: a third store finds nothing.
    let plain = format!(
        "type=registry,ref={}/kiln/mounts:plain,mode=max",
        reg.host()
    );
    build(&a, &fill, &["--cache-to", &plain, "-t", "fill:2"]);
    let c = Kiln::empty();
    let from_plain = format!("type=registry,ref={}/kiln/mounts:plain", reg.host());
    let out = c.run(&[
        "build",
        "--cache-from",
        &from_plain,
        "-t",
        "read:2",
        read.arg(),
    ]);
    assert!(!out.status.success(), "the cache file must be absent");

    // Exporting again from a step that only reads the mount: its blob is already in the
    // registry (2 already there: the base layer and the mount; the new RUN layer and the
    // cache config are uploaded).
    let again = build(&a, &read, &["--cache-to", &cache, "-t", "read:a"]);
    let line = again
        .lines()
        .find(|l| l.contains("exported"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("3 layers: 2 uploaded, 2 already there"),
        "{again}"
    );
}
