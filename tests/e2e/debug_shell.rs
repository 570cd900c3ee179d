//! Issue 17: a shell in the state a failed `RUN` left (`kiln debug shell`, `kiln build
//! --on-error=shell`): the same files, env, workdir and mounts, never a secret in the store.

use crate::support::{Context, Kiln, sandbox_available, text};
use std::io::Write;
use std::process::Stdio;

fn failing_context() -> Context {
    Context::new().file("token.txt", "s3cr3t-value\n").file(
        "Dockerfile",
        "FROM busybox\nENV STAGE=two\nWORKDIR /work\n\
             RUN --mount=type=cache,id=deps,target=/cache \
                 --mount=type=secret,id=tok \
                 echo cached > /cache/f && echo partial > half.txt && \
                 test -s /run/secrets/tok && exit 3\n",
    )
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs_err::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn a_failed_run_keeps_its_state_for_a_shell() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = failing_context();
    let secret = format!("id=tok,src={}", ctx.path().join("token.txt").display());
    let out = k.run(&["build", "--secret", &secret, "--progress=plain", ctx.arg()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("kiln debug shell"), "{err}");
    let ids = k.ok(&["debug", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 1, "{ids}");
    let listing = k.ok(&["debug", "ls"]);
    assert!(listing.contains("RUN --mount=type=cache"), "{listing}");

    // The state: the files the command wrote, its env, workdir and cache mount; the failed
    // command for the shell's history.
    let seen = k.ok(&[
        "debug",
        "shell",
        "--secret",
        &secret,
        "--",
        "sh",
        "-c",
        "pwd; cat half.txt; echo $STAGE; cat /cache/f; cat /run/secrets/tok; cat $HISTFILE; touch /scribble",
    ]);
    assert_eq!(
        seen,
        "/work\npartial\ntwo\ncached\ns3cr3t-value\n\
         echo cached > /cache/f && echo partial > half.txt && test -s /run/secrets/tok && exit 3\n"
    );
    // What a shell changes is its own: the kept state is as the step left it.
    let again = k.ok(&[
        "debug",
        "shell",
        "--",
        "sh",
        "-c",
        "ls /scribble 2>&1 || echo absent",
    ]);
    assert!(again.contains("absent"), "{again}");
    // The shell's exit code is kiln's.
    let rc = k.run(&["debug", "shell", "--", "sh", "-c", "exit 4"]);
    assert_eq!(rc.status.code(), Some(4));

    // No secret reached the store: not in the kept state, not anywhere else.
    let mut files = Vec::new();
    files_under(k.root.path(), &mut files);
    for f in files {
        if let Ok(bytes) = fs_err::read(&f) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains("s3cr3t-value"),
                "the secret is in {}",
                f.display()
            );
        }
    }

    k.ok(&["debug", "rm", "-a"]);
    assert_eq!(k.ok(&["debug", "ls", "-q"]), "");
    let err = k.fails(&["debug", "shell"]);
    assert!(err.contains("no failed step is kept"), "{err}");
}

#[test]
fn on_error_shell_starts_a_shell_in_the_failed_step() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = failing_context();
    let secret = format!("id=tok,src={}", ctx.path().join("token.txt").display());
    let mut child = k
        .command()
        .args(["build", "--on-error=shell", "--secret", &secret, ctx.arg()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cat half.txt\necho \"in $PWD as $(id -u)\"\nexit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the build still fails");
    let stdout = text(&out.stdout);
    assert_eq!(stdout, "partial\nin /work as 0\n", "{}", text(&out.stderr));
}
