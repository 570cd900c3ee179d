//! The front door, as `docker build` and buildx have it: the context or the Dockerfile on
//! stdin, at a URL, or in a git repository.

use crate::support::{Context, Kiln, sandbox_available, text};
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `kiln build ARGS` with `input` on stdin; returns (success, stderr).
fn build_with_stdin(k: &Kiln, args: &[&str], input: &[u8]) -> (bool, String) {
    let mut child = k
        .command()
        .arg("build")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (out.status.success(), text(&out.stderr))
}

#[test]
fn dockerfile_on_stdin_builds_with_an_empty_context() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let (ok, err) = build_with_stdin(
        &k,
        &["-t", "stdin:1", "-"],
        b"FROM busybox\nRUN ls -A / > /root-listing && echo from-stdin > /marker\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        k.ok(&["run", "--rm", "stdin:1", "cat", "/marker"]),
        "from-stdin\n"
    );
    // With no context, a COPY has nothing to copy.
    let (ok, err) = build_with_stdin(&k, &["-t", "stdin:2", "-"], b"FROM busybox\nCOPY x /x\n");
    assert!(!ok, "COPY from an empty context must fail");
    assert!(err.contains("x"), "{err}");
}

#[test]
fn a_tar_context_on_stdin_plain_or_compressed() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox\nCOPY . /ctx/\nRUN cat /ctx/a.txt /ctx/sub/b.txt > /both\n",
        )
        .file("a.txt", "a\n")
        .file("sub/b.txt", "b\n")
        .file("other.Dockerfile", "FROM busybox\nCOPY a.txt /only-a\n");
    for (n, compress) in [("1", None), ("2", Some("gzip")), ("3", Some("zstd"))] {
        let mut tar = Command::new("tar");
        tar.arg("-C").arg(ctx.path()).args(["-cf", "-", "."]);
        let mut bytes = tar.output().unwrap().stdout;
        if let Some(tool) = compress {
            let mut c = Command::new(tool)
                .arg("-c")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut i = c.stdin.take().unwrap();
            let data = bytes.clone();
            let w = std::thread::spawn(move || i.write_all(&data).unwrap());
            bytes = c.wait_with_output().unwrap().stdout;
            w.join().unwrap();
        }
        let tag = format!("tarctx:{n}");
        let (ok, err) = build_with_stdin(&k, &["-t", &tag, "-"], &bytes);
        assert!(ok, "{compress:?}: {err}");
        assert_eq!(k.ok(&["run", "--rm", &tag, "cat", "/both"]), "a\nb\n");
        let listing = k.ok(&["run", "--rm", &tag, "ls", "/ctx"]);
        assert!(listing.contains("other.Dockerfile"), "{listing}");
    }
    // -f names a Dockerfile inside the tar.
    let bytes = Command::new("tar")
        .arg("-C")
        .arg(ctx.path())
        .args(["-cf", "-", "."])
        .output()
        .unwrap()
        .stdout;
    let (ok, err) = build_with_stdin(
        &k,
        &["-t", "tarctx:f", "-f", "other.Dockerfile", "-"],
        &bytes,
    );
    assert!(ok, "{err}");
    assert_eq!(k.ok(&["run", "--rm", "tarctx:f", "cat", "/only-a"]), "a\n");
    // Nothing of the unpacked context stays in the store's scratch.
    let left = Command::new("find")
        .arg(k.root.path().join("tmp"))
        .args(["-name", "context-*"])
        .output()
        .unwrap();
    assert_eq!(text(&left.stdout), "", "unpacked contexts left behind");
}

/// Serves `body` for every request on 127.0.0.1, for as long as the returned port is used.
fn serve_once_per_request(body: Vec<u8>) -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    port
}

#[test]
fn a_tarball_or_a_dockerfile_at_a_url() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file("Dockerfile", "FROM busybox\nCOPY a.txt /a.txt\n")
        .file("a.txt", "over http\n");
    let tar = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C {} -cf - . | gzip -c", ctx.path().display()))
        .output()
        .unwrap()
        .stdout;
    let port = serve_once_per_request(tar);
    k.ok(&[
        "build",
        "-t",
        "url:1",
        &format!("http://127.0.0.1:{port}/ctx.tar.gz"),
    ]);
    assert_eq!(
        k.ok(&["run", "--rm", "url:1", "cat", "/a.txt"]),
        "over http\n"
    );
    let port = serve_once_per_request(b"FROM busybox\nRUN echo df > /df\n".to_vec());
    k.ok(&[
        "build",
        "-t",
        "url:2",
        &format!("http://127.0.0.1:{port}/Dockerfile"),
    ]);
    assert_eq!(k.ok(&["run", "--rm", "url:2", "cat", "/df"]), "df\n");
    // A closed port fails with its cause.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = k.fails(&["build", &format!("http://127.0.0.1:{closed}/x.tar")]);
    assert!(err.contains("onnection refused"), "{err}");
}

#[test]
fn a_git_repository_with_a_ref_and_a_subdirectory() {
    if !sandbox_available() {
        return;
    }
    if Command::new("git").arg("--version").output().is_err() {
        if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
            panic!("git missing: apt-get install git");
        }
        eprintln!("SKIPPED: git missing");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("repo.git");
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(base.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    sh("git init -q -b main work && cd work && mkdir app && \
        printf 'FROM busybox\\nCOPY . /src/\\n' > app/Dockerfile && echo one > app/v && \
        git add -A && git -c user.name=t -c user.email=t@t commit -qm one && git tag v1 && \
        echo two > app/v && git -c user.name=t -c user.email=t@t commit -qam two && \
        cd .. && git clone -q --bare work repo.git");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // git-daemon itself (not `git daemon`, which would leave it running when killed), with
    // nothing inherited, stopped by the guard even when an assertion fails.
    let exec_path = sh("git --exec-path");
    let daemon = Command::new(format!("{}/git-daemon", exec_path.trim()))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.path().display()))
        .arg(base.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = KillOnDrop(daemon);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "git daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let k = Kiln::with_busybox();
    let url = format!("git://127.0.0.1:{port}/repo.git");
    k.ok(&["build", "-t", "git:head", &format!("{url}#:app")]);
    assert_eq!(k.ok(&["run", "--rm", "git:head", "cat", "/src/v"]), "two\n");
    k.ok(&["build", "-t", "git:v1", &format!("{url}#v1:app")]);
    assert_eq!(k.ok(&["run", "--rm", "git:v1", "cat", "/src/v"]), "one\n");
    let listing = k.ok(&["run", "--rm", "git:v1", "ls", "-A", "/src"]);
    assert!(!listing.contains(".git"), "{listing}");
    let err = k.fails(&["build", &format!("{url}#nosuchref")]);
    assert!(err.contains("nosuchref"), "{err}");
    let _ = repo;
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--build-context NAME=DIR`: `COPY --from`, `RUN --mount from=` and a stage replaced by the
/// directory, with the directory's own `.dockerignore`.
#[test]
fn named_directory_contexts_replace_stages_and_serve_from() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let docs = Context::new()
        .file("guide.md", "the guide\n")
        .file("secret.txt", "must stay out\n")
        .file(".dockerignore", "secret.txt\n");
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox AS src\n\
         RUN echo from-the-stage > /stage-marker\n\
         FROM busybox\n\
         COPY --from=docs / /docs/\n\
         COPY --from=src / /src/\n\
         RUN --mount=from=docs,target=/m cat /m/guide.md > /via-mount\n\
         RUN ls -A /docs > /docs-listing; ls -A /src > /src-listing\n",
    );
    let docs_arg = format!("docs={}", docs.arg());
    let src_arg = format!("src={}", docs.arg());
    k.ok(&[
        "build",
        "-t",
        "named:dir",
        "--build-context",
        &docs_arg,
        "--build-context",
        &src_arg,
        "--progress=plain",
        ctx.arg(),
    ]);
    let cat = |path: &str| k.ok(&["run", "--rm", "named:dir", "cat", path]);
    assert_eq!(cat("/docs/guide.md"), "the guide\n");
    assert_eq!(cat("/via-mount"), "the guide\n");
    // The directory's .dockerignore holds for it as the main context's does for that.
    assert_eq!(cat("/docs-listing"), ".dockerignore\nguide.md\n");
    // The stage named `src` is replaced by the directory: its RUN never ran.
    assert_eq!(cat("/src-listing"), ".dockerignore\nguide.md\n");

    // Editing the directory is seen by the next build (its files are the cache key).
    docs.write("guide.md", "the guide, edited\n");
    k.ok(&[
        "build",
        "-t",
        "named:dir2",
        "--build-context",
        &docs_arg,
        "--build-context",
        &src_arg,
        ctx.arg(),
    ]);
    assert_eq!(
        k.ok(&["run", "--rm", "named:dir2", "cat", "/docs/guide.md"]),
        "the guide, edited\n"
    );
}

/// `--build-context NAME=docker-image://REF`: a `FROM` base pinned to another image (the
/// Dockerfile's own base never looked up), and a stage of that name replaced.
#[test]
fn named_image_contexts_stand_in_for_bases_and_stages() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    k.ok(&["tag", "busybox", "localhost:5999/other/base:v9"]);
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox AS tools\n\
         RUN echo built > /tools-marker\n\
         FROM alpine:3.20\n\
         COPY --from=tools /bin/busybox /tools-busybox\n\
         RUN test ! -e /tools-marker && echo on-busybox > /marker\n",
    );
    // alpine:3.20 is not in the store and there is no network: only the context can give it.
    let out = k.run(&[
        "build",
        "-t",
        "named:img",
        "--progress=plain",
        "--build-context",
        "alpine:3.20=docker-image://localhost:5999/other/base:v9",
        "--build-context",
        "tools=docker-image://busybox",
        ctx.arg(),
    ]);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    // The stage `tools` is the image now: its RUN is not part of the build.
    assert!(!log.contains("echo built"), "{log}");
    assert_eq!(
        k.ok(&["run", "--rm", "named:img", "cat", "/marker"]),
        "on-busybox\n"
    );
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "named:img",
            "sh",
            "-c",
            "cmp /tools-busybox /bin/busybox && echo same"
        ]),
        "same\n"
    );

    // A name that matches nothing is no error (buildx ignores it too); a bad value is.
    let err = k.fails(&[
        "build",
        "--build-context",
        "x=docker-image://Not/Valid",
        ctx.arg(),
    ]);
    assert!(err.contains("--build-context"), "{err}");
    let err = k.fails(&["build", "--build-context", "novalue", ctx.arg()]);
    assert!(err.contains("NAME=VALUE"), "{err}");
}

/// `--build-context NAME=oci-layout://PATH[:TAG|@DIGEST]`: an image in an OCI layout made by
/// another tool (skopeo), loaded untagged, used as a base.
#[test]
fn named_oci_layout_contexts_by_tag_and_digest() {
    if !sandbox_available() {
        return;
    }
    if Command::new("skopeo").arg("--version").output().is_err() {
        if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
            panic!("skopeo is required (KILN_REQUIRE_ALL)");
        }
        eprintln!("SKIPPED: skopeo is not installed");
        return;
    }
    let k = Kiln::with_busybox();
    let work = Context::new();
    let archive = work.path().join("bb.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    let layout = work.path().join("layout");
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:v1", layout.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();

    let ctx = Context::new().file(
        "Dockerfile",
        "FROM base\nRUN echo on-the-layout > /marker\n",
    );
    let images_before = k.ok(&["images", "-q"]);
    for (tag, spec) in [
        (
            "named:tag",
            format!("base=oci-layout://{}:v1", layout.display()),
        ),
        (
            "named:only",
            format!("base=oci-layout://{}", layout.display()),
        ),
        (
            "named:digest",
            format!("base=oci-layout://{}@{digest}", layout.display()),
        ),
    ] {
        k.ok(&["build", "-t", tag, "--build-context", &spec, ctx.arg()]);
        assert_eq!(
            k.ok(&["run", "--rm", tag, "cat", "/marker"]),
            "on-the-layout\n",
            "{spec}"
        );
    }
    // Loading the layout tagged nothing.
    let names = k.ok(&["images"]);
    assert!(!names.contains("v1"), "{names}");
    assert!(!images_before.is_empty());

    let err = k.fails(&[
        "build",
        "--build-context",
        &format!("base=oci-layout://{}:nope", layout.display()),
        ctx.arg(),
    ]);
    assert!(err.contains("no image tagged \"nope\""), "{err}");
}

#[test]
fn version_and_info_describe_kiln_and_the_machine() {
    let k = Kiln::empty();
    let v = k.ok(&["version"]);
    assert!(v.starts_with("Client: kiln\n Version:"), "{v}");
    assert!(v.contains("OS/Arch:     linux/"), "{v}");
    let doc: serde_json::Value =
        serde_json::from_str(&k.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(doc["Client"]["Os"], "linux");
    assert_eq!(
        k.ok(&["version", "-f", "{{.Client.Version}}"]).trim(),
        doc["Client"]["Version"].as_str().unwrap()
    );
    let info: serde_json::Value =
        serde_json::from_str(&k.ok(&["info", "--format", "json"])).unwrap();
    assert_eq!(info["Containers"], 0);
    assert_eq!(info["Images"], 0);
    assert_eq!(info["Driver"], "overlayfs");
    assert_eq!(
        info["KilnRootDir"].as_str().unwrap(),
        k.root.path().to_str().unwrap()
    );
    let text = k.ok(&["info"]);
    assert!(
        text.contains("\nImages: 0\n") && text.contains("Storage Driver: overlayfs"),
        "{text}"
    );
    let bad = k.fails(&["info", "-f", "{{.Nope"]);
    assert!(bad.contains("unclosed action"), "{bad}");
}
