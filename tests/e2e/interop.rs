//! Images other tools made: docker's (byte-exact fixtures, since docker cannot run in CI),
//! and buildah's, podman's, skopeo's and umoci's, made by the real tool in the test run. Each
//! must load or pull, run, serve as `FROM` and go back out, with files, config and history
//! intact.

use crate::support::{Context, Kiln, Registry, repo_root, sandbox_available, text};
use std::path::{Path, PathBuf};
use std::process::Command;

const HELLO: &str = "hello from an image another tool built\n";

/// True when `tool` runs here; fails under `KILN_REQUIRE_ALL=1` (CI), skips loudly otherwise.
fn have(tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
        panic!("{tool} missing: apt-get install {tool}");
    }
    eprintln!("SKIPPED: {tool} missing (apt-get install {tool})");
    false
}

/// Runs a command, asserting success; returns stdout.
fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/docker")
}

fn inspect(k: &Kiln, image: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", image])).unwrap();
    v[0].clone()
}

/// A root filesystem with busybox, `/bin/sh` and a few files, for the tools to package.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    fs_err::create_dir_all(root.join("bin")).unwrap();
    fs_err::create_dir_all(root.join("etc/deep/a/b")).unwrap();
    fs_err::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "stat", "test", "readlink"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs_err::write(root.join("etc/app.conf"), "greeting=hi\n").unwrap();
    fs_err::write(root.join("etc/deep/a/b/c.txt"), "deep\n").unwrap();
    root
}

/// Checks a loaded or pulled image made from [`rootfs`]: it runs, sees its files and keeps
/// the config the tool gave it (`A=1`, label, workdir `/w`, volume `/data`).
fn check_rootfs_image(k: &Kiln, image: &str, tool: &str) {
    let out = k.ok(&[
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "cat /etc/app.conf /etc/deep/a/b/c.txt; echo A=$A; pwd",
    ]);
    assert_eq!(out, "greeting=hi\ndeep\nA=1\n/w\n", "{tool}: {image}");
    let v = inspect(k, image);
    assert_eq!(v["Config"]["Labels"]["tool"], tool, "{v}");
    assert!(v["Config"]["Volumes"].get("/data").is_some(), "{v}");
}

/// Builds `FROM image` with a RUN and a COPY and runs the result.
fn check_from(k: &Kiln, image: &str) {
    let ctx = Context::new()
        .file(
            "Dockerfile",
            &format!(
                "FROM {image}\nRUN cat /etc/app.conf > /copied && echo built >> /copied\nCOPY x /x\n"
            ),
        )
        .file("x", "x\n");
    k.ok(&["build", "-t", "derived:1", ctx.arg()]);
    assert_eq!(
        k.ok(&["run", "--rm", "derived:1", "cat", "/copied", "/x"]),
        "greeting=hi\nbuilt\nx\n"
    );
    k.ok(&["rmi", "derived:1"]);
}

#[test]
fn docker_saved_images_load_run_and_serve_as_from() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    for (builder, history) in [("classic", 8), ("buildkit", 8)] {
        let archive = fixtures().join(format!("{builder}.tar"));
        let loaded = k.ok(&["load", "-i", archive.to_str().unwrap()]);
        let image = format!("kiln-fixture/{builder}:1");
        assert!(loaded.contains(&image), "{loaded}");
        // docker's config bytes are kept as they came: the image ID is docker's.
        let v = inspect(&k, &image);
        let want_id = match builder {
            "classic" => "sha256:70660e9ffbbcf5af209438bd2405ead89726002f577cd0b45a144202276166dd",
            _ => "sha256:6c3e6b4860d0fdc9d4a5835ebbc4491c348aaeaa25049f01d74044fc8a883ca5",
        };
        assert_eq!(v["Id"], want_id, "{v}");
        assert_eq!(k.ok(&["run", "--rm", &image]), HELLO, "{builder}");
        let hist = k.ok(&["history", &image]);
        assert_eq!(hist.lines().count(), history + 1, "{hist}");
        assert!(hist.contains("EXPOSE") && hist.contains("8080"), "{hist}");

        // FROM it: the config carries over (env, workdir, volumes, ports, labels), docker's
        // record of how the base was built does not.
        let ctx = Context::new().file(
            "Dockerfile",
            &format!(
                "FROM busybox AS tools\nFROM {image}\nCOPY --from=tools /bin /bin\n\
                 RUN echo \"$GREETING $(pwd) $(cat /etc/app.conf)\" > /seen\n"
            ),
        );
        k.ok(&["build", "-t", "on-docker:1", ctx.arg()]);
        assert_eq!(
            k.ok(&["run", "--rm", "on-docker:1", "cat", "/seen"]),
            "hi /w greeting=hi\n"
        );
        assert_eq!(k.ok(&["run", "--rm", "on-docker:1"]), HELLO);
        let d = inspect(&k, "on-docker:1");
        assert_eq!(d["Config"]["Labels"]["org.example.tool"], "docker", "{d}");
        assert!(d["Config"]["ExposedPorts"].get("8080/tcp").is_some(), "{d}");
        assert!(d["Config"]["Volumes"].get("/data").is_some(), "{d}");
        let raw = raw_config(&k, "on-docker:1");
        assert!(raw.get("container_config").is_none(), "{raw}");
        assert!(raw.get("docker_version").is_none(), "{raw}");
        assert!(raw["config"].get("Image").is_none(), "{raw}");

        // And back out as a docker archive that skopeo reads.
        let out = k.root.path().join(format!("{builder}-again.tar"));
        k.ok(&["save", "-o", out.to_str().unwrap(), &image]);
        if have("skopeo") {
            let sk = sh(Command::new("skopeo")
                .arg("inspect")
                .arg(format!("docker-archive:{}", out.display())));
            let sk: serde_json::Value = serde_json::from_str(&sk).unwrap();
            assert_eq!(sk["Layers"].as_array().unwrap().len(), 3, "{sk}");
            assert_eq!(sk["Labels"]["org.example.tool"], "docker", "{sk}");
        }
        k.ok(&["rmi", "on-docker:1"]);
    }
}

/// The image config exactly as stored: `kiln save` to an OCI archive, read the config blob.
fn raw_config(k: &Kiln, image: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("x.tar");
    k.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        tar.to_str().unwrap(),
        image,
    ]);
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path()));
    let blob = |d: &str| fs_err::read(dir.path().join("blobs/sha256").join(&d[7..])).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.path().join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()
}

#[test]
fn docker_pushed_images_pull_run_and_push_back() {
    if !sandbox_available() || !have("skopeo") {
        return;
    }
    let Some(reg) = Registry::start() else {
        return;
    };
    let k = Kiln::empty();
    for (builder, digest) in [
        (
            "classic",
            "sha256:4e40e3df4b212070b0ed35e7f734c0004121167cef7ef90b47c5dbb77672855f",
        ),
        (
            "buildkit",
            "sha256:3f41e3445d40d3fa2ee9ffb47523bbed6a8e1d7802c071089f41126d953fe91b",
        ),
    ] {
        // The registry gets exactly what `docker push` wrote (docker v2 schema 2, gzip layers).
        let image = format!("{}/fixture/{builder}:1", reg.host());
        sh(Command::new("skopeo").args([
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!(
                "dir:{}",
                fixtures().join(format!("pushed-{builder}")).display()
            ),
            &format!("docker://{image}"),
        ]));
        k.ok(&["pull", &image]);
        let v = inspect(&k, &image);
        assert!(
            v["RepoDigests"].to_string().contains(digest),
            "pulled by docker's manifest digest: {v}"
        );
        assert_eq!(k.ok(&["run", "--rm", &image]), HELLO);
        // Pushed again under another name, the manifest is the same bytes.
        let again = format!("{}/again/{builder}:1", reg.host());
        k.ok(&["tag", &image, &again]);
        let out = k.ok(&["push", &again]);
        assert!(out.contains(digest), "push keeps docker's manifest: {out}");
    }
}

/// buildah with its own storage under `dir`.
fn buildah(dir: &Path) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--storage-driver")
        .arg("vfs");
    c
}

#[test]
fn buildah_images_in_oci_and_docker_format() {
    if !sandbox_available() || !have("buildah") {
        return;
    }
    let Some(reg) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let k = Kiln::empty();
    let c = sh(buildah(dir.path()).args(["from", "scratch"]));
    let c = c.trim();
    sh(buildah(dir.path()).arg("copy").arg(c).arg(&root).arg("/"));
    sh(buildah(dir.path()).args([
        "config",
        "--env",
        "A=1",
        "--cmd",
        "[\"sh\"]",
        "--label",
        "tool=buildah",
        "--volume",
        "/data",
        "--workingdir",
        "/w",
        c,
    ]));
    for format in ["oci", "docker"] {
        sh(buildah(dir.path()).args(["commit", "--format", format, c, &format!("bh-{format}")]));
    }
    // A second layer made in buildah's mount of the container: a deleted file, a directory
    // replaced by another of the same name, a file added.
    let c2 = sh(buildah(dir.path()).args(["from", "bh-oci"]));
    let c2 = c2.trim();
    let mnt = PathBuf::from(sh(buildah(dir.path()).args(["mount", c2])).trim());
    fs_err::remove_file(mnt.join("etc/deep/a/b/c.txt")).unwrap();
    fs_err::remove_dir_all(mnt.join("etc/deep/a")).unwrap();
    fs_err::create_dir_all(mnt.join("etc/deep/a")).unwrap();
    fs_err::write(mnt.join("etc/deep/a/new.txt"), "new\n").unwrap();
    fs_err::write(mnt.join("etc/second"), "2\n").unwrap();
    sh(buildah(dir.path()).args(["umount", c2]));
    sh(buildah(dir.path()).args(["commit", "--format", "oci", c2, "bh-two"]));

    let mut n = 0;
    for (image, dest) in [
        ("bh-oci", "oci-archive"),
        ("bh-oci", "docker-archive"),
        ("bh-docker", "oci-archive"),
        ("bh-docker", "docker-archive"),
        ("bh-two", "oci-archive"),
        ("bh-two", "docker-archive"),
    ] {
        n += 1;
        let tar = dir.path().join(format!("{n}.tar"));
        let name = format!("kiln-test/{image}:{n}");
        sh(buildah(dir.path()).args(["push", image, &format!("{dest}:{}:{name}", tar.display())]));
        let loaded = k.ok(&["load", "-i", tar.to_str().unwrap()]);
        let loaded_name = loaded
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("{image} via {dest}: nothing loaded: {loaded}"))
            .to_string();
        if image != "bh-two" {
            check_rootfs_image(&k, &loaded_name, "buildah");
        } else {
            let out = k.ok(&[
                "run",
                "--rm",
                &loaded_name,
                "sh",
                "-c",
                "ls /etc/deep/a; cat /etc/second",
            ]);
            assert_eq!(out, "new.txt\n2\n", "{image} via {dest}");
        }
    }
    // From buildah's push to a registry, in both formats.
    for image in ["bh-oci", "bh-docker"] {
        let remote = format!("{}/buildah/{image}:1", reg.host());
        sh(buildah(dir.path()).args([
            "push",
            "--tls-verify=false",
            image,
            &format!("docker://{remote}"),
        ]));
        k.ok(&["pull", &remote]);
        check_rootfs_image(&k, &remote, "buildah");
        check_from(&k, &remote);
    }
}

#[test]
fn podman_builds_in_oci_and_docker_format() {
    if !sandbox_available() || !have("podman") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    rootfs(dir.path());
    fs_err::write(
        dir.path().join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV A=1\nLABEL tool=podman\nVOLUME /data\n\
         WORKDIR /w\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(dir.path().join("storage"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .arg("--storage-driver")
            .arg("vfs");
        c
    };
    let k = Kiln::empty();
    for format in ["oci", "docker"] {
        let tag = format!("localhost/pm-{format}:1");
        sh(podman()
            .args(["build", "--format", format, "--network", "none", "-t", &tag])
            .arg(dir.path()));
        for save in ["oci-archive", "docker-archive"] {
            let tar = dir.path().join(format!("{format}-{save}.tar"));
            sh(podman()
                .args(["save", "--format", save, "-o"])
                .arg(&tar)
                .arg(&tag));
            let loaded = k.ok(&["load", "-i", tar.to_str().unwrap()]);
            let name = loaded
                .lines()
                .find_map(|l| l.strip_prefix("Loaded image: "))
                .unwrap_or_else(|| panic!("{format} as {save}: nothing loaded: {loaded}"))
                .to_string();
            check_rootfs_image(&k, &name, "podman");
            check_from(&k, &name);
        }
    }
}

#[test]
fn skopeo_conversions_between_transports_and_compressions() {
    if !sandbox_available() || !have("skopeo") || !have("buildah") {
        return;
    }
    let Some(reg) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let c = sh(buildah(dir.path()).args(["from", "scratch"]));
    let c = c.trim();
    sh(buildah(dir.path()).arg("copy").arg(c).arg(&root).arg("/"));
    sh(buildah(dir.path()).args([
        "config",
        "--env",
        "A=1",
        "--label",
        "tool=skopeo",
        "--volume",
        "/data",
        "--workingdir",
        "/w",
        c,
    ]));
    sh(buildah(dir.path()).args(["commit", "--format", "oci", c, "src"]));
    let src = dir.path().join("src");
    sh(buildah(dir.path()).args(["push", "src", &format!("oci:{}:src", src.display())]));

    let k = Kiln::empty();
    let skopeo = |from: &str, to: &str, extra: &[&str]| {
        sh(Command::new("skopeo")
            .arg("copy")
            .arg("--dest-tls-verify=false")
            .arg("--src-tls-verify=false")
            .args(extra)
            .arg(from)
            .arg(to));
    };
    let oci = format!("oci:{}:src", src.display());
    let mut n = 0;
    for (dest, extra) in [
        ("oci-archive", &[][..]),
        ("docker-archive", &[][..]),
        ("oci-archive", &["--dest-compress-format", "zstd"][..]),
        ("oci-archive", &["--dest-decompress"][..]),
        ("dir", &[][..]),
        ("oci", &["--dest-compress-format", "zstd"][..]),
    ] {
        n += 1;
        let what = format!("{dest} {extra:?}");
        let path = dir.path().join(format!("out{n}"));
        let name = format!("kiln-test/skopeo:{n}");
        match dest {
            "oci-archive" | "docker-archive" => {
                skopeo(&oci, &format!("{dest}:{}:{name}", path.display()), extra);
            }
            // A directory transport reaches kiln through a registry (skopeo's `dir:` keeps the
            // manifest as it is) or, for an OCI layout, as its tar.
            "dir" => {
                skopeo(&oci, &format!("dir:{}", path.display()), extra);
                let remote = format!("{}/skopeo/dir:{n}", reg.host());
                skopeo(
                    &format!("dir:{}", path.display()),
                    &format!("docker://{remote}"),
                    &[],
                );
                k.ok(&["pull", &remote]);
                check_rootfs_image(&k, &remote, "skopeo");
                continue;
            }
            _ => {
                skopeo(&oci, &format!("oci:{}:{name}", path.display()), extra);
                let tar = dir.path().join(format!("out{n}.tar"));
                sh(Command::new("tar")
                    .arg("-cf")
                    .arg(&tar)
                    .arg("-C")
                    .arg(&path)
                    .arg("."));
                let loaded = k.ok(&["load", "-i", tar.to_str().unwrap()]);
                assert!(loaded.contains("skopeo"), "{what}: {loaded}");
                check_rootfs_image(&k, &format!("docker.io/{name}"), "skopeo");
                continue;
            }
        }
        let loaded = k.ok(&["load", "-i", path.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image"), "{what}: {loaded}");
        check_rootfs_image(&k, &name, "skopeo");
    }
    // Registry: gzip, zstd and uncompressed layers, pulled, run, built FROM and pushed again.
    for (tag, extra) in [
        ("gzip", &[][..]),
        ("zstd", &["--dest-compress-format", "zstd"][..]),
        ("plain", &["--dest-decompress"][..]),
    ] {
        let remote = format!("{}/skopeo/reg:{tag}", reg.host());
        skopeo(&oci, &format!("docker://{remote}"), extra);
        k.ok(&["pull", &remote]);
        check_rootfs_image(&k, &remote, "skopeo");
        check_from(&k, &remote);
        let again = format!("{}/again/reg:{tag}", reg.host());
        k.ok(&["tag", &remote, &again]);
        k.ok(&["push", &again]);
        let sk = sh(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{again}")));
        let sk: serde_json::Value = serde_json::from_str(&sk).unwrap();
        assert_eq!(sk["Labels"]["tool"], "skopeo", "{sk}");
    }
}

#[test]
fn umoci_repacked_layers_with_whiteouts() {
    if !sandbox_available() || !have("umoci") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let root = rootfs(dir.path());
    let umoci = |args: &[&str]| sh(Command::new("umoci").args(args));
    let l = layout.to_str().unwrap();
    umoci(&["init", "--layout", l]);
    umoci(&["new", "--image", &format!("{l}:base")]);
    let bundle = dir.path().join("bundle");
    let b = bundle.to_str().unwrap();
    umoci(&["unpack", "--image", &format!("{l}:base"), b]);
    sh(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(bundle.join("rootfs")));
    umoci(&["repack", "--image", &format!("{l}:base"), b]);
    // Second layer: a deleted file, a removed directory, an added one.
    let r = bundle.join("rootfs");
    fs_err::remove_file(r.join("etc/app.conf")).unwrap();
    fs_err::remove_dir_all(r.join("etc/deep")).unwrap();
    fs_err::create_dir_all(r.join("etc/fresh")).unwrap();
    fs_err::write(r.join("etc/fresh/f"), "fresh\n").unwrap();
    umoci(&["repack", "--image", &format!("{l}:base"), b]);
    umoci(&[
        "config",
        "--image",
        &format!("{l}:base"),
        "--tag",
        "kiln",
        "--config.env",
        "A=1",
        "--config.workingdir",
        "/w",
        "--config.volume",
        "/data",
        "--config.label",
        "tool=umoci",
        "--config.cmd",
        "sh",
    ]);
    let tar = dir.path().join("umoci.tar");
    sh(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .arg("."));
    let k = Kiln::empty();
    let loaded = k.ok(&["load", "-i", tar.to_str().unwrap()]);
    // umoci's ref names are bare tags ("base", "kiln"), no repository: the images load
    // unnamed, as docker loads them, and are used by ID.
    let ids: Vec<&str> = loaded
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image ID: "))
        .collect();
    assert_eq!(ids.len(), 2, "{loaded}");
    let id = ids
        .iter()
        .find(|id| inspect(&k, id)["Config"]["Labels"]["tool"] == "umoci")
        .unwrap_or_else(|| panic!("no configured image: {loaded}"))
        .to_string();
    let out = k.ok(&[
        "run",
        "--rm",
        &id,
        "sh",
        "-c",
        "test -e /etc/app.conf || echo gone; test -e /etc/deep || echo gone too; cat /etc/fresh/f; echo A=$A; pwd",
    ]);
    assert_eq!(out, "gone\ngone too\nfresh\nA=1\n/w\n");
    let hist = k.ok(&["history", &id]);
    assert!(
        hist.contains("umoci"),
        "umoci's history entries kept: {hist}"
    );
}

/// An OCI image layout written by hand, for the shapes no tool here makes on demand
/// (attestation manifests, nested indexes, non-distributable layers, configs with nulls).
struct Layout {
    dir: tempfile::TempDir,
}

/// A descriptor of `bytes` stored in a [`Layout`].
fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    use sha2::Digest as _;
    serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{:x}", sha2::Sha256::digest(bytes)),
        "size": bytes.len(),
    })
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs_err::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout { dir }
    }

    /// Stores a blob; returns its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let d = descriptor(media_type, bytes);
        let hex = &d["digest"].as_str().unwrap()[7..];
        fs_err::write(self.dir.path().join("blobs/sha256").join(hex), bytes).unwrap();
        d
    }

    fn json(&self, media_type: &str, v: &serde_json::Value) -> serde_json::Value {
        self.blob(media_type, &serde_json::to_vec(v).unwrap())
    }

    /// An image manifest of `config` over `layers` (descriptors).
    fn manifest(
        &self,
        media_type: &str,
        config: &serde_json::Value,
        layers: &[serde_json::Value],
    ) -> serde_json::Value {
        let config_type = if media_type.contains("docker") {
            "application/vnd.docker.container.image.v1+json"
        } else {
            "application/vnd.oci.image.config.v1+json"
        };
        let c = self.json(config_type, config);
        self.json(
            media_type,
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_type,
                "config": c,
                "layers": layers,
            }),
        )
    }

    /// Writes index.json and tars the layout into an archive kiln loads.
    fn archive(&self, manifests: &[serde_json::Value]) -> PathBuf {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        fs_err::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        let tar = self.dir.path().with_extension("tar");
        sh(Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(self.dir.path())
            .arg("."));
        tar
    }
}

/// The [`rootfs`] as a plain tar layer, and its diffID.
fn rootfs_layer(dir: &Path) -> (Vec<u8>, String) {
    use sha2::Digest as _;
    let root = rootfs(dir);
    let file = dir.join("rootfs.tar");
    sh(Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&file)
        .arg("."));
    let tar = fs_err::read(&file).unwrap();
    let diff_id = format!("sha256:{:x}", sha2::Sha256::digest(&tar));
    (tar, diff_id)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, bytes).unwrap();
    e.finish().unwrap()
}

/// A config that writes `null` or nothing wherever the spec lets it, and fields kiln does
/// not know.
fn config_with_nulls(arch: &str, diff_ids: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": null,
        "author": null,
        "os.features": null,
        "com.example.vendor": {"kept": true},
        "config": {
            "User": null, "Env": ["A=1"], "Cmd": null, "Entrypoint": null, "Volumes": {"/data": {}},
            "ExposedPorts": null, "Labels": {"tool": "hand"}, "OnBuild": null, "Healthcheck": null,
            "Shell": null, "StopSignal": null, "WorkingDir": "/w", "ArgsEscaped": null,
            "Hostname": "", "Image": "sha256:0000"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": null, "created_by": null, "empty_layer": null, "comment": null, "author": null}]
    })
}

#[test]
fn hand_made_layouts_nulls_attestations_nested_indexes_and_foreign_layers() {
    if !sandbox_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (tar, diff_id) = rootfs_layer(work.path());
    let gz = gzip(&tar);
    let k = Kiln::with_busybox();
    let check = |image: &str| {
        let out = k.ok(&[
            "run",
            "--rm",
            image,
            "sh",
            "-c",
            "cat /etc/app.conf; echo A=$A; pwd",
        ]);
        assert_eq!(out, "greeting=hi\nA=1\n/w\n", "{image}");
    };

    // 1. A config with nulls everywhere, in an OCI manifest.
    let l = Layout::new();
    let layer = l.blob("application/vnd.oci.image.layer.v1.tar", &tar);
    let mut m = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &config_with_nulls("amd64", &[&diff_id]),
        &[layer],
    );
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "hand/nulls:1"});
    let loaded = k.ok(&["load", "-i", l.archive(&[m]).to_str().unwrap()]);
    assert!(loaded.contains("hand/nulls:1"), "{loaded}");
    check("hand/nulls:1");
    check_from(&k, "hand/nulls:1");
    let ctx = Context::new().file("Dockerfile", "FROM hand/nulls:1\nENV B=2\n");
    k.ok(&["build", "-t", "hand/derived:1", ctx.arg()]);
    let raw = raw_config(&k, "hand/derived:1");
    assert_eq!(
        raw["com.example.vendor"]["kept"], true,
        "unknown fields kept: {raw}"
    );
    assert!(raw["config"].get("Image").is_none(), "{raw}");

    // 2. An index holding a nested index whose first entry is an attestation manifest
    //    (`unknown/unknown`, as BuildKit writes them), then arm64, then amd64; a docker v2
    //    schema 2 manifest with a foreign layer, an OCI one with a non-distributable layer.
    let (l, nested) = multi_platform_layout(&gz, &diff_id, true);
    let loaded = k.ok(&["load", "-i", l.archive(&[nested]).to_str().unwrap()]);
    assert!(loaded.contains("hand/multi:1"), "{loaded}");
    if std::env::consts::ARCH == "x86_64" {
        check("hand/multi:1");
        let v = inspect(&k, "hand/multi:1");
        assert_eq!(v["Architecture"], "amd64", "{v}");
    }

    // The same shape through a registry, skopeo copying every manifest of it (with plain
    // gzip layers: the registry refuses foreign ones without URLs).
    if have("skopeo")
        && let Some(reg) = Registry::start()
    {
        let (l, mut nested) = multi_platform_layout(&gz, &diff_id, false);
        nested["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "multi"});
        l.archive(&[nested]);
        let remote = format!("{}/hand/multi:1", reg.host());
        sh(Command::new("skopeo").args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:multi", l.dir.path().display()),
            &format!("docker://{remote}"),
        ]));
        let b = Kiln::empty();
        b.ok(&["pull", &remote]);
        if std::env::consts::ARCH == "x86_64" {
            let out = b.ok(&["run", "--rm", &remote, "sh", "-c", "cat /etc/app.conf"]);
            assert_eq!(out, "greeting=hi\n");
        }
    }
}

/// A layout whose index holds a nested index: an attestation manifest first, then arm64,
/// then amd64 (a docker v2 schema 2 manifest, its layer foreign when `foreign`). Returns the
/// layout and the nested index's descriptor, named `hand/multi:1`.
fn multi_platform_layout(gz: &[u8], diff_id: &str, foreign: bool) -> (Layout, serde_json::Value) {
    let l = Layout::new();
    let (amd64_layer, arm64_layer) = if foreign {
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        )
    } else {
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    let layer = l.blob(amd64_layer, gz);
    let amd64 = l.manifest(
        "application/vnd.docker.distribution.manifest.v2+json",
        &config_with_nulls("amd64", &[diff_id]),
        &[layer],
    );
    let layer = l.blob(arm64_layer, gz);
    let arm64 = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &config_with_nulls("arm64", &[diff_id]),
        &[layer],
    );
    let statement = l.blob(
        "application/vnd.in-toto+json",
        br#"{"_type":"https://in-toto.io/Statement/v0.1"}"#,
    );
    let mut attestation = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::json!({"architecture": "unknown", "os": "unknown",
            "rootfs": {"type": "layers", "diff_ids": []}}),
        &[statement],
    );
    attestation["platform"] = serde_json::json!({"architecture": "unknown", "os": "unknown"});
    attestation["annotations"] = serde_json::json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": amd64["digest"],
    });
    let mut amd64_entry = amd64.clone();
    amd64_entry["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    let mut arm64_entry = arm64.clone();
    arm64_entry["platform"] = serde_json::json!({"architecture": "arm64", "os": "linux"});
    let mut nested = l.json(
        "application/vnd.oci.image.index.v1+json",
        &serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [attestation, arm64_entry, amd64_entry],
        }),
    );
    nested["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "hand/multi:1"});
    (l, nested)
}

#[test]
fn malformed_archives_name_what_is_wrong_and_change_nothing() {
    if !sandbox_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (tar, diff_id) = rootfs_layer(work.path());
    let k = Kiln::empty();
    let before = k.ok(&["images"]);
    let blobs = || {
        sh(Command::new("find")
            .arg(k.root.path().join("blobs"))
            .args(["-type", "f"]))
        .lines()
        .count()
    };
    let blobs_before = blobs();
    let try_load = |l: &Layout, manifests: &[serde_json::Value]| -> String {
        let tar = l.archive(manifests);
        let out = k.run(&["load", "-i", tar.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "loaded {}: {}",
            fs_err::read_to_string(l.dir.path().join("index.json")).unwrap(),
            text(&out.stdout)
        );
        text(&out.stderr)
    };

    // A config whose Env is not a list.
    let l = Layout::new();
    let layer = l.blob("application/vnd.oci.image.layer.v1.tar", &tar);
    let mut bad = config_with_nulls("amd64", &[&diff_id]);
    bad["config"]["Env"] = serde_json::json!("A=1");
    let m = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &bad,
        std::slice::from_ref(&layer),
    );
    let err = try_load(&l, std::slice::from_ref(&m));

    let config_digest = {
        let hex = &m["digest"].as_str().unwrap()[7..];
        let bytes = fs_err::read(l.dir.path().join("blobs/sha256").join(hex)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["config"]["digest"].as_str().unwrap().to_string()
    };
    assert!(
        err.contains(&config_digest[..19]),
        "names the config blob: {err}"
    );
    assert!(err.contains("Env"), "names the field: {err}");

    // A layer blob missing from the archive.
    let l = Layout::new();
    let mut missing = descriptor("application/vnd.oci.image.layer.v1.tar", b"not stored");
    missing["size"] = serde_json::json!(10);
    let m = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &config_with_nulls("amd64", &[&diff_id]),
        &[missing.clone()],
    );
    let err = try_load(&l, &[m]);
    assert!(
        err.contains(&missing["digest"].as_str().unwrap()[7..19]),
        "names the missing blob: {err}"
    );

    // A blob whose bytes are not its name.
    let l = Layout::new();
    let layer = l.blob("application/vnd.oci.image.layer.v1.tar", &tar);
    let hex = layer["digest"].as_str().unwrap()[7..].to_string();
    fs_err::write(l.dir.path().join("blobs/sha256").join(&hex), b"tampered").unwrap();
    let m = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &config_with_nulls("amd64", &[&diff_id]),
        &[layer],
    );
    let err = try_load(&l, &[m]);
    assert!(err.contains(&hex[..12]), "names the blob: {err}");

    assert_eq!(k.ok(&["images"]), before, "nothing was added");
    assert_eq!(blobs(), blobs_before, "no blob of a refused archive stays");
    let tmp: Vec<_> = fs_err::read_dir(k.root.path().join("tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "no scratch left: {tmp:?}");
}

/// A tar of one entry written header by header, as a hostile tool might (no name checks).
fn raw_tar(name: &str, kind: u8, link: &str) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    for f in [108..115, 116..123] {
        h[f].copy_from_slice(b"0000000");
    }
    h[124..135].copy_from_slice(b"00000000000");
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn hostile_layers_and_names_are_refused_at_the_door() {
    if !sandbox_available() {
        return;
    }
    use sha2::Digest as _;
    let k = Kiln::with_busybox();
    let before = k.ok(&["images"]);
    for (tar, want) in [
        (raw_tar("a/../../../evil", b'0', ""), "'..'"),
        (raw_tar("etc/.wh..", b'0', ""), "whiteout"),
        (raw_tar("x", b'1', "../../../etc/passwd"), "hardlink"),
    ] {
        let l = Layout::new();
        let diff_id = format!("sha256:{:x}", sha2::Sha256::digest(&tar));
        let layer = l.blob("application/vnd.oci.image.layer.v1.tar", &tar);
        let mut m = l.manifest(
            "application/vnd.oci.image.manifest.v1+json",
            &config_with_nulls("amd64", &[&diff_id]),
            std::slice::from_ref(&layer),
        );
        m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "hostile/x:1"});
        let err = k.fails(&["load", "-i", l.archive(&[m]).to_str().unwrap()]);
        assert!(err.contains(want), "{want}: {err}");
        assert!(
            err.contains(&layer["digest"].as_str().unwrap()[..19]),
            "names the layer: {err}"
        );
    }
    // import: random bytes, a truncated tar.
    let dir = tempfile::tempdir().unwrap();
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs_err::write(dir.path().join("junk"), &junk).unwrap();
    let err = k.fails(&[
        "import",
        dir.path().join("junk").to_str().unwrap(),
        "junk:1",
    ]);
    assert!(err.contains("not a tar archive"), "{err}");
    let (tar, diff_id) = rootfs_layer(dir.path());
    fs_err::write(dir.path().join("cut.tar"), &tar[..tar.len() / 2]).unwrap();
    let err = k.fails(&[
        "import",
        dir.path().join("cut.tar").to_str().unwrap(),
        "cut:1",
    ]);
    assert!(err.contains("truncated"), "{err}");
    // Names that are no references, for tag, import and in an archive.
    for bad in ["../../evil:1", "UPPER/Case:::x", "a//b"] {
        let err = k.fails(&["tag", "busybox", bad]);
        assert!(err.contains("invalid reference format"), "{bad}: {err}");
    }
    let err = k.fails(&[
        "import",
        dir.path().join("junk").to_str().unwrap(),
        "Bad:Name:x",
    ]);
    assert!(err.contains("invalid reference format"), "{err}");
    let l = Layout::new();
    let layer = l.blob("application/vnd.oci.image.layer.v1.tar", &tar);
    let mut m = l.manifest(
        "application/vnd.oci.image.manifest.v1+json",
        &config_with_nulls("amd64", &[&diff_id]),
        &[layer],
    );
    m["annotations"] = serde_json::json!({"io.containerd.image.name": "../../evil:1"});
    let err = k.fails(&["load", "-i", l.archive(&[m]).to_str().unwrap()]);
    assert!(err.contains("invalid reference format"), "{err}");
    assert_eq!(k.ok(&["images"]), before, "nothing was added");
}

#[test]
fn zstd_layers_in_many_frames_are_read_by_skopeo_and_umoci() {
    if !sandbox_available() || !have("skopeo") || !have("umoci") {
        return;
    }
    // A layer of several frames (they are cut at 1-4 MiB): Go's zstd decoder (skopeo,
    // containerd, docker) reads concatenated frames as one stream.
    let mut big = String::new();
    let mut x: u64 = 11;
    while big.len() < 9 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.push_str(&format!("{x:x}\n"));
    }
    let ctx = Context::new()
        .file("Dockerfile", "FROM busybox\nCOPY big /big\n")
        .file("big", &big);
    let k = Kiln::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("img.tar");
    let out = format!(
        "type=oci,dest={},compression=zstd,force-compression=true",
        archive.display()
    );
    k.ok(&["build", "-q", "--output", &out, ctx.arg()]);
    // skopeo decodes every zstd layer and writes it as gzip; umoci unpacks that and checks
    // the diffIDs.
    let layout = dir.path().join("layout");
    sh(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-compress-format",
        "gzip",
        "--dest-compress",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:x", layout.display()),
    ]));
    let bundle = dir.path().join("bundle");
    sh(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:x", layout.display()))
        .arg(&bundle));
    assert_eq!(
        fs_err::read_to_string(bundle.join("rootfs/big")).unwrap(),
        big
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());
}

#[test]
fn a_buildah_images_healthcheck_runs_in_kiln() {
    if !sandbox_available() || !have("buildah") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    for applet in ["sleep", "touch"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs_err::create_dir_all(root.join("tmp")).unwrap();
    let c = sh(buildah(dir.path()).args(["from", "scratch"]));
    let c = c.trim();
    sh(buildah(dir.path()).arg("copy").arg(c).arg(&root).arg("/"));
    // buildah splits a CMD-SHELL into words: ["CMD-SHELL", "test", "-f", "/tmp/ok"].
    sh(buildah(dir.path()).args([
        "config",
        "--healthcheck",
        "CMD-SHELL test -f /tmp/ok",
        "--healthcheck-interval",
        "200ms",
        "--healthcheck-retries",
        "2",
        "--cmd",
        "sleep 60",
        c,
    ]));
    sh(buildah(dir.path()).args(["commit", "--format", "docker", c, "bh-health"]));
    let tar = dir.path().join("health.tar");
    sh(buildah(dir.path()).args([
        "push",
        "bh-health",
        &format!("docker-archive:{}:kiln-test/health:1", tar.display()),
    ]));
    let k = Kiln::empty();
    k.ok(&["load", "-i", tar.to_str().unwrap()]);
    k.ok(&["run", "-d", "--name", "hc", "kiln-test/health:1"]);
    let status = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = k.ok(&["ps", "--format", "{{.Status}}"]);
            if s.trim().ends_with(want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never {want}: {s}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    status("(unhealthy)");
    k.ok(&["exec", "hc", "touch", "/tmp/ok"]);
    status("(healthy)");
    k.ok(&["rm", "-f", "hc"]);
}
