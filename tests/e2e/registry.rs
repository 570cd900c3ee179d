//! Registry round trips: build → push → skopeo agrees → pull into an empty store → FROM it.

use crate::support::{Context, Kiln, Registry, sandbox_available, text};

#[test]
fn push_pull_and_build_from_a_registry_image() {
    if !sandbox_available() {
        return;
    }
    let Some(reg) = Registry::start() else {
        return;
    };
    let a = Kiln::with_busybox();
    let image = format!("{}/kiln/base:1", reg.host());
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox\nRUN echo pushed > /pushed.txt\nCMD [\"cat\", \"/pushed.txt\"]\n",
        )
        .file("x", "x\n");
    a.ok(&["build", "--push", "-t", &image, ctx.arg()]);
    let out = a.ok(&["push", &image]);
    let digest = out.trim().rsplit(' ').next().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{out}");

    if std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok()
    {
        let sk = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                &format!("docker://{image}"),
            ])
            .output()
            .unwrap();
        assert!(sk.status.success(), "{}", text(&sk.stderr));
        let v: serde_json::Value = serde_json::from_slice(&sk.stdout).unwrap();
        assert_eq!(v["Digest"], digest.as_str(), "skopeo agrees on the digest");
    } else if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
        panic!("skopeo missing: apt-get install skopeo");
    }

    // An empty store builds FROM the registry image: FROM pulls what the store lacks.
    let b = Kiln::empty();
    let ctx2 = Context::new().file(
        "Dockerfile",
        &format!("FROM {image}\nRUN cat /pushed.txt > /again.txt\n"),
    );
    b.ok(&["build", "-t", "child:1", ctx2.arg()]);
    assert_eq!(
        b.ok(&["run", "--rm", "child:1", "cat", "/again.txt"]),
        "pushed\n"
    );
    let inspect: serde_json::Value = serde_json::from_str(&b.ok(&["inspect", &image])).unwrap();
    let repo_digests = inspect[0]["RepoDigests"].to_string();
    assert!(
        repo_digests.contains(&digest),
        "pulled image keeps the pushed digest: {repo_digests}"
    );

    // kiln pull into a third store gives the same digest.
    let c = Kiln::empty();
    c.ok(&["pull", &image]);
    let id_a: serde_json::Value = serde_json::from_str(&a.ok(&["inspect", &image])).unwrap();
    let id_c: serde_json::Value = serde_json::from_str(&c.ok(&["inspect", &image])).unwrap();
    assert_eq!(id_a[0]["Id"], id_c[0]["Id"]);

    // A missing image is a clear error.
    let err = c.fails(&["pull", &format!("{}/kiln/nope:1", reg.host())]);
    assert!(err.contains("not found"), "{err}");
}

/// A registry that refuses connections: `pull` and `FROM` fail with the cause in one line,
/// with no tracing output (no `WARN` retry lines) and no colour on a stderr that is a pipe.
#[test]
fn refused_registry_errors_name_the_cause_without_log_noise() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let image = format!("127.0.0.1:{port}/x:1");
    let k = Kiln::empty();
    let ctx = Context::new().file("Dockerfile", &format!("FROM {image}\nRUN true\n"));
    for args in [vec!["pull", image.as_str()], vec!["build", ctx.arg()]] {
        let err = k.fails(&args);
        let want = format!(
            "GET http://127.0.0.1:{port}/v2/x/manifests/1: connect 127.0.0.1:{port}: connection refused"
        );
        assert_eq!(err.matches(&want).count(), 1, "kiln {args:?}:\n{err}");
        assert_eq!(err.matches("connection refused").count(), 1, "{err}");
        assert!(!err.contains("WARN"), "kiln {args:?}:\n{err}");
        assert!(!err.contains(" INFO "), "kiln {args:?}:\n{err}");
        assert!(!err.contains("\x1b["), "kiln {args:?}:\n{err:?}");
    }
}
