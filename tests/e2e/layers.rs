//! Layers: reproducible by default (the build's epoch), compression of layers leaving the
//! machine, and layer bytes that do not depend on `--jobs`.

use crate::support::{Context, Kiln, sandbox_available, text};
use serde_json::Value;
use std::process::Command;

const DOCKERFILE: &str = "FROM busybox\nCOPY a.txt /a.txt\nCOPY dir /dir\nRUN echo hello > /made && mkdir -p /d/e && touch /d/e/f && date > /date-free-marker && rm /date-free-marker\n";

fn context() -> Context {
    Context::new()
        .file("Dockerfile", DOCKERFILE)
        .file("a.txt", "a\n")
        .file("dir/one", "1\n")
        .file("dir/sub/two", "2\n")
}

/// `kiln build -q` with `extra`, returning the image ID.
fn image_id(k: &Kiln, ctx: &Context, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = k.command();
    c.arg("build").arg("-q").args(extra).arg(ctx.arg());
    c.env_remove("SOURCE_DATE_EPOCH");
    for (key, v) in env {
        c.env(key, v);
    }
    let out = c.output().expect("spawn kiln");
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// [`image_id`] of a build whose layer writer logs at debug level, with that log.
fn image_id_logged(k: &Kiln, ctx: &Context) -> (String, String) {
    let mut c = k.command();
    c.arg("build").arg("-q").arg(ctx.arg());
    c.env_remove("SOURCE_DATE_EPOCH");
    c.env("KILN_LOG", "kiln_cache::layer=debug");
    let out = c.output().expect("spawn kiln");
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    (text(&out.stdout).trim().to_string(), text(&out.stderr))
}

/// Whether a build's debug log says a stacked layer was written from its snapshot's tar
/// index (not by walking the whole tree again).
fn written_from_index(log: &str) -> bool {
    log.lines().any(|l| {
        l.contains("layer: writing")
            && l.split("from_index=")
                .nth(1)
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > 0)
    })
}

fn created(k: &Kiln, image: &str) -> String {
    let out = k.ok(&["inspect", image]);
    let v: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    let v = match v {
        Value::Array(mut a) if !a.is_empty() => a.remove(0),
        v => v,
    };
    v["Created"]
        .as_str()
        .or_else(|| v["created"].as_str())
        .unwrap_or_else(|| panic!("no Created in {v}"))
        .to_string()
}

/// `path mtime` of every entry of the image's flattened filesystem under `under`.
fn mtimes(k: &Kiln, ctx: &Context, extra: &[&str], env: &[(&str, &str)]) -> Vec<(String, i64)> {
    let dest = ctx.path().join("../flat.tar");
    let out_arg = format!("type=tar,dest={}", dest.display());
    let mut args = vec!["--output", out_arg.as_str()];
    args.extend_from_slice(extra);
    image_id(k, ctx, &args, env);
    let out = Command::new("tar")
        .args([
            "--list",
            "--verbose",
            "--full-time",
            "--numeric-owner",
            "-f",
        ])
        .arg(&dest)
        .env("TZ", "UTC")
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar: {}", text(&out.stderr));
    fs_err::remove_file(&dest).unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // perms owner size date time name...
            let when = format!("{}T{}Z", f.get(3)?, f.get(4)?);
            let name = f.get(5)?.trim_start_matches("./").to_string();
            let secs = Command::new("date")
                .args(["-u", "-d", &when, "+%s"])
                .output()
                .ok()?;
            Some((name, text(&secs.stdout).trim().parse().ok()?))
        })
        .filter(|(n, _)| ["made", "a.txt", "dir/", "dir/sub/two", "d/e/f"].contains(&n.as_str()))
        .collect()
}

#[test]
fn same_inputs_give_the_same_image_id_across_stores_times_and_jobs() {
    if !sandbox_available() {
        return;
    }
    let ctx = context();
    let one = Kiln::with_busybox();
    let a = image_id(&one, &ctx, &["--jobs", "1"], &[]);
    // Another store, a second later, with the context's files touched (a new checkout) and
    // another --jobs: nothing of that reaches the image.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let now = std::time::SystemTime::now();
    for f in ["a.txt", "dir/one", "dir/sub/two", "Dockerfile"] {
        fs_err::File::options()
            .append(true)
            .open(ctx.path().join(f))
            .unwrap()
            .set_modified(now)
            .unwrap();
    }
    let two = Kiln::with_busybox();
    let b = image_id(&two, &ctx, &["--jobs", "4"], &[]);
    assert_eq!(a, b, "two empty stores built different images");
    assert_eq!(created(&two, &b), "1970-01-01T00:00:00Z");
    // Every file time in the new layers is clamped to the epoch (0).
    let times = mtimes(&two, &ctx, &[], &[]);
    assert_eq!(times.len(), 5, "{times:?}");
    assert!(times.iter().all(|(_, t)| *t == 0), "{times:?}");

    // SOURCE_DATE_EPOCH (variable, else build arg, which wins) moves the epoch and the clamp.
    let env = image_id(&two, &ctx, &[], &[("SOURCE_DATE_EPOCH", "1600000000")]);
    assert_ne!(env, a);
    assert_eq!(created(&two, &env), "2020-09-13T12:26:40Z");
    let times = mtimes(&two, &ctx, &[], &[("SOURCE_DATE_EPOCH", "1600000000")]);
    assert!(times.iter().all(|(_, t)| *t == 1_600_000_000), "{times:?}");
    let arg = image_id(
        &one,
        &ctx,
        &["--build-arg", "SOURCE_DATE_EPOCH=1600000000"],
        &[("SOURCE_DATE_EPOCH", "5")],
    );
    assert_eq!(
        arg, env,
        "the build arg wins over the variable, in another store too"
    );
    let bad = one.fails(&[
        "build",
        "--build-arg",
        "SOURCE_DATE_EPOCH=yesterday",
        ctx.arg(),
    ]);
    assert!(bad.contains("SOURCE_DATE_EPOCH=\"yesterday\""), "{bad}");

    // --no-reproducible: wall-clock times (and its own cache records).
    let wall = image_id(&one, &ctx, &["--no-reproducible"], &[]);
    assert_ne!(wall, a);
    assert!(!created(&one, &wall).starts_with("1970"));
    let times = mtimes(&one, &ctx, &["--no-reproducible"], &[]);
    assert!(times.iter().any(|(_, t)| *t > 1_600_000_000), "{times:?}");
    // ...and the default is back, from the cache.
    assert_eq!(image_id(&one, &ctx, &[], &[]), a);
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_DATE", "@1650000000 +0000")
        .env("GIT_COMMITTER_DATE", "@1650000000 +0000")
        .env("GIT_AUTHOR_NAME", "kiln")
        .env("GIT_AUTHOR_EMAIL", "kiln@example.com")
        .env("GIT_COMMITTER_NAME", "kiln")
        .env("GIT_COMMITTER_EMAIL", "kiln@example.com")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

#[test]
fn a_clean_git_context_is_dated_by_its_head_commit() {
    if !sandbox_available() {
        return;
    }
    let ctx = context().file(".dockerignore", "scratch\n");
    git(ctx.path(), &["init", "-q"]);
    git(ctx.path(), &["add", "-A"]);
    git(ctx.path(), &["commit", "-q", "-m", "one"]);
    let one = Kiln::with_busybox();
    let a = image_id(&one, &ctx, &[], &[]);
    assert_eq!(created(&one, &a), "2022-04-15T05:20:00Z");
    let times = mtimes(&one, &ctx, &[], &[]);
    assert_eq!(times.len(), 5, "{times:?}");
    assert!(times.iter().all(|(_, t)| *t == 1_650_000_000), "{times:?}");
    // A fresh clone elsewhere (new checkout times) in another store: the same image.
    let clone = Context::new();
    let out = Command::new("git")
        .args(["clone", "-q"])
        .arg(ctx.path())
        .arg(clone.path().join("c"))
        .output()
        .expect("git clone");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let two = Kiln::with_busybox();
    let mut c = two.command();
    let cloned = clone.path().join("c");
    c.args(["build", "-q", "--jobs", "1"]).arg(&cloned);
    c.env_remove("SOURCE_DATE_EPOCH");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), a);

    // A file the build ignores changes nothing; a file it may read makes the epoch 0.
    ctx.write("scratch", "not read\n");
    assert_eq!(image_id(&one, &ctx, &[], &[]), a);
    ctx.write("a.txt", "edited\n");
    let dirty = image_id(&one, &ctx, &[], &[]);
    assert_eq!(created(&one, &dirty), "1970-01-01T00:00:00Z");
    // SOURCE_DATE_EPOCH still overrides a clean tree.
    git(ctx.path(), &["checkout", "-q", "--", "a.txt"]);
    let set = image_id(&one, &ctx, &[], &[("SOURCE_DATE_EPOCH", "0")]);
    assert_ne!(set, a);
    assert_eq!(created(&one, &set), "1970-01-01T00:00:00Z");
}

/// The manifest, config and blobs of an OCI archive, unpacked into a directory.
struct Oci {
    dir: tempfile::TempDir,
    manifest: Value,
}

impl Oci {
    fn open(archive: &std::path::Path) -> Oci {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let index: Value =
            serde_json::from_slice(&fs_err::read(dir.path().join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let manifest =
            serde_json::from_slice(&fs_err::read(Self::path(&dir, &digest)).unwrap()).unwrap();
        Oci { dir, manifest }
    }

    fn path(dir: &tempfile::TempDir, digest: &str) -> std::path::PathBuf {
        dir.path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// (media type, digest) of each layer, bottom first.
    fn layers(&self) -> Vec<(String, String)> {
        self.manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["mediaType"].as_str().unwrap().to_string(),
                    l["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        fs_err::read(Self::path(&self.dir, digest)).unwrap()
    }

    /// sha256 of each layer's uncompressed tar, checked against the config's diffIDs.
    fn check_diff_ids(&self) {
        let config: Value =
            serde_json::from_slice(&self.blob(self.manifest["config"]["digest"].as_str().unwrap()))
                .unwrap();
        for (i, (media, digest)) in self.layers().into_iter().enumerate() {
            let blob = self.blob(&digest);
            let tar = match media.rsplit_once('+').map(|(_, c)| c) {
                Some("zstd") => {
                    let mut c = Command::new("zstd")
                        .args(["-dc"])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap();
                    let mut stdin = c.stdin.take().unwrap();
                    let feed = std::thread::spawn(move || {
                        use std::io::Write;
                        stdin.write_all(&blob)
                    });
                    let out = c.wait_with_output().unwrap();
                    feed.join().unwrap().unwrap();
                    assert!(out.status.success(), "zstd -d failed");
                    out.stdout
                }
                Some("gzip") => {
                    use std::io::Read;
                    let mut out = Vec::new();
                    flate2::read::MultiGzDecoder::new(&blob[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                _ => blob,
            };
            use sha2::Digest;
            let sum = format!("sha256:{}", hex(&sha2::Sha256::digest(&tar)));
            assert_eq!(
                config["rootfs"]["diff_ids"][i].as_str().unwrap(),
                sum,
                "layer {i} ({media})"
            );
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

#[test]
fn output_compression_zstd_uncompressed_and_forced_and_converted_layers_match_fresh_ones() {
    if !sandbox_available() {
        return;
    }
    let ctx = context();
    let k = Kiln::with_busybox();
    let oci = |k: &Kiln, opts: &str| -> Oci {
        let dest = ctx.path().join("../out-oci.tar");
        let spec = format!("type=oci,dest={}{opts}", dest.display());
        image_id(k, &ctx, &["--output", &spec], &[]);
        let o = Oci::open(&dest);
        fs_err::remove_file(&dest).unwrap();
        o
    };
    // zstd for the build's own layers; the base (busybox, gzip) as it is.
    let z = oci(&k, ",compression=zstd,compression-level=5");
    let media: Vec<String> = z.layers().into_iter().map(|l| l.0).collect();
    assert_eq!(media, [GZIP, ZSTD, ZSTD, ZSTD], "{media:?}");
    z.check_diff_ids();
    // force-compression: the base too.
    let f = oci(
        &k,
        ",compression=zstd,compression-level=5,force-compression=true",
    );
    let media: Vec<String> = f.layers().into_iter().map(|l| l.0).collect();
    assert_eq!(media, [ZSTD; 4], "{media:?}");
    f.check_diff_ids();
    assert_eq!(z.layers()[1..], f.layers()[1..]);
    let u = oci(&k, ",compression=uncompressed");
    let media: Vec<String> = u.layers().into_iter().map(|l| l.0).collect();
    assert_eq!(media, [GZIP, PLAIN, PLAIN, PLAIN], "{media:?}");
    u.check_diff_ids();

    // The default gzip from this store (every step cached, its layers converted from zstd or
    // plain where a record holds them so) is byte for byte a fresh store's gzip.
    let back = oci(&k, "");
    back.check_diff_ids();
    let fresh = oci(&Kiln::with_busybox(), "");
    assert_eq!(back.layers(), fresh.layers());
    let media: Vec<String> = fresh.layers().into_iter().map(|l| l.0).collect();
    assert_eq!(media, [GZIP; 4]);
    // ...and zstd made from those gzip layers is the zstd of a fresh zstd build.
    let k2 = Kiln::with_busybox();
    assert_eq!(oci(&k2, "").layers(), fresh.layers());
    let fresh_z = oci(&k2, ",compression=zstd,compression-level=5");
    assert_eq!(fresh_z.layers(), z.layers());

    for (bad, says) in [
        (
            "compression=lz4",
            "compression=\"lz4\": expected gzip, zstd or uncompressed",
        ),
        (
            "compression=zstd,compression-level=99",
            "compression-level=99: zstd takes 1-22",
        ),
        (
            "compression=gzip,compression-level=x",
            "compression-level=\"x\": expected a number",
        ),
        (
            "force-compression=maybe",
            "force-compression=\"maybe\": expected true or false",
        ),
    ] {
        let spec = format!("type=oci,dest=/nonexistent/x.tar,{bad}");
        let err = k.fails(&["build", "--output", &spec, ctx.arg()]);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn uncompressed_layers_are_compressed_once_when_pushed() {
    if !sandbox_available() {
        return;
    }
    let Some(reg) = crate::support::Registry::start() else {
        return;
    };
    let k = Kiln::empty();
    let archive = crate::support::repo_root().join("tests/fixtures/docker/buildkit.tar");
    k.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    let local: Value = {
        let out = k.ok(&["inspect", "kiln-fixture/buildkit:1"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    };
    let target = format!("{}/fixture/compressed:1", reg.host());
    k.ok(&["tag", "kiln-fixture/buildkit:1", &target]);
    let first = k.run(&["push", &target]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let raw = crate::support::skopeo_raw;
    let pushed = raw(&target);
    let layers = pushed["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        let media = l["mediaType"].as_str().unwrap();
        assert!(media.ends_with("gzip"), "{media} went out uncompressed");
        // The compressed blob is kept in the store for the next push.
        let blob = k
            .root
            .path()
            .join("blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        assert!(blob.exists(), "{} not kept", blob.display());
    }
    // The local image is unchanged (its layers stay as they were loaded)...
    let again: Value =
        serde_json::from_str(&k.ok(&["inspect", "kiln-fixture/buildkit:1"])).unwrap();
    assert_eq!(again[0]["Id"], local["Id"]);
    // ...and a second push elsewhere sends the same blobs.
    let other = format!("{}/fixture/other:1", reg.host());
    k.ok(&["tag", "kiln-fixture/buildkit:1", &other]);
    k.ok(&["push", &other]);
    assert_eq!(raw(&other)["layers"], pushed["layers"]);
    // skopeo reads what was pushed back as a valid image (digests and diffIDs verified).
    crate::support::skopeo_copies(&target);
}

/// Snapshots of a store kept stacked (an incremental COPY's delta over the previous layer).
fn stacked_snapshots(k: &Kiln) -> usize {
    fs_err::read_dir(k.root.path().join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".stack")
        })
        .count()
}

/// Whether every stacked snapshot is one delta over a full snapshot (stacks are flattened).
fn stacks_are_flat(k: &Kiln) -> bool {
    let snaps = k.root.path().join("snapshots");
    fs_err::read_dir(&snaps).unwrap().all(|e| {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".stack") {
            return true;
        }
        let below = fs_err::read_to_string(e.path().join("below")).unwrap();
        let hex = below.trim().trim_start_matches("sha256:");
        snaps.join(hex).is_dir()
    })
}

#[test]
fn a_copy_rebuilt_after_one_edit_is_byte_identical_to_a_fresh_build() {
    if !sandbox_available() {
        return;
    }
    // The RUN reads every copied file: it runs over the COPY's (stacked) snapshot, and its
    // layer says what that snapshot held (not the link count of directories, which is 1 for
    // one that is in more than one layer, as with any overlay).
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nCOPY . /data\nRUN find /data | sort | xargs stat -c '%n %F %s %Y %a %u %g %N' > /listing && find /data -type f | sort | xargs md5sum > /sums\n",
    );
    let mut x: u64 = 5;
    for i in 0..400 {
        let mut s = String::new();
        while s.len() < 16_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(&format!("{} {}\n", x % 1013, x >> 45));
        }
        ctx.write(&format!("src/p{}/f{i}", i % 9), &s);
    }
    std::os::unix::fs::symlink("p1/f1", ctx.path().join("src/link")).unwrap();
    // Files changed within 100 ms of a copy are never taken as unchanged by the next one
    // (their stat could miss a second write in the same tick): let the context settle.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let digest_of = |k: &Kiln, id: &str| -> String {
        let v: Value = serde_json::from_str(&k.ok(&["inspect", id])).unwrap();
        v[0]["ManifestDigest"].as_str().unwrap().to_string()
    };
    let same_as_fresh = |warm: &Kiln, id: &str, what: &str| {
        let cold = Kiln::with_busybox();
        let fresh = image_id(&cold, &ctx, &[], &[]);
        assert_eq!(id, fresh, "{what}: image ID of a fresh build");
        // The manifests (so every layer blob) are the same too.
        assert_eq!(
            digest_of(warm, id),
            digest_of(&cold, &fresh),
            "{what}: manifest"
        );
    };
    let append = |rel: &str, line: &str| {
        let path = ctx.path().join(rel);
        let mut text = fs_err::read_to_string(&path).unwrap();
        text.push_str(line);
        ctx.write(rel, &text);
    };
    let warm = Kiln::with_busybox();
    let before = image_id(&warm, &ctx, &[], &[]);
    assert_eq!(stacked_snapshots(&warm), 0);

    // One file edited: the COPY is made over the previous layer (a stacked snapshot).
    append("src/p2/f200", "one more line\n");
    let (after, log) = image_id_logged(&warm, &ctx);
    assert_ne!(before, after);
    assert_eq!(
        stacked_snapshots(&warm),
        1,
        "the edit was copied incrementally"
    );
    assert!(
        written_from_index(&log),
        "from the full copy's index:\n{log}"
    );
    // The blocks after the edit are the previous blob's, taken by position.
    assert!(
        block_count(&log, "from_previous_layer") > 0,
        "blocks from the previous layer:\n{log}"
    );
    same_as_fresh(&warm, &after, "one edit");

    // Again over that (a stack of two), with a new file (its directory's mtime changes)
    // and a directory's mode changed.
    std::thread::sleep(std::time::Duration::from_millis(200));
    append("src/p3/f3", "and another\n");
    ctx.write("src/p4/new", "new file\n");
    fs_err::set_permissions(
        ctx.path().join("src/p5"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let (third, log) = image_id_logged(&warm, &ctx);
    assert_eq!(stacked_snapshots(&warm), 2, "copied incrementally again");
    assert!(written_from_index(&log), "from the stack's index:\n{log}");
    assert!(
        stacks_are_flat(&warm),
        "the stack over a stack was flattened"
    );
    same_as_fresh(&warm, &third, "new file, mode change");

    // A file removed: the layer cannot be the previous one with changes over it (the
    // removal would hide the base's files); a full copy, still the same bytes.
    fs_err::remove_file(ctx.path().join("src/p6/f6")).unwrap();
    let fourth = image_id(&warm, &ctx, &[], &[]);
    assert_eq!(stacked_snapshots(&warm), 2, "a full copy");
    same_as_fresh(&warm, &fourth, "removed file");

    // The stacked snapshots survive a GC that keeps their records, and still read right.
    warm.ok(&["builder", "prune", "--keep-storage", "100GB", "-f"]);
    let out = warm.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &third,
        "cat",
        "/data/src/p3/f3",
    ]);
    assert!(out.ends_with("and another\n"), "{out}");
}

/// The sum of the count `name` over the "compressed blocks" lines of a build's debug log
/// (one per layer written).
fn block_count(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("compressed blocks"))
        .map(|line| {
            let at = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// (reused, compressed) gzip members of the layers a build wrote, from its debug log.
fn member_counts(stderr: &str) -> (u64, u64) {
    (
        block_count(stderr, "reused"),
        block_count(stderr, "compressed"),
    )
}

#[test]
fn a_run_rerun_over_a_changed_input_reuses_the_unchanged_parts_of_its_layer() {
    if !sandbox_available() {
        return;
    }
    // A RUN that writes ~12 MB of the same files every time, and one small file from an
    // input that changes: run again, its layer is compressed again only where it changed
    // (members found by content), and the image is the one an empty store builds.
    let dockerfile = "FROM busybox\nCOPY version /version\nRUN mkdir /out && for i in $(seq 1 30); do seq 1 9000 | sed \"s/.*/line & of file $i, which is the same every time/\" > /out/f$i; done && cp /version /out/zz-version\n";
    let ctx = Context::new()
        .file("Dockerfile", dockerfile)
        .file("version", "1\n");
    let build = |k: &Kiln| -> (String, (u64, u64)) {
        let mut c = k.command();
        c.args(["build", "-q", "--network", "none"]).arg(ctx.arg());
        c.env_remove("SOURCE_DATE_EPOCH");
        c.env("KILN_LOG", "kiln_cache::layer=debug");
        let out = c.output().expect("spawn kiln");
        assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        (id, member_counts(&text(&out.stderr)))
    };
    let warm = Kiln::with_busybox();
    let (first, (reused, compressed)) = build(&warm);
    assert!(compressed >= 4, "a layer of several members: {compressed}");
    assert_eq!(reused, 0, "nothing to reuse in an empty store");
    ctx.write("version", "2\n");
    let (second, (reused, compressed)) = build(&warm);
    assert_ne!(first, second);
    assert!(
        reused >= 3 && compressed <= 3,
        "members reused {reused}, compressed again {compressed}"
    );
    let cold = Kiln::with_busybox();
    let (fresh, (reused, _)) = build(&cold);
    assert_eq!(reused, 0);
    assert_eq!(second, fresh, "the same image as a fresh build's");
}
