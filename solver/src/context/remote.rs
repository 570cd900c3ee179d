//! Build contexts that are not a local directory, as `docker build` takes them: stdin (a tar
//! of the context, plain or compressed, or a Dockerfile alone), an http(s) URL (a tarball or a
//! Dockerfile), or a git repository (`URL#REF:SUBDIR`). Each is made into a directory under
//! the store's scratch that goes away with the [`FetchedContext`].

use crate::error::{Error, Result};
use crate::host::{Host, tokio_runtime};
use futures::StreamExt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// No byte from a context URL or a git server for this long: give up.
const IDLE: Duration = Duration::from_secs(30);
/// Connecting to a context URL.
const CONNECT: Duration = Duration::from_secs(10);
/// A git fetch as a whole (git's own protocol has no idle limit of its own).
const GIT_DEADLINE: Duration = Duration::from_secs(600);

/// Where a context comes from, as the build's context argument says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A directory.
    Dir(PathBuf),
    /// `-`.
    Stdin,
    /// An http(s) URL of a tarball or a Dockerfile.
    Url(String),
    /// A git repository, a ref (branch, tag or commit; none: the default branch) and a
    /// subdirectory.
    Git {
        url: String,
        reference: Option<String>,
        subdir: Option<String>,
    },
}

impl ContextSource {
    /// docker's rules: `-` is stdin; `git://…`, `git@…`, `github.com/…` and http(s) URLs whose
    /// path ends in `.git` are repositories (`#ref:subdir` after them); other http(s) URLs are
    /// tarballs or Dockerfiles; anything else is a directory.
    pub fn parse(arg: &str) -> ContextSource {
        if arg == "-" {
            return ContextSource::Stdin;
        }
        let (base, fragment) = match arg.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (arg, None),
        };
        let http = base.starts_with("http://") || base.starts_with("https://");
        let git = base.starts_with("git://")
            || base.starts_with("git@")
            || base.starts_with("github.com/")
            || (http && base.trim_end_matches('/').ends_with(".git"));
        if git {
            let (reference, subdir) = match fragment {
                Some(f) => match f.split_once(':') {
                    Some((r, d)) => (non_empty(r), non_empty(d)),
                    None => (non_empty(f), None),
                },
                None => (None, None),
            };
            let url = match base.strip_prefix("github.com/") {
                Some(rest) => format!("https://github.com/{rest}"),
                None => base.to_owned(),
            };
            return ContextSource::Git {
                url,
                reference,
                subdir,
            };
        }
        if http {
            return ContextSource::Url(arg.to_owned());
        }
        ContextSource::Dir(PathBuf::from(arg))
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A context made from stdin, a URL or a repository, in the store's scratch.
pub struct FetchedContext {
    dir: tempfile::TempDir,
    context: PathBuf,
    dockerfile: bool,
}

impl FetchedContext {
    /// Fetches `source` (not a directory).
    pub fn fetch(host: &Host, source: &ContextSource) -> Result<FetchedContext> {
        match source {
            ContextSource::Dir(d) => Err(Error::other(
                "build context",
                format!("{} is a local directory", d.display()),
            )),
            ContextSource::Stdin => Self::read(host, std::io::stdin().lock()),
            ContextSource::Url(url) => Self::download(host, url),
            ContextSource::Git {
                url,
                reference,
                subdir,
            } => Self::clone(host, url, reference.as_deref(), subdir.as_deref()),
        }
    }

    fn scratch(host: &Host) -> Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(host.store().tmp_dir())
            .map_err(|e| Error::other("build context", e))?;
        fs_err::create_dir(dir.path().join("context"))
            .map_err(|e| Error::other("build context", e))?;
        Ok(dir)
    }

    /// A tar (plain, gzip or zstd) unpacked as the context, or a Dockerfile with an empty one.
    pub fn read(host: &Host, input: impl Read) -> Result<FetchedContext> {
        let dir = Self::scratch(host)?;
        let context = dir.path().join("context");
        let mut input = BufReader::with_capacity(
            1 << 16,
            kiln_cache::apply::decompress(input).map_err(Error::Cache)?,
        );
        // A tar names its format at byte 257 ("ustar" for POSIX and GNU archives).
        let head = input
            .fill_buf()
            .map_err(|e| Error::other("build context", e))?;
        let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
        if !is_tar {
            let mut out = fs_err::File::create(dir.path().join("Dockerfile"))
                .map_err(|e| Error::other("build context", e))?;
            std::io::copy(&mut input, &mut out).map_err(|e| Error::other("build context", e))?;
            return Ok(FetchedContext {
                dir,
                context,
                dockerfile: true,
            });
        }
        // The safe applier: nothing in the tar can leave the directory.
        let opts = kiln_cache::ApplyOptions {
            same_owner: false,
            allow_devices: false,
            ..kiln_cache::ApplyOptions::default()
        };
        kiln_cache::apply_layer(input, &context, &opts)
            .map_err(|e| Error::other("build context", e))?;
        Ok(FetchedContext {
            dir,
            context,
            dockerfile: false,
        })
    }

    fn download(host: &Host, url: &str) -> Result<FetchedContext> {
        let err = |m: String| Error::other(format!("build context {url}"), m);
        let file = tempfile::Builder::new()
            .prefix("context-download-")
            .tempfile_in(host.store().tmp_dir())
            .map_err(|e| err(e.to_string()))?;
        let mut out = file.reopen().map_err(|e| err(e.to_string()))?;
        tokio_runtime()?.block_on(async {
            let client = reqwest::Client::builder()
                .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT)
                .read_timeout(IDLE)
                .build()
                .map_err(|e| err(crate::error::chain(&e)))?;
            let resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| err(crate::error::chain(&e)))?;
            if !resp.status().is_success() {
                return Err(err(format!("server answered {}", resp.status())));
            }
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| err(crate::error::chain(&e)))?;
                out.write_all(&chunk).map_err(|e| err(e.to_string()))?;
            }
            Ok(())
        })?;
        let f = fs_err::File::open(file.path()).map_err(|e| err(e.to_string()))?;
        Self::read(host, f)
    }

    fn clone(
        host: &Host,
        url: &str,
        reference: Option<&str>,
        subdir: Option<&str>,
    ) -> Result<FetchedContext> {
        let what = format!("build context {url}");
        let err = |m: String| Error::other(what.clone(), m);
        if let Some(d) = subdir
            && Path::new(d)
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            return Err(err(format!("subdirectory {d:?} leaves the repository")));
        }
        let dir = Self::scratch(host)?;
        let repo = dir.path().join("context");
        let git = |args: &[&str]| -> Result<()> {
            let mut cmd = Command::new("git");
            cmd.arg("-C")
                .arg(&repo)
                .args(["-c", "http.lowSpeedLimit=1", "-c"])
                .arg(format!("http.lowSpeedTime={}", IDLE.as_secs()))
                .args(["-c", "protocol.ext.allow=never"])
                .args(args)
                .env("GIT_TERMINAL_PROMPT", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            run_with_deadline(cmd, GIT_DEADLINE)
                .map_err(|m| err(format!("git {}: {m}", args.join(" "))))
        };
        git(&["init", "--quiet"])?;
        git(&["remote", "add", "origin", url])?;
        // A shallow fetch of just what is asked for: a branch, a tag or a commit.
        git(&[
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "origin",
            reference.unwrap_or("HEAD"),
        ])?;
        git(&["checkout", "--quiet", "--detach", "FETCH_HEAD"])?;
        // BuildKit leaves the repository's .git out of the context.
        fs_err::remove_dir_all(repo.join(".git")).map_err(|e| err(e.to_string()))?;
        let context = match subdir {
            Some(d) => repo.join(d),
            None => repo,
        };
        if !context.is_dir() {
            return Err(err(format!(
                "subdirectory {:?} not found in the repository",
                subdir.unwrap_or("")
            )));
        }
        Ok(FetchedContext {
            dir,
            context,
            dockerfile: false,
        })
    }

    /// The context directory (empty when the source was a Dockerfile alone).
    pub fn path(&self) -> &Path {
        &self.context
    }

    /// The Dockerfile, when the source was one.
    pub fn dockerfile(&self) -> Option<PathBuf> {
        self.dockerfile.then(|| self.dir.path().join("Dockerfile"))
    }
}

/// Runs `cmd`, killing it past `deadline`; the error is its stderr's last line.
fn run_with_deadline(mut cmd: Command, deadline: Duration) -> std::result::Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", deadline.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let text = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("{status}: {}", last.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_arguments_parse_as_docker_reads_them() {
        assert_eq!(ContextSource::parse("-"), ContextSource::Stdin);
        assert_eq!(ContextSource::parse("."), ContextSource::Dir(".".into()));
        assert_eq!(
            ContextSource::parse("https://example.com/ctx.tar.gz"),
            ContextSource::Url("https://example.com/ctx.tar.gz".into())
        );
        assert_eq!(
            ContextSource::parse("https://example.com/r.git#v1:app"),
            ContextSource::Git {
                url: "https://example.com/r.git".into(),
                reference: Some("v1".into()),
                subdir: Some("app".into()),
            }
        );
        assert_eq!(
            ContextSource::parse("github.com/o/r#:sub"),
            ContextSource::Git {
                url: "https://github.com/o/r".into(),
                reference: None,
                subdir: Some("sub".into()),
            }
        );
        assert_eq!(
            ContextSource::parse("git://h/r"),
            ContextSource::Git {
                url: "git://h/r".into(),
                reference: None,
                subdir: None,
            }
        );
    }
}
