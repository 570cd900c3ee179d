//! The front door, as `docker build` and buildx have it: the context or the Dockerfile on
//! stdin, and the Dockerfile's name.

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
    let tmp = k.root.path().join("tmp");
    let left: Vec<_> = fs_err::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with("context-")),
        "{left:?}"
    );
}

#[test]
fn a_lowercase_dockerfile_is_found_when_dockerfile_is_absent() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file("dockerfile", "FROM busybox\nRUN echo lower > /which\n");
    k.ok(&["build", "-t", "lower:1", ctx.arg()]);
    assert_eq!(
        k.ok(&["run", "--rm", "lower:1", "cat", "/which"]),
        "lower\n"
    );
    // Both present: `Dockerfile` wins.
    ctx.write("Dockerfile", "FROM busybox\nRUN echo upper > /which\n");
    k.ok(&["build", "-t", "lower:2", ctx.arg()]);
    assert_eq!(
        k.ok(&["run", "--rm", "lower:2", "cat", "/which"]),
        "upper\n"
    );
}
