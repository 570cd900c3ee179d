//! The default `SOURCE_DATE_EPOCH` of a build: the commit time of the context's git `HEAD`
//! when the context lies in a git work tree and none of the files the build may read differ
//! from that commit, else 0.
//!
//! "The files the build may read" are the Dockerfile and every path of the context that the
//! `.dockerignore` patterns do not exclude: a modified, staged, deleted, untracked or
//! git-ignored file there makes the tree count as changed (a git-ignored build output copied by
//! `COPY .` changes the image as much as an edited source file). Git itself is asked (`git
//! status`), with a deadline, and any failure (no git, not a work tree, a deadline passed) means
//! 0, never an error.

use super::Matcher;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one git command may take.
const GIT_DEADLINE: Duration = Duration::from_secs(20);

/// The default epoch (see the module doc) for a build of `context` with `dockerfile` and the
/// `.dockerignore` patterns `ignore`.
pub fn default_epoch(context: &Path, dockerfile: &Path, ignore: &[String]) -> i64 {
    git_epoch(context, dockerfile, ignore).unwrap_or(0)
}

fn git_epoch(context: &Path, dockerfile: &Path, ignore: &[String]) -> Option<i64> {
    let matcher = Matcher::new(ignore).ok()?;
    let inside = git(context, &["rev-parse", "--is-inside-work-tree"])?;
    if inside.trim_ascii() != b"true" {
        return None;
    }
    // Paths relative to the context directory (`--porcelain` paths are relative to the
    // repository's top, so ask for the prefix of the context inside it).
    let prefix = git(context, &["rev-parse", "--show-prefix"])?;
    let prefix = String::from_utf8(prefix).ok()?;
    let prefix = prefix.trim_end_matches('\n');
    let status = git(
        context,
        &[
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--ignored=matching",
            "--no-renames",
            "--",
            ".",
        ],
    )?;
    let dockerfile = fs_err::canonicalize(dockerfile).ok();
    let context_abs = fs_err::canonicalize(context).ok()?;
    for entry in status.split(|b| *b == 0).filter(|e| e.len() > 3) {
        let path = std::str::from_utf8(&entry[3..]).ok()?;
        let Some(rel) = path.strip_prefix(prefix) else {
            // A directory above the context (untracked or ignored as a whole) holds all of it.
            if path.ends_with('/') && prefix.starts_with(path) {
                return None;
            }
            continue;
        };
        let rel = rel.trim_end_matches('/');
        let is_dockerfile = dockerfile.as_deref() == Some(context_abs.join(rel).as_path());
        if is_dockerfile || rel.is_empty() || !matcher.matches(rel) {
            tracing::debug!(path = rel, "context differs from git HEAD: default epoch 0");
            return None;
        }
    }
    // A Dockerfile outside the context must be unchanged too.
    if let Some(df) = &dockerfile
        && !df.starts_with(&context_abs)
    {
        let dir = df.parent()?;
        let out = git(
            dir,
            &["status", "--porcelain=v1", "-z", "--ignored=matching", "--"],
        )?;
        let name = df.file_name()?.to_str()?;
        let changed = out
            .split(|b| *b == 0)
            .filter(|e| e.len() > 3)
            .any(|e| e[3..].ends_with(name.as_bytes()));
        if changed {
            return None;
        }
    }
    let time = git(context, &["log", "-1", "--format=%ct", "HEAD"])?;
    std::str::from_utf8(&time).ok()?.trim().parse().ok()
}

/// Runs `git -C dir ARGS` and returns its stdout when it exits 0 within [`GIT_DEADLINE`].
fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let mut child = Command::new("git")
        .arg("-c")
        .arg("safe.directory=*")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < GIT_DEADLINE => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(dir = %dir.display(), "git took too long: default epoch 0");
                return None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    status.success().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
            .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn clean_tree_gives_commit_time_and_changes_give_zero() {
        if Command::new("git").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("KILN_REQUIRE_ALL").is_none(),
                "git missing"
            );
            return;
        }
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        sh(r, &["init", "-q"]);
        let ctx = r.join("app");
        fs_err::create_dir(&ctx).unwrap();
        fs_err::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
        fs_err::write(ctx.join("a.txt"), "a").unwrap();
        fs_err::write(r.join(".gitignore"), "build/\n").unwrap();
        sh(r, &["add", "-A"]);
        sh(r, &["commit", "-q", "-m", "one"]);
        let df = ctx.join("Dockerfile");
        assert_eq!(default_epoch(&ctx, &df, &[]), 1_700_000_000);
        // A change outside the context does not matter.
        fs_err::write(r.join("elsewhere.txt"), "x").unwrap();
        assert_eq!(default_epoch(&ctx, &df, &[]), 1_700_000_000);
        // An untracked file in the context does, unless .dockerignore excludes it.
        fs_err::write(ctx.join("new.txt"), "n").unwrap();
        assert_eq!(default_epoch(&ctx, &df, &[]), 0);
        assert_eq!(
            default_epoch(&ctx, &df, &["new.txt".to_string()]),
            1_700_000_000
        );
        fs_err::remove_file(ctx.join("new.txt")).unwrap();
        // A git-ignored build output the build may copy counts as a change.
        fs_err::create_dir(ctx.join("build")).unwrap();
        fs_err::write(ctx.join("build/out"), "o").unwrap();
        assert_eq!(default_epoch(&ctx, &df, &[]), 0);
        assert_eq!(
            default_epoch(&ctx, &df, &["build".to_string()]),
            1_700_000_000
        );
        // An edited tracked file, and the Dockerfile even when it is ignored.
        fs_err::write(ctx.join("a.txt"), "b").unwrap();
        assert_eq!(default_epoch(&ctx, &df, &["build".to_string()]), 0);
        sh(r, &["checkout", "-q", "--", "."]);
        fs_err::write(&df, "FROM scratch\n").unwrap();
        let ignore = ["build".to_string(), "Dockerfile".to_string()];
        assert_eq!(default_epoch(&ctx, &df, &ignore), 0);
        // A context inside an ignored directory is not the commit's.
        sh(r, &["checkout", "-q", "--", "."]);
        let inner = ctx.join("build/inner");
        fs_err::create_dir_all(&inner).unwrap();
        fs_err::write(inner.join("x"), "x").unwrap();
        assert_eq!(default_epoch(&inner, &inner.join("Dockerfile"), &[]), 0);
        // Not a work tree at all.
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(
            default_epoch(plain.path(), &plain.path().join("Dockerfile"), &[]),
            0
        );
    }
}
