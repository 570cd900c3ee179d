//! Progress as BuildKit shows it, in `--progress=plain`: the internal vertices (the build
//! definition, base image metadata, `.dockerignore`, the build context with its transfer
//! size), every step of the target (CACHED on a no-op rebuild, though nothing is looked at
//! twice), and the export.

use crate::support::{Context, Kiln, build, cached, events, sandbox_available, text};

/// The `#N NAME` header lines, numbers dropped, in order (a vertex once).
fn vertices(plain: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in plain.lines() {
        let Some(rest) = l.strip_prefix('#') else {
            continue;
        };
        let Some((n, tail)) = rest.split_once(' ') else {
            continue;
        };
        if n.parse::<usize>().is_err() {
            continue;
        }
        let is_header = !tail.starts_with("CACHED")
            && !tail.starts_with("DONE ")
            && !tail.starts_with("transferring ")
            && !tail.starts_with("exporting layers")
            && !tail.starts_with("writing image")
            && !tail.starts_with("naming to")
            && !tail.starts_with("ERROR")
            && !tail.chars().next().is_some_and(|c| c.is_ascii_digit());
        if is_header && !out.iter().any(|o| o == tail) {
            out.push(tail.to_owned());
        }
    }
    out
}

/// The lines of vertex `name` (its number found from its header).
fn lines_of(plain: &str, name: &str) -> Vec<String> {
    let n = plain
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix('#')?;
            let (n, tail) = rest.split_once(' ')?;
            (tail == name).then(|| n.to_owned())
        })
        .unwrap_or_else(|| panic!("no vertex {name:?} in:\n{plain}"));
    let prefix = format!("#{n} ");
    plain
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| *l != name)
        .map(str::to_owned)
        .collect()
}

#[test]
fn plain_progress_lists_every_vertex_as_buildkit_does() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new()
        .file(
            "Dockerfile",
            "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt\nCMD [\"sh\"]\n",
        )
        .file("a.txt", "hello\n");
    let plain = |k: &Kiln| {
        let out = k.run(&["build", "--progress=plain", "-t", "prog:1", ctx.arg()]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        err
    };
    let first = plain(&k);
    let v = vertices(&first);
    assert_eq!(
        v[0], "[internal] load build definition from Dockerfile",
        "{first}"
    );
    assert_eq!(
        v[1],
        "[internal] load metadata for docker.io/library/busybox:latest"
    );
    assert_eq!(v[2], "[internal] load .dockerignore");
    assert!(
        v[3].starts_with("[1/3] FROM docker.io/library/busybox:latest"),
        "{first}"
    );
    assert_eq!(
        v[4..],
        [
            "[internal] load build context",
            "[2/3] COPY a.txt /a.txt",
            "[3/3] RUN cat /a.txt",
            "exporting to image",
        ]
    );
    assert_eq!(
        lines_of(&first, "[internal] load build definition from Dockerfile")[0],
        "transferring dockerfile: 57B done"
    );
    assert_eq!(
        lines_of(&first, "[internal] load build context")[0],
        "transferring context: 6B done",
        "{first}"
    );
    let run = lines_of(&first, "[3/3] RUN cat /a.txt");
    assert!(run[0].ends_with(" hello"), "{first}");
    assert!(run.last().unwrap().starts_with("DONE "), "{first}");
    let export = lines_of(&first, "exporting to image");
    assert_eq!(export[0], "exporting layers done");
    assert!(export[1].starts_with("writing image sha256:"), "{first}");
    assert_eq!(export[2], "naming to docker.io/library/prog:1 done");
    // The summary starts a line of its own.
    assert!(first.contains("DONE 0.0s\nkiln: built prog:1 "), "{first}");

    // A no-op rebuild lists every step of the target, each CACHED.
    let second = plain(&k);
    assert_eq!(vertices(&second), v, "{second}");
    for step in ["[2/3] COPY a.txt /a.txt", "[3/3] RUN cat /a.txt"] {
        assert_eq!(lines_of(&second, step), ["CACHED"], "{second}");
    }
    assert!(second.contains("(0 steps run, 3 cached)"), "{second}");
    // The context is read each build: never CACHED, with its size.
    assert_eq!(
        lines_of(&second, "[internal] load build context"),
        ["transferring context: 6B done", "DONE 0.0s"]
    );

    // An edited context: its new size, and the steps after it run.
    ctx.write("a.txt", "hello, world\n");
    let third = plain(&k);
    assert_eq!(
        lines_of(&third, "[internal] load build context")[0],
        "transferring context: 13B done"
    );
    assert!(
        lines_of(&third, "[3/3] RUN cat /a.txt")[0].ends_with(" hello, world"),
        "{third}"
    );

    // rawjson: the same vertices, one JSON event per line.
    let raw = build(&k, &ctx, &["-t", "prog:1"]);
    let started: Vec<String> = events(&raw)
        .iter()
        .filter(|e| e["event"] == "started")
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        started,
        [
            "[internal] load build definition from Dockerfile",
            "[internal] load metadata for docker.io/library/busybox:latest",
            "[internal] load .dockerignore",
            "[internal] load build context",
            "exporting to image",
        ],
        "{raw}"
    );
    let c = cached(&raw);
    assert_eq!(c.len(), 3, "{raw}");
    assert_eq!(c[1..], ["[2/3] COPY a.txt /a.txt", "[3/3] RUN cat /a.txt"]);
}
