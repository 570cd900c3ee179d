//! Lowering: stages, scoping, config, digests.
//!
//! A fake resolver stands in for the image store (the resolver is the CLI's boundary): it
//! returns a busybox-like config with a fixed digest and records every call, so pruning can be
//! asserted.

use std::cell::RefCell;
use std::collections::BTreeMap;

use kiln_frontend::diagnostic::render;
use kiln_frontend::lower::{ImageResolver, LowerOptions, Lowered, ResolvedImage, lower};
use kiln_frontend::parser::parse;
use kiln_graph::{
    CacheSharing, ChownOpt, CopyAction, Definition, ExecOp, FileAction, FileOp, History,
    ImageConfig, LocalSource, MountKind, NetworkMode, Op, RootFs, RunConfig, SecurityMode,
    SourceOp, Vertex,
};
use kiln_oci::{Digest, Platform};

use crate::conformance;

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Resolves every reference to a busybox-like image; `onbuild-base` carries ONBUILD triggers,
/// `empty` has no layers, `missing` fails.
#[derive(Default)]
struct FakeResolver {
    calls: RefCell<Vec<String>>,
}

impl ImageResolver for FakeResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        self.calls.borrow_mut().push(reference.to_owned());
        if reference == "missing" {
            return Err("pull access denied".to_owned());
        }
        let name = if reference.contains('/') {
            reference.to_owned()
        } else {
            format!("docker.io/library/{reference}")
        };
        let name = if name.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            name
        } else {
            format!("{name}:latest")
        };
        let mut config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            config: RunConfig {
                env: vec![PATH.to_owned()],
                cmd: Some(vec!["sh".to_owned()]),
                ..RunConfig::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![DIGEST.to_owned()],
            },
            history: vec![
                History {
                    created_by: "ADD busybox.tar.xz / # buildkit".into(),
                    ..History::default()
                },
                History {
                    created_by: "CMD [\"sh\"]".into(),
                    empty_layer: true,
                    ..History::default()
                },
            ],
            ..ImageConfig::default()
        };
        if reference == "onbuild-base" {
            config.config.on_build = vec![
                "RUN echo triggered".to_owned(),
                "COPY --from=helper /h /h".to_owned(),
            ];
        }
        if reference == "empty" {
            config.rootfs.diff_ids.clear();
            config.history.clear();
        }
        if reference == "noenv" {
            config.config.env.clear();
        }
        Ok(ResolvedImage {
            reference: name,
            digest: DIGEST.parse().ok(),
            config,
        })
    }
}

fn amd64() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    }
}

fn opts() -> LowerOptions {
    LowerOptions {
        target_platform: amd64(),
        build_platform: amd64(),
        dockerignore: vec!["*.log".into()],
        ..LowerOptions::default()
    }
}

fn try_lower(src: &str, o: &LowerOptions) -> Result<(Lowered, FakeResolver), String> {
    let ast = parse(src).map_err(|e| render(&e, "Dockerfile", src))?;
    let r = FakeResolver::default();
    let l = lower(&ast, o, &r).map_err(|e| render(&e, "Dockerfile", src))?;
    assert_eq!(l.definition.validate(), Ok(()), "graph invariant");
    Ok((l, r))
}

fn low(src: &str) -> Lowered {
    low_with(src, &opts())
}

fn low_with(src: &str, o: &LowerOptions) -> Lowered {
    match try_lower(src, o) {
        Ok((l, _)) => l,
        Err(e) => panic!("lowering failed:\n{e}"),
    }
}

fn err(src: &str) -> String {
    err_with(src, &opts())
}

fn err_with(src: &str, o: &LowerOptions) -> String {
    match try_lower(src, o) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e,
    }
}

fn root(def: &Definition) -> &Vertex {
    let Some(d) = &def.root else {
        panic!("no root")
    };
    &def.vertices[d]
}

fn input<'a>(def: &'a Definition, v: &Vertex, i: usize) -> &'a Vertex {
    &def.vertices[&v.inputs[i]]
}

fn exec(v: &Vertex) -> &ExecOp {
    match &v.op {
        Op::Exec(e) => e,
        other => panic!("not an exec: {other:?}"),
    }
}

fn file(v: &Vertex) -> &FileOp {
    match &v.op {
        Op::File(f) => f,
        other => panic!("not a file op: {other:?}"),
    }
}

fn copy_action(v: &Vertex) -> &CopyAction {
    match file(v).actions.as_slice() {
        [FileAction::Copy(c)] => c,
        other => panic!("not one copy: {other:?}"),
    }
}

fn created_by(l: &Lowered) -> Vec<String> {
    l.definition
        .image
        .config
        .history
        .iter()
        .map(|h| h.created_by.clone())
        .collect()
}

/// The stage's vertices along the rootfs chain, root first.
fn chain(def: &Definition) -> Vec<&Vertex> {
    let mut out = Vec::new();
    let mut cur = def.root.as_ref().map(|d| &def.vertices[d]);
    while let Some(v) = cur {
        out.push(v);
        cur = match &v.op {
            Op::Exec(ExecOp {
                rootfs: Some(i), ..
            })
            | Op::File(FileOp { base: Some(i), .. }) => Some(&def.vertices[&v.inputs[*i]]),
            _ => None,
        };
    }
    out
}

fn descriptions(def: &Definition) -> Vec<String> {
    chain(def)
        .iter()
        .rev()
        .map(|v| v.meta.description.clone())
        .collect()
}

#[test]
fn single_stage_run_and_copy() {
    let l = low("FROM busybox\nRUN echo hi\nCOPY src/ /src/\n");
    let def = &l.definition;
    let copy = root(def);
    let c = copy_action(copy);
    assert_eq!(
        (c.src.clone(), c.dest.as_str()),
        (vec!["src".to_owned()], "/src/")
    );
    assert!(!c.extract_archive);
    let ctx = input(def, copy, c.src_input);
    assert_eq!(
        ctx.op,
        Op::Source(SourceOp::Local(LocalSource {
            name: "context".into(),
            include: vec!["src".into()],
            exclude: vec!["*.log".into()],
        }))
    );
    let run = input(def, copy, 0);
    let e = exec(run);
    assert_eq!(e.args, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(e.env, [PATH]);
    assert_eq!((e.cwd.as_str(), e.user.as_str()), ("/", ""));
    assert_eq!(
        (e.network, e.security),
        (NetworkMode::Default, SecurityMode::Sandbox)
    );
    let from = input(def, run, 0);
    let Op::Source(SourceOp::Image {
        reference,
        digest,
        platform,
    }) = &from.op
    else {
        panic!("not an image: {:?}", from.op)
    };
    assert_eq!(reference, "docker.io/library/busybox:latest");
    assert_eq!(
        digest.as_ref().map(Digest::to_string).as_deref(),
        Some(DIGEST)
    );
    assert_eq!(platform, &amd64());
    assert_eq!(
        descriptions(def),
        [
            format!("[1/3] FROM docker.io/library/busybox:latest@{DIGEST}"),
            "[2/3] RUN echo hi".to_owned(),
            "[3/3] COPY src/ /src/".to_owned(),
        ]
    );
    assert_eq!(run.meta.line, Some(2));
    assert_eq!(run.meta.stage.as_deref(), Some("0"));
    assert_eq!(def.vertices.len(), 4);
    assert_eq!(
        created_by(&l),
        [
            "ADD busybox.tar.xz / # buildkit",
            "CMD [\"sh\"]",
            "RUN /bin/sh -c echo hi # buildkit",
            "COPY src/ /src/ # buildkit",
        ]
    );
    let h = &def.image.config.history;
    assert_eq!(
        (
            h[2].comment.as_str(),
            h[2].empty_layer,
            h[2].created.as_ref()
        ),
        ("buildkit.dockerfile.v0", false, None)
    );
    assert_eq!(l.stages.len(), 1);
    assert_eq!(l.stages[0].base, "busybox");
    assert!(l.warnings.is_empty());
}

#[test]
fn config_instructions_and_their_history() {
    let src = r#"FROM busybox
MAINTAINER someone@example.com
ENV A=1 B="two words"
ENV C $A-$B
LABEL org.x=$A "k 2"=v
EXPOSE 80 53/udp 8000-8001
VOLUME /data
VOLUME ["/logs"]
USER app:staff
WORKDIR /app
WORKDIR sub
STOPSIGNAL SIGKILL
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=1m30s --timeout=3s --retries=3 CMD curl -f http://localhost/
ONBUILD RUN echo later
ENTRYPOINT ["/entry"]
"#;
    let l = low(src);
    let cfg = &l.definition.image.config;
    let rc = &cfg.config;
    assert_eq!(cfg.author, "someone@example.com");
    assert_eq!(rc.env, [PATH, "A=1", "B=two words", "C=1-two words"]);
    assert_eq!(rc.labels.get("org.x").map(String::as_str), Some("1"));
    assert_eq!(rc.labels.get("k 2").map(String::as_str), Some("v"));
    assert_eq!(
        rc.exposed_ports.keys().collect::<Vec<_>>(),
        ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]
    );
    assert_eq!(rc.volumes.keys().collect::<Vec<_>>(), ["/data", "/logs"]);
    assert_eq!(rc.user, "app:staff");
    assert_eq!(rc.working_dir, "/app/sub");
    assert_eq!(rc.stop_signal, "SIGKILL");
    assert_eq!(rc.shell, ["/bin/bash", "-c"]);
    let hc = rc.healthcheck.clone().unwrap_or_default();
    assert_eq!(hc.test, ["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(
        (hc.interval, hc.timeout, hc.retries),
        (90_000_000_000, 3_000_000_000, 3)
    );
    assert_eq!(rc.on_build, ["RUN echo later"]);
    assert_eq!(rc.entrypoint, Some(vec!["/entry".to_owned()]));
    assert_eq!(
        rc.cmd, None,
        "ENTRYPOINT resets the CMD inherited from the base"
    );
    assert_eq!(
        created_by(&l)[2..],
        [
            "MAINTAINER someone@example.com",
            "ENV A=1 B=two words",
            "ENV C=1-two words",
            "LABEL org.x=1 k 2=v",
            "EXPOSE 80 53/udp 8000-8001",
            "VOLUME [/data]",
            "VOLUME [/logs]",
            "USER app:staff",
            "WORKDIR /app",
            "WORKDIR /app/sub",
            "STOPSIGNAL SIGKILL",
            "SHELL [/bin/bash -c]",
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:1m30s Timeout:3s \
             StartPeriod:0s StartInterval:0s Retries:3}",
            "ENTRYPOINT [\"/entry\"]",
        ]
    );
    let empties: Vec<bool> = cfg.history[2..].iter().map(|h| h.empty_layer).collect();
    let mut expected = vec![true; 14];
    expected[8] = false;
    expected[9] = false;
    assert_eq!(empties, expected, "only WORKDIR makes layers here");
    // WORKDIR creates the directory, owned by the USER in effect.
    let mkdir = root(&l.definition);
    assert_eq!(
        file(mkdir).actions,
        [FileAction::Mkdir {
            path: "/app/sub".into(),
            mode: 0o755,
            chown: Some(ChownOpt {
                user: "app".into(),
                group: Some("staff".into())
            }),
        }]
    );
    assert_eq!(mkdir.meta.description, "[3/3] WORKDIR sub");
}

#[test]
fn cmd_entrypoint_and_healthcheck_forms() {
    let l = low("FROM busybox\nCMD echo $HOME\nENTRYPOINT [\"/e\"]\nHEALTHCHECK NONE\n");
    let rc = &l.definition.image.config.config;
    assert_eq!(
        rc.cmd,
        Some(vec!["/bin/sh".into(), "-c".into(), "echo $HOME".into()]),
        "CMD is not expanded"
    );
    assert!(rc.args_escaped);
    assert_eq!(
        rc.entrypoint,
        Some(vec!["/e".into()]),
        "CMD set in the same stage is kept"
    );
    assert_eq!(
        rc.healthcheck.as_ref().map(|h| h.test.clone()),
        Some(vec!["NONE".to_owned()])
    );
    assert_eq!(
        created_by(&l)[2..],
        [
            "CMD [\"/bin/sh\" \"-c\" \"echo $HOME\"]",
            "ENTRYPOINT [\"/e\"]",
            "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}",
        ]
    );
    let l = low(
        "FROM busybox\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN a | b\nENTRYPOINT exec app\n",
    );
    assert_eq!(
        exec(root(&l.definition)).args,
        ["/bin/bash", "-o", "pipefail", "-c", "a | b"]
    );
    assert_eq!(
        l.definition.image.config.config.entrypoint,
        Some(vec![
            "/bin/bash".into(),
            "-o".into(),
            "pipefail".into(),
            "-c".into(),
            "exec app".into()
        ])
    );
}

#[test]
fn stages_by_name_index_and_image() {
    let src = "FROM busybox AS Build\nRUN make\nFROM alpine:3.20 AS other\nRUN true\n\
               FROM build AS test\nRUN test\nFROM scratch\nCOPY --from=BUILD /out /a\nCOPY --from=1 /b /b\n\
               COPY --from=nginx:1.27 /etc/nginx /etc/nginx\n";
    let (l, r) = match try_lower(src, &opts()) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    let def = &l.definition;
    let top = root(def);
    let c = copy_action(top);
    let Op::Source(SourceOp::Image { reference, .. }) = &input(def, top, c.src_input).op else {
        panic!("COPY --from=nginx:1.27 reads an image")
    };
    assert_eq!(reference, "docker.io/library/nginx:1.27");
    let from_other = input(def, top, 0);
    let c1 = copy_action(from_other);
    assert_eq!(
        exec(input(def, from_other, c1.src_input)).args,
        ["/bin/sh", "-c", "true"]
    );
    let from_build = input(def, from_other, 0);
    assert_eq!(
        file(from_build).base,
        None,
        "FROM scratch: the first change has no base"
    );
    let c0 = copy_action(from_build);
    assert_eq!(
        exec(input(def, from_build, c0.src_input)).args,
        ["/bin/sh", "-c", "make"]
    );
    // Stage `test` is not needed by the last stage: not lowered.
    assert!(
        def.vertices
            .values()
            .all(|v| !matches!(&v.op, Op::Exec(e) if e.args[2] == "test"))
    );
    assert_eq!(*r.calls.borrow(), ["busybox", "alpine:3.20", "nginx:1.27"]);
    assert_eq!(
        l.stages
            .iter()
            .map(|s| (s.name.clone(), s.base.clone(), s.reachable))
            .collect::<Vec<_>>(),
        [
            (Some("build".into()), "busybox".into(), true),
            (Some("other".into()), "alpine:3.20".into(), true),
            (Some("test".into()), "build".into(), false),
            (None, "scratch".into(), true),
        ]
    );
    assert_eq!(
        top.meta.description,
        "[stage-3 3/3] COPY --from=nginx:1.27 /etc/nginx /etc/nginx"
    );
    assert_eq!(top.meta.stage.as_deref(), Some("3"));
}

#[test]
fn from_stage_continues_filesystem_and_config() {
    let src = "FROM busybox AS base\nENV A=1\nARG V=7\nWORKDIR /w\nCMD [\"x\"]\nONBUILD RUN echo child\n\
               FROM base\nRUN echo $A\n";
    let l = low(src);
    let def = &l.definition;
    let run = root(def);
    let e = exec(run);
    assert_eq!(e.cwd, "/w");
    assert_eq!(
        e.env,
        [PATH, "A=1", "V=7"],
        "ARGs of the base stage carry over"
    );
    // The base stage's ONBUILD trigger runs first in the child.
    let trig = input(def, run, 0);
    assert_eq!(exec(trig).args, ["/bin/sh", "-c", "echo child"]);
    assert_eq!(
        trig.meta.description,
        "[stage-1 1/2] ONBUILD RUN echo child"
    );
    assert_eq!(
        run.meta.description, "[stage-1 2/2] RUN echo 1",
        "step names show values"
    );
    assert_eq!(
        file(input(def, trig, 0)).actions.len(),
        1,
        "continues from WORKDIR's vertex"
    );
    let cfg = &def.image.config;
    assert_eq!(cfg.config.cmd, Some(vec!["x".to_owned()]));
    assert!(cfg.config.on_build.is_empty(), "triggers do not carry over");
    assert_eq!(
        created_by(&l),
        [
            "ADD busybox.tar.xz / # buildkit",
            "CMD [\"sh\"]",
            "ENV A=1",
            "ARG V=7",
            "WORKDIR /w",
            "CMD [\"x\"]",
            "RUN |1 V=7 /bin/sh -c echo child # buildkit",
            "RUN |1 V=7 /bin/sh -c echo $A # buildkit",
        ]
    );
}

#[test]
fn stage_chains_hand_state_over_and_reapply_the_image_env() {
    // `a` has two children: both see its state. `b` has one child, `c`, which takes b's state;
    // `COPY --from=b` later still finds b's filesystem. In `b` an ARG shadows ENV A; BuildKit
    // sets the image env again when `c` starts, so `c`'s step sees A=env, not A=arg.
    let src = "FROM busybox AS a\nENV A=env\nRUN echo a\n\
               FROM a AS b\nARG A=arg\nRUN echo b\n\
               FROM a AS side\nRUN echo side\n\
               FROM b AS c\nRUN echo c\nCOPY --from=b /x /y\nCOPY --from=side /s /s\n";
    let l = low(src);
    let def = &l.definition;
    let copy_side = root(def);
    let copy_b = input(def, copy_side, 0);
    let run_c = input(def, copy_b, 0);
    assert_eq!(exec(run_c).args, ["/bin/sh", "-c", "echo c"]);
    assert_eq!(exec(run_c).env, [PATH, "A=env"]);
    let run_b = input(def, run_c, 0);
    assert_eq!(exec(run_b).args, ["/bin/sh", "-c", "echo b"]);
    assert_eq!(exec(run_b).env, [PATH, "A=arg"]);
    let from_b = copy_b
        .inputs
        .iter()
        .map(|d| &def.vertices[d])
        .find(|v| matches!(&v.op, Op::Exec(e) if e.args[2] == "echo b"));
    assert!(from_b.is_some(), "COPY --from=b reads b's filesystem");
    let from_side = copy_side
        .inputs
        .iter()
        .map(|d| &def.vertices[d])
        .find(|v| matches!(&v.op, Op::Exec(e) if e.args[2] == "echo side"));
    let side = from_side.map(exec);
    assert_eq!(
        side.map(|e| e.env.clone()),
        Some(vec![PATH.to_owned(), "A=env".to_owned()])
    );
    assert_eq!(
        created_by(&l)[2..],
        [
            "ENV A=env",
            "RUN /bin/sh -c echo a # buildkit",
            "ARG A=arg",
            "RUN |1 A=arg /bin/sh -c echo b # buildkit",
            "RUN |1 A=env /bin/sh -c echo c # buildkit",
            "COPY /x /y # buildkit",
            "COPY /s /s # buildkit",
        ]
    );
}

#[test]
fn onbuild_triggers_of_the_base_image_run_after_from() {
    let src = "FROM busybox AS helper\nRUN make-helper\nFROM onbuild-base\nRUN main\n";
    let l = low(src);
    let def = &l.definition;
    assert_eq!(
        descriptions(def),
        [
            format!("[stage-1 1/4] FROM docker.io/library/onbuild-base:latest@{DIGEST}"),
            "[stage-1 2/4] ONBUILD RUN echo triggered".to_owned(),
            "[stage-1 3/4] ONBUILD COPY --from=helper /h /h".to_owned(),
            "[stage-1 4/4] RUN main".to_owned(),
        ]
    );
    let copy = input(def, root(def), 0);
    let c = copy_action(copy);
    assert_eq!(
        exec(input(def, copy, c.src_input)).args[2],
        "make-helper",
        "the trigger pulled stage helper in"
    );
    assert!(def.image.config.config.on_build.is_empty());
    // Without a stage of that name, the trigger's --from is an image.
    let (_, r) = match try_lower("FROM onbuild-base\n", &opts()) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(*r.calls.borrow(), ["onbuild-base", "helper"]);
}

#[test]
fn target_pruning_and_unknown_target() {
    let src = "FROM alpine AS a\nRUN a\nFROM missing AS b\nRUN b\nFROM busybox AS c\nCOPY --from=a /x /x\n";
    let mut o = opts();
    o.target = Some("A".into());
    let (l, r) = match try_lower(src, &o) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        *r.calls.borrow(),
        ["alpine"],
        "no resolver call for stages the target does not need"
    );
    assert_eq!(l.definition.vertices.len(), 2);
    assert_eq!(root(&l.definition).meta.description, "[a 2/2] RUN a");
    o.target = Some("c".into());
    let (l, r) = match try_lower(src, &o) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(*r.calls.borrow(), ["alpine", "busybox"]);
    assert_eq!(l.definition.vertices.len(), 4);
    o.target = Some("bb".into());
    assert_eq!(
        err_with(src, &o),
        "Dockerfile:0:0: target stage \"bb\" could not be found (did you mean b?)\n"
    );
    o.target = Some("b".into());
    assert_eq!(
        err_with(src, &o),
        "Dockerfile:3:1: missing: pull access denied\n3 | FROM missing AS b\n  | ^^^^\n"
    );
}

#[test]
fn stage_errors_are_golden() {
    let mut failures = Vec::new();
    for (src, expected) in [
        (
            "FROM busybox AS a\nFROM alpine AS A\n",
            "Dockerfile:2:16: duplicate stage name \"a\", stage names should be unique\n2 | FROM alpine AS A\n  |                ^\n",
        ),
        (
            "FROM busybox AS a\nCOPY --from=b /x /x\nFROM a AS b\n",
            "Dockerfile:1:1: circular dependency detected on stage: a\n1 | FROM busybox AS a\n  | ^^^^\n",
        ),
        (
            "FROM busybox AS a\nCOPY --from=a /x /x\n",
            "Dockerfile:1:1: circular dependency detected on stage: a\n1 | FROM busybox AS a\n  | ^^^^\n",
        ),
        (
            "FROM busybox\nCOPY --from=3 /x /x\n",
            "Dockerfile:2:6: invalid stage index 3\n2 | COPY --from=3 /x /x\n  |      ^^^^^^^^\n",
        ),
        (
            "FROM busybox AS first\nCOPY --from=later /x /x\nFROM alpine AS later\nFROM first\n",
            "Dockerfile:2:6: cannot copy from stage \"later\", it needs to be defined before current stage \"first\"\n2 | COPY --from=later /x /x\n  |      ^^^^^^^^^^^^\nhelp: move the stage you copy from above this one\n",
        ),
        (
            "ARG X\nFROM busybox\nCOPY --from=$X /x /x\n",
            "Dockerfile:3:6: variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround\n3 | COPY --from=$X /x /x\n  |      ^^^^^^^^^\nhelp: define a new stage with FROM using ARG from global scope as a workaround\n",
        ),
        (
            "ARG A=1\n",
            "Dockerfile:1:1: dockerfile contains no stages to build\n1 | ARG A=1\n  | ^^^\n",
        ),
        (
            "ENV A=1\nFROM busybox\n",
            "Dockerfile:1:1: no build stage in current context\n1 | ENV A=1\n  | ^^^\n",
        ),
        (
            "ARG IMG\nFROM $IMG\n",
            "Dockerfile:2:6: base name ($IMG) should not be blank\n2 | FROM $IMG\n  |      ^^^^\n",
        ),
        (
            "FROM --platform=linux busybox\n",
            "Dockerfile:1:6: failed to parse platform linux\n1 | FROM --platform=linux busybox\n  |      ^^^^^^^^^^^^^^^^\n",
        ),
        (
            "FROM busybox\nENV A=${B:?must-be-set}\n",
            "Dockerfile:2:7: failed to process \"${B:?must-be-set}\": B: must-be-set\n2 | ENV A=${B:?must-be-set}\n  |       ^\n",
        ),
        (
            "FROM busybox\nCOPY --chmod=999 a b\n",
            "Dockerfile:2:6: invalid chmod parameter: '999'. it should be octal string and between 0 and 07777\n2 | COPY --chmod=999 a b\n  |      ^^^^^^^^^^^\n",
        ),
        (
            "FROM busybox\nCOPY https://example.com/x /x\n",
            "Dockerfile:2:6: source can't be a URL for COPY\n2 | COPY https://example.com/x /x\n  |      ^^^^^^^^^^^^^^^^^^^^^\n",
        ),
        (
            "FROM busybox\nEXPOSE 80 http\n",
            "Dockerfile:2:11: invalid containerPort: http\n2 | EXPOSE 80 http\n  |           ^^^^\n",
        ),
        (
            "FROM busybox\nSTOPSIGNAL SIGNOPE\n",
            "Dockerfile:2:12: Invalid signal: SIGNOPE\n2 | STOPSIGNAL SIGNOPE\n  |            ^^^^^^^\n",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/c,sharing=wide true\n",
            "Dockerfile:2:5: unsupported sharing value \"wide\"\n2 | RUN --mount=type=cache,target=/c,sharing=wide true\n  |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
        ),
        (
            "FROM busybox\nRUN --mount=type=bind,target=/ true\n",
            "Dockerfile:2:5: invalid mount target \"/\"\n2 | RUN --mount=type=bind,target=/ true\n  |     ^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
        ),
        (
            "FROM busybox\nADD --checksum=sha256:00 a /a\n",
            "Dockerfile:2:5: checksum requires HTTP(S) or Git sources\n2 | ADD --checksum=sha256:00 a /a\n  |     ^^^^^^^^^^^^^^^^^^^^\n",
        ),
        (
            "FROM busybox\nCOPY --bad a b\n",
            "Dockerfile:2:6: unknown flag: --bad\n2 | COPY --bad a b\n  |      ^^^^^\nhelp: COPY takes --from, --chown, --chmod, --link, --parents and --exclude\n",
        ),
    ] {
        let got = err(src);
        if got != expected {
            failures.push(format!("{src}\n--- expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The typed layer may reject a bad --network first; either way it is an error naming it.
    assert!(err("FROM busybox\nRUN --network=bridge true\n").contains("\"bridge\""));
}

#[test]
fn arg_scoping() {
    let src = "ARG TAG=1.36\nARG UNUSED_GLOBAL=g\nFROM busybox:$TAG\nRUN echo a\nARG TAG\nARG LOCAL=$TAG-x\n\
               RUN echo b\nENV LOCAL=env\nRUN echo c\n";
    let (l, r) = match try_lower(src, &opts()) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        *r.calls.borrow(),
        ["busybox:1.36"],
        "global ARGs expand in FROM"
    );
    let def = &l.definition;
    let c = root(def);
    let b = input(def, c, 0);
    let a = input(def, b, 0);
    assert_eq!(
        exec(a).env,
        [PATH],
        "a global ARG is not visible before it is redeclared"
    );
    assert_eq!(exec(b).env, [PATH, "TAG=1.36", "LOCAL=1.36-x"]);
    assert_eq!(
        exec(c).env,
        [PATH, "TAG=1.36", "LOCAL=env"],
        "ENV wins over the ARG"
    );
    assert_eq!(
        created_by(&l)[2..],
        [
            "RUN /bin/sh -c echo a # buildkit",
            "ARG TAG=1.36",
            "ARG LOCAL=1.36-x",
            "RUN |2 TAG=1.36 LOCAL=1.36-x /bin/sh -c echo b # buildkit",
            "ENV LOCAL=env",
            "RUN |2 TAG=1.36 LOCAL=env /bin/sh -c echo c # buildkit",
        ]
    );
    assert_eq!(
        l.definition.image.config.config.env,
        [PATH, "LOCAL=env"],
        "ARGs stay out of the image ENV"
    );

    // --build-arg overrides defaults (global and local); proxies reach RUN without history.
    let mut o = opts();
    o.build_args = BTreeMap::from([
        ("TAG".to_owned(), "1.37".to_owned()),
        ("LOCAL".to_owned(), "cli".to_owned()),
        ("http_proxy".to_owned(), "http://proxy:3128".to_owned()),
        ("NOBODY".to_owned(), "x".to_owned()),
        ("ZED".to_owned(), "z".to_owned()),
    ]);
    let (l, r) = match try_lower(src, &o) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(*r.calls.borrow(), ["busybox:1.37"]);
    let c = root(&l.definition);
    assert_eq!(exec(c).env, [PATH, "TAG=1.37", "LOCAL=env"]);
    assert_eq!(
        exec(c).proxy_env,
        [
            "HTTP_PROXY=http://proxy:3128",
            "http_proxy=http://proxy:3128"
        ]
    );
    assert!(created_by(&l).iter().all(|h| !h.contains("proxy")));
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        l.warnings[0].message,
        "[Warning] one or more build-args [NOBODY ZED] were not consumed"
    );
}

#[test]
fn arg_takes_effect_from_its_line_and_platform_args() {
    let src = "FROM busybox\nENV BEFORE=${V:-unset}\nARG V=set\nENV AFTER=$V\nARG TARGETARCH\nARG BUILDPLATFORM\n\
               ENV T=$TARGETARCH B=$BUILDPLATFORM P=${TARGETPLATFORM:-none}\n";
    let mut o = opts();
    o.build_platform = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: Some("v8".into()),
    };
    let l = low_with(src, &o);
    let env = &l.definition.image.config.config.env;
    assert_eq!(
        env[1..],
        [
            "BEFORE=unset",
            "AFTER=set",
            "T=amd64",
            "B=linux/arm64/v8",
            "P=none"
        ]
    );
    let l = low("ARG TARGETOS\nFROM busybox:$TARGETOS\nRUN true\n");
    let img = input(&l.definition, root(&l.definition), 0);
    assert!(
        matches!(&img.op, Op::Source(SourceOp::Image { reference, .. }) if reference.ends_with("busybox:linux"))
    );
    let l = low("FROM --platform=$BUILDPLATFORM busybox AS b\nRUN uname -m\n");
    let img = input(&l.definition, root(&l.definition), 0);
    assert!(
        matches!(&img.op, Op::Source(SourceOp::Image { platform, .. }) if platform == &amd64())
    );
}

#[test]
fn word_expansion_applies_where_buildkit_applies_it() {
    let src = "FROM busybox\nENV D=/dst U=app SRC=s W=/work\nWORKDIR $W\nUSER $U\nCOPY --chown=$U:$U $SRC ${D}/\n\
               ADD $SRC.tar $D\nRUN echo $D\nVOLUME $D\nLABEL l=$D\nSTOPSIGNAL ${SIG:-TERM}\n";
    let l = low(src);
    let def = &l.definition;
    let run = root(def);
    assert_eq!(
        exec(run).args,
        ["/bin/sh", "-c", "echo $D"],
        "RUN is left to the shell"
    );
    assert_eq!(exec(run).user, "app");
    assert_eq!(exec(run).cwd, "/work");
    let add = input(def, run, 0);
    let a = copy_action(add);
    assert_eq!(
        (a.src.clone(), a.dest.as_str(), a.extract_archive),
        (vec!["s.tar".to_owned()], "/dst", true)
    );
    let copy = input(def, add, 0);
    let c = copy_action(copy);
    assert_eq!(
        (c.src.clone(), c.dest.as_str()),
        (vec!["s".to_owned()], "/dst/")
    );
    assert_eq!(
        c.chown,
        Some(ChownOpt {
            user: "app".into(),
            group: Some("app".into())
        })
    );
    assert_eq!(copy.meta.description, "[3/5] COPY --chown=app:app s /dst/");
    assert_eq!(run.meta.description, "[5/5] RUN echo /dst");
    let rc = &def.image.config.config;
    assert_eq!(rc.volumes.keys().collect::<Vec<_>>(), ["/dst"]);
    assert_eq!(rc.labels.get("l").map(String::as_str), Some("/dst"));
    assert_eq!(rc.stop_signal, "TERM");
    assert!(created_by(&l).contains(&"COPY --chown=app:app s /dst/ # buildkit".to_owned()));
}

#[test]
fn copy_and_add_details() {
    let src = "FROM busybox\nWORKDIR /app\nCOPY --link --chmod=0755 --exclude=*.tmp a.txt b/ ./\n\
               COPY --parents ./x/./y/*.go /src/\nADD https://example.com/dl/tool.tgz?raw=1 /opt/\n\
               ADD --checksum=sha256:abc https://example.com/f /f\nADD local.tar /l/\n";
    let l = low(src);
    let def = &l.definition;
    let v: Vec<&Vertex> = chain(def).into_iter().rev().collect();
    let c = copy_action(v[2]);
    assert_eq!(c.src, ["a.txt", "b"]);
    assert_eq!(c.dest, "/app/");
    assert_eq!(
        (c.link, c.chmod.as_deref(), c.exclude.clone()),
        (true, Some("0755"), vec!["*.tmp".to_owned()])
    );
    let Op::Source(SourceOp::Local(ctx)) = &input(def, v[2], c.src_input).op else {
        panic!()
    };
    assert_eq!(ctx.include, ["a.txt", "b"]);
    let p = copy_action(v[3]);
    assert!(p.parents);
    assert_eq!(p.src, ["x/./y/*.go"]);
    let h = copy_action(v[4]);
    assert_eq!(
        (h.src.clone(), h.dest.as_str(), h.extract_archive),
        (vec!["tool.tgz".to_owned()], "/opt/", false)
    );
    assert_eq!(
        input(def, v[4], h.src_input).op,
        Op::Source(SourceOp::Http {
            url: "https://example.com/dl/tool.tgz?raw=1".into(),
            checksum: None,
            filename: "tool.tgz".into(),
        })
    );
    let k = copy_action(v[5]);
    assert!(
        matches!(&input(def, v[5], k.src_input).op, Op::Source(SourceOp::Http { checksum: Some(c), .. }) if c == "sha256:abc")
    );
    let t = copy_action(v[6]);
    assert!(
        t.extract_archive,
        "ADD of a local path lets the solver extract archives"
    );
    assert_eq!(
        created_by(&l)[3..],
        [
            "COPY --chmod=0755 a.txt b/ ./ # buildkit",
            "COPY --parents ./x/./y/*.go /src/ # buildkit",
            "ADD https://example.com/dl/tool.tgz?raw=1 /opt/ # buildkit",
            "ADD https://example.com/f /f # buildkit",
            "ADD local.tar /l/ # buildkit",
        ]
    );
    assert!(
        err("FROM busybox\nADD https://github.com/moby/buildkit.git /src\n")
            .contains("git sources are not supported yet")
    );
}

#[test]
fn heredocs_in_run_and_copy() {
    let src = "FROM busybox\nENV NAME=world\nRUN <<EOF\necho one\necho two\nEOF\n\
               RUN python3 <<EOF\nprint(1)\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(2)\nEOF\n\
               COPY <<EOF /greeting\nhello $NAME\nEOF\nCOPY <<'EOF' /app/\nliteral $NAME\nEOF\n";
    let l = low(src);
    let def = &l.definition;
    let v: Vec<&Vertex> = chain(def).into_iter().rev().collect();
    assert_eq!(exec(v[1]).args, ["/bin/sh", "-c", "echo one\necho two\n"]);
    assert_eq!(v[1].meta.description, "[2/6] RUN <<EOF (echo one...)");
    assert_eq!(
        exec(v[2]).args,
        ["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"]
    );
    let shebang = exec(v[3]);
    assert_eq!(shebang.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(shebang.mounts.len(), 1);
    assert_eq!(shebang.mounts[0].target, "/dev/pipes");
    let MountKind::Bind {
        input: Some(i),
        readonly: true,
        ..
    } = shebang.mounts[0].kind
    else {
        panic!()
    };
    assert_eq!(
        file(input(def, v[3], i)).actions,
        [FileAction::Mkfile {
            path: "/EOF".into(),
            data: "#!/usr/bin/env python3\nprint(2)\n".into(),
            mode: 0o755,
            chown: None
        }]
    );
    assert_eq!(
        file(v[4]).actions,
        [FileAction::Mkfile {
            path: "/greeting".into(),
            data: "hello world\n".into(),
            mode: 0o644,
            chown: None
        }]
    );
    assert_eq!(
        file(v[5]).actions,
        [FileAction::Mkfile {
            path: "/app/EOF".into(),
            data: "literal $NAME\n".into(),
            mode: 0o644,
            chown: None
        }]
    );
    assert_eq!(
        created_by(&l)[3],
        "RUN /bin/sh -c echo one\necho two\n # buildkit"
    );
    assert_eq!(created_by(&l)[6], "COPY <<EOF /greeting # buildkit");
}

#[test]
fn run_flags_and_mounts() {
    let src = "FROM busybox AS deps\nRUN make deps\nFROM busybox\nWORKDIR /src\n\
               RUN --network=none --security=insecure \
               --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0700,uid=1 \
               --mount=type=bind,from=deps,source=/out,target=out \
               --mount=type=bind,source=go.mod,target=/src/go.mod \
               --mount=type=tmpfs,target=/tmp,size=64m \
               --mount=type=secret,id=token,required \
               --mount=type=secret,id=aws,env=AWS_KEY \
               --mount=type=ssh build\n";
    let l = low(src);
    let def = &l.definition;
    let run = root(def);
    let e = exec(run);
    assert_eq!(
        (e.network, e.security),
        (NetworkMode::None, SecurityMode::Insecure)
    );
    let kinds: Vec<(&str, &MountKind)> = e
        .mounts
        .iter()
        .map(|m| (m.target.as_str(), &m.kind))
        .collect();
    assert_eq!(
        kinds[0],
        (
            "/root/.cache",
            &MountKind::Cache {
                id: "pip".into(),
                sharing: CacheSharing::Locked,
                from: None,
                source: "/".into(),
                readonly: false,
                mode: 0o700,
                uid: 1,
                gid: 0,
            }
        )
    );
    let MountKind::Bind {
        input: Some(i),
        source,
        readonly: true,
    } = kinds[1].1
    else {
        panic!("{kinds:?}")
    };
    assert_eq!((kinds[1].0, source.as_str()), ("/src/out", "/out"));
    assert_eq!(exec(input(def, run, *i)).args[2], "make deps");
    let MountKind::Bind { input: Some(j), .. } = kinds[2].1 else {
        panic!()
    };
    assert!(
        matches!(&input(def, run, *j).op, Op::Source(SourceOp::Local(c)) if c.include == ["go.mod"])
    );
    assert_eq!(
        kinds[3],
        (
            "/tmp",
            &MountKind::Tmpfs {
                size: Some(64 << 20)
            }
        )
    );
    assert_eq!(
        kinds[4],
        (
            "/run/secrets/token",
            &MountKind::Secret {
                id: "token".into(),
                required: true,
                mode: 0o400,
                uid: 0,
                gid: 0,
                env: None
            }
        )
    );
    assert_eq!(
        kinds[5],
        (
            "",
            &MountKind::Secret {
                id: "aws".into(),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0,
                env: Some("AWS_KEY".into())
            }
        )
    );
    assert_eq!(
        kinds[6],
        (
            "/run/buildkit/ssh_agent.0",
            &MountKind::Ssh {
                id: "default".into(),
                required: false
            }
        )
    );
}

#[test]
fn scratch_root_and_empty_images() {
    let l = low("FROM scratch\nENV A=1\nCMD [\"/app\"]\n");
    assert_eq!(l.definition.root, None);
    assert!(l.definition.vertices.is_empty());
    let cfg = &l.definition.image.config;
    assert_eq!(
        (cfg.os.as_str(), cfg.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(cfg.config.env, [PATH, "A=1"]);
    assert_eq!(cfg.config.working_dir, "/");
    let l = low("FROM scratch\nCOPY a /a\nRUN x\n");
    let run = root(&l.definition);
    let copy = input(&l.definition, run, 0);
    assert_eq!(file(copy).base, None);
    assert_eq!(copy.meta.description, "[1/2] COPY a /a");
    let l = low("FROM empty\nRUN x\n");
    assert_eq!(
        exec(root(&l.definition)).rootfs,
        None,
        "an image without layers is scratch"
    );
    let l = low("FROM noenv\nRUN x\n");
    assert_eq!(
        exec(root(&l.definition)).env,
        [PATH],
        "BuildKit adds the default PATH"
    );
    assert_eq!(l.definition.image.config.config.env, [PATH]);
}

#[test]
fn final_image_labels_platform_and_history() {
    let mut o = opts();
    o.labels = BTreeMap::from([(
        "org.opencontainers.image.source".to_owned(),
        "kiln".to_owned(),
    )]);
    o.target_platform = Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: Some("v8".into()),
    };
    let l = low_with("FROM busybox AS b\nRUN x\nFROM b\nLABEL a=1\n", &o);
    let cfg = &l.definition.image.config;
    assert_eq!(cfg.config.labels.len(), 2);
    assert_eq!(
        (cfg.architecture.as_str(), cfg.variant.as_deref()),
        ("arm64", Some("v8"))
    );
    assert_eq!(
        created_by(&l),
        [
            "ADD busybox.tar.xz / # buildkit",
            "CMD [\"sh\"]",
            "RUN /bin/sh -c x # buildkit",
            "LABEL a=1"
        ]
    );
    assert_eq!(
        l.definition.root,
        Some(
            l.definition
                .topo_order()
                .last()
                .cloned()
                .unwrap_or_else(|| panic!())
        )
    );
}

#[test]
fn no_cache_marks_steps() {
    let src = "FROM busybox AS a\nRUN a\nFROM busybox AS b\nCOPY --from=a /x /x\nRUN b\n";
    let mut o = opts();
    o.no_cache_filter = vec!["B".into()];
    let l = low_with(src, &o);
    let def = &l.definition;
    let run_b = root(def);
    let copy = input(def, run_b, 0);
    let run_a = input(def, copy, copy_action(copy).src_input);
    assert!(run_b.meta.ignore_cache && copy.meta.ignore_cache);
    assert!(!run_a.meta.ignore_cache);
    o.no_cache_filter.clear();
    o.no_cache = true;
    let l = low_with(src, &o);
    let def = &l.definition;
    assert!(
        def.vertices
            .values()
            .filter(|v| matches!(v.op, Op::Exec(_)))
            .all(|v| v.meta.ignore_cache)
    );
}

/// The vertex digests of the stage chain, root first.
fn chain_digests(l: &Lowered) -> Vec<Digest> {
    let mut out = Vec::new();
    let def = &l.definition;
    let mut cur = def.root.clone();
    while let Some(d) = cur {
        let v = &def.vertices[&d];
        out.push(d);
        cur = match &v.op {
            Op::Exec(ExecOp {
                rootfs: Some(i), ..
            })
            | Op::File(FileOp { base: Some(i), .. }) => Some(v.inputs[*i].clone()),
            _ => None,
        };
    }
    out
}

#[test]
fn digests_ignore_comments_lines_and_unrelated_stages() {
    let a = "FROM busybox AS tools\nRUN make tools\nFROM busybox AS app\nCOPY . /src\nRUN make\n";
    let b = "# a comment\n\nFROM busybox AS tools\n# changed tools\nRUN make tools --fast\nFROM   busybox AS app\n\n# hi\nCOPY . /src\nRUN   make\n";
    let mut o = opts();
    o.target = Some("app".into());
    let la = low_with(a, &o);
    let lb = low_with(b, &o);
    assert_eq!(chain_digests(&la), chain_digests(&lb));
    assert_eq!(chain_digests(&la).len(), 3);
    // Sanity: the digests do depend on what a step does.
    let lc = low_with(&a.replace("RUN make\n", "RUN make all\n"), &o);
    assert_ne!(chain_digests(&la)[0], chain_digests(&lc)[0]);
    assert_eq!(chain_digests(&la)[1..], chain_digests(&lc)[1..]);
    // And stay the same from one run to the next.
    assert_eq!(la.definition, low_with(a, &o).definition);
    // The tools stage itself is unaffected by edits to app.
    o.target = Some("tools".into());
    assert_eq!(
        chain_digests(&low_with(a, &o)),
        chain_digests(&low_with(&a.replace("COPY . /src", "COPY x /y"), &o))
    );
    // Each COPY's context source covers exactly its paths.
    let l = low("FROM busybox\nCOPY a /a\nCOPY b /b\n");
    let c2 = root(&l.definition);
    let c1 = input(&l.definition, c2, 0);
    assert_ne!(c1.inputs[1], c2.inputs[1]);
}

#[test]
fn single_stage_has_no_stage_prefix_but_multi_stage_does() {
    let l = low("FROM busybox\nRUN a\nRUN b\nRUN c\nRUN d\nRUN e\nRUN f\nRUN g\nRUN h\nRUN i\n");
    assert_eq!(root(&l.definition).meta.description, "[10/10] RUN i");
    assert_eq!(
        input(&l.definition, root(&l.definition), 0)
            .meta
            .description,
        "[ 9/10] RUN h"
    );
    let l = low("FROM busybox AS x\nRUN a\nFROM x\nRUN b\n");
    assert_eq!(root(&l.definition).meta.description, "[stage-1 1/1] RUN b");
}

/// Every conformance Dockerfile that parses lowers or fails cleanly, never panics, and a
/// successful lowering always yields a closed graph.
#[test]
fn conformance_dockerfiles_lower_without_panics() {
    let Some(dir) = conformance::dir() else {
        return;
    };
    let dir = dir.join("buildkit/parser");
    let mut seen = 0;
    let mut lowered = 0;
    for sub in ["testfiles", "testfiles-negative"] {
        let Ok(entries) = fs_err::read_dir(dir.join(sub)) else {
            panic!("missing {}", dir.display())
        };
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{e}"))
                .path()
                .join("Dockerfile");
            let Ok(src) = fs_err::read_to_string(&path) else {
                continue;
            };
            seen += 1;
            let Ok(ast) = parse(&src) else { continue };
            let mut o = opts();
            o.build_args.insert("FOO".into(), "bar".into());
            for target in [None, Some("nosuch".to_owned())] {
                o.target = target;
                match lower(&ast, &o, &FakeResolver::default()) {
                    Ok(l) => {
                        lowered += 1;
                        assert_eq!(l.definition.validate(), Ok(()), "{}", path.display());
                    }
                    Err(e) => {
                        let _ = render(&e, "Dockerfile", &src);
                    }
                }
            }
        }
    }
    assert!(seen > 30, "conformance files found: {seen}");
    assert!(lowered > 10, "lowered: {lowered}");
}

/// A deterministic random walk over instruction shapes: lowering never panics.
#[test]
fn generated_dockerfiles_never_panic() {
    let pieces = [
        "FROM busybox AS s1\n",
        "FROM s1\n",
        "FROM scratch\n",
        "FROM $NOPE\n",
        "ARG A=${B:-x}\n",
        "ARG B\n",
        "ENV X=$A Y=\"q\"\n",
        "RUN echo $X\n",
        "RUN [\"a\"]\n",
        "COPY --from=s1 /a /b\n",
        "COPY --from=9 a b\n",
        "COPY --from=other a b\n",
        "COPY <<EOF /x\n$A\nEOF\n",
        "WORKDIR rel\n",
        "WORKDIR $EMPTY\n",
        "USER u:g\n",
        "EXPOSE 1-2/udp\n",
        "EXPOSE $A\n",
        "VOLUME $A\n",
        "LABEL a=b\n",
        "CMD x\n",
        "ENTRYPOINT []\n",
        "HEALTHCHECK NONE\n",
        "SHELL [\"/bin/x\"]\n",
        "ONBUILD RUN x\n",
        "STOPSIGNAL 9\n",
        "ADD http://h/ /\n",
        "RUN --mount=type=cache,target=c x\n",
        "RUN --mount=from=s1,target=/m x\n",
        "RUN <<EOF\n#!/bin/sh\nEOF\n",
        "COPY --chmod=u+x a b\n",
        "ADD --checksum=x a b\n",
        "RUN --mount=type=secret x\n",
        "FROM onbuild-base AS helper\n",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut ok = 0;
    for _ in 0..2000 {
        let n = 1 + (next() % 12) as usize;
        let mut src = String::new();
        for _ in 0..n {
            src.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let Ok(ast) = parse(&src) else { continue };
        match lower(&ast, &opts(), &FakeResolver::default()) {
            Ok(l) => {
                ok += 1;
                assert_eq!(l.definition.validate(), Ok(()), "{src}");
            }
            Err(e) => {
                let _ = render(&e, "Dockerfile", &src);
            }
        }
    }
    assert!(ok > 50, "only {ok} generated files lowered");
}

#[test]
fn expose_splits_expanded_words_and_user_applies_to_run() {
    let l = low("FROM busybox\nENV PORTS=\"80 443/udp\"\nEXPOSE $PORTS\nUSER 1000:1000\nRUN id\n");
    let rc = &l.definition.image.config.config;
    assert_eq!(
        rc.exposed_ports.keys().collect::<Vec<_>>(),
        ["443/udp", "80/tcp"]
    );
    assert_eq!(created_by(&l)[3], "EXPOSE 80 443/udp");
    assert_eq!(exec(root(&l.definition)).user, "1000:1000");
}

/// Conformance Dockerfiles with deterministic character-level mutations (a fuzzer's moves):
/// parse + lower + render never panic.
#[test]
fn mutated_conformance_dockerfiles_never_panic() {
    let Some(dir) = conformance::dir() else {
        return;
    };
    let dir = dir.join("buildkit/parser/testfiles");
    let inserts = [
        "$",
        "${",
        "}",
        "\n",
        "\\",
        "\"",
        "'",
        "<<EOF\n",
        "--from=0 ",
        "FROM a AS b\n",
        "é",
        "\t",
        ":",
        "/",
        "=",
        "[",
        "]",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut runs = 0;
    let Ok(entries) = fs_err::read_dir(&dir) else {
        panic!("missing {}", dir.display())
    };
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{e}"))
            .path()
            .join("Dockerfile");
        let Ok(src) = fs_err::read_to_string(&path) else {
            continue;
        };
        let chars: Vec<char> = src.chars().collect();
        if chars.is_empty() {
            continue;
        }
        for _ in 0..60 {
            let mut c = chars.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (c.len() + 1);
                match next() % 3 {
                    0 if at < c.len() => {
                        c.remove(at);
                    }
                    _ => {
                        let ins = inserts[(next() as usize) % inserts.len()];
                        for (k, ch) in ins.chars().enumerate() {
                            c.insert((at + k).min(c.len()), ch);
                        }
                    }
                }
            }
            let mutated: String = c.into_iter().collect();
            let Ok(ast) = parse(&mutated) else { continue };
            runs += 1;
            match lower(&ast, &opts(), &FakeResolver::default()) {
                Ok(l) => assert_eq!(l.definition.validate(), Ok(()), "{mutated}"),
                Err(e) => {
                    let _ = render(&e, "Dockerfile", &mutated);
                }
            }
        }
    }
    assert!(runs > 500, "only {runs} mutated files parsed");
}

/// `ARG aN=${aN-1}${aN-1}`, `lines` times after `ARG a0=xx`, in a stage or before it.
fn arg_bomb(lines: usize, global: bool) -> String {
    let mut src = String::from(if global { "" } else { "FROM busybox\n" });
    src.push_str("ARG a0=xx\n");
    for i in 1..=lines {
        src.push_str(&format!("ARG a{i}=${{a{}}}${{a{}}}\n", i - 1, i - 1));
    }
    if global {
        src.push_str("FROM busybox\n");
    }
    src
}

#[test]
fn doubling_args_fail_at_the_word_that_passes_a_mebibyte() {
    for global in [false, true] {
        let start = std::time::Instant::now();
        let e = err(&arg_bomb(40, global));
        let line = if global { 21 } else { 22 };
        assert_eq!(
            e.lines().next(),
            Some(
                format!(
                    "Dockerfile:{line}:15: failed to process \"${{a19}}${{a19}}\": expansion longer than 1048576 bytes"
                )
                .as_str()
            ),
            "{e}"
        );
        assert!(
            e.contains("|               ^\n"),
            "caret under the second ${{a19}}:\n{e}"
        );
        // Not a timed assertion: a generous bound that only a runaway expansion could miss.
        assert!(start.elapsed().as_secs() < 60);
    }
    // Nineteen doublings (a19 = 1 MiB) are fine.
    let l = low(&format!("{}RUN test ${{#a19}}\n", arg_bomb(19, false)));
    let run = exec(root(&l.definition));
    let a19 = run.env.iter().find_map(|e| e.strip_prefix("a19="));
    assert_eq!(a19.map(str::len), Some(1 << 20));
}

#[test]
fn total_expansion_is_bounded_across_words_and_steps() {
    // Sixty-five words of 1 MiB each, every one within the word limit.
    let mut src = arg_bomb(19, false);
    for i in 0..70 {
        src.push_str(&format!("ENV e{i}=$a19\n"));
    }
    let e = err(&src);
    assert!(
        e.starts_with("Dockerfile:"),
        "located: {}",
        e.lines().next().unwrap_or_default()
    );
    let first = e.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(": expansion of the Dockerfile exceeds 67108864 bytes in total"),
        "{first}"
    );
    let line: usize = first
        .split(':')
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert!(
        (80..=90).contains(&line),
        "fails at the ENV that passes 64 MiB: {first}"
    );

    // a0..a19 (2 MiB) copied into the environment and the history line of a hundred steps:
    // 4 MiB a step, so the sixteenth RUN (line 37) passes 64 MiB.
    let mut src = arg_bomb(19, false);
    for i in 0..100 {
        src.push_str(&format!("RUN echo {i}\n"));
    }
    let first = err(&src).lines().next().unwrap_or_default().to_owned();
    assert!(
        first.ends_with("exceeds 67108864 bytes in total"),
        "{first}"
    );
    let line: usize = first
        .split(':')
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    assert_eq!(line, 37, "{first}");

    // Sane but large: ten ENV values of 1 MiB and a RUN.
    let mut src = arg_bomb(19, false);
    for i in 0..10 {
        src.push_str(&format!("ENV e{i}=$a19\n"));
    }
    src.push_str("RUN true\n");
    let l = low(&src);
    assert_eq!(exec(root(&l.definition)).args, ["/bin/sh", "-c", "true"]);
}

/// BuildKit's `proxyEnvFromBuildArgs`: a proxy `--build-arg` in any case reaches every RUN in
/// both cases without an ARG, and is neither in the image (config, history) nor in the step's
/// digest (dockerfile_args_test.go testBuiltinArgs: a new proxy value still hits the cache).
#[test]
fn proxy_build_args_reach_run_but_not_the_image_or_the_digest() {
    let src = "FROM busybox\nENV no_proxy=from-env\nRUN echo $HTTP_PROXY\n";
    let with = |args: &[(&str, &str)]| {
        let mut o = opts();
        o.build_args = args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        low_with(src, &o)
    };
    let all = [
        ("http_proxy", "h"),
        ("HTTPS_PROXY", "s"),
        ("FTP_PROXY", "f"),
        ("NO_PROXY", "n"),
        ("all_proxy", "a"),
    ];
    let l = with(&all);
    let run = exec(root(&l.definition));
    assert_eq!(
        run.proxy_env,
        [
            "HTTP_PROXY=h",
            "http_proxy=h",
            "HTTPS_PROXY=s",
            "https_proxy=s",
            "FTP_PROXY=f",
            "ftp_proxy=f",
            "NO_PROXY=n",
            "ALL_PROXY=a",
            "all_proxy=a",
        ],
        "both cases; the stage's own no_proxy is kept"
    );
    assert_eq!(run.env, [PATH, "no_proxy=from-env"]);
    let config = &l.definition.image.config;
    assert_eq!(config.config.env, [PATH, "no_proxy=from-env"]);
    assert!(
        config
            .history
            .iter()
            .all(|h| !h.created_by.contains("=h") && !h.created_by.contains("=s")),
        "{:?}",
        created_by(&l)
    );
    assert!(l.warnings.is_empty(), "proxies are never 'not consumed'");
    let plain = with(&[]);
    let other = with(&[("HTTP_PROXY", "elsewhere")]);
    assert_eq!(
        l.definition.root, plain.definition.root,
        "digest ignores proxies"
    );
    assert_eq!(l.definition.root, other.definition.root);
    assert!(exec(root(&plain.definition)).proxy_env.is_empty());
    // Any case of the name is the proxy (BuildKit matches with EqualFold).
    let mixed = with(&[("Http_Proxy", "mixed")]);
    assert_eq!(
        exec(root(&mixed.definition)).proxy_env,
        ["HTTP_PROXY=mixed", "http_proxy=mixed"]
    );
    // Of two spellings given, the later in sorted order wins, as in BuildKit.
    let both = with(&[("HTTP_PROXY", "upper"), ("http_proxy", "lower")]);
    assert_eq!(
        exec(root(&both.definition)).proxy_env,
        ["HTTP_PROXY=lower", "http_proxy=lower"]
    );
}

/// dockerfile_args_test.go testTargetStageNameArg: TARGETSTAGE needs an ARG, then holds the
/// target, else the last stage's name, else `default`.
#[test]
fn targetstage_is_the_target_or_the_last_stage_or_default() {
    let src = "FROM busybox AS base\nENV FIRST=value:$TARGETSTAGE\nARG TARGETSTAGE\n\
               ENV SECOND=value:$TARGETSTAGE\nFROM base AS foo\nFROM base\n";
    let env = |l: &Lowered| l.definition.image.config.config.env[1..].to_vec();
    let mut o = opts();
    o.target = Some("foo".into());
    assert_eq!(
        env(&low_with(src, &o)),
        ["FIRST=value:", "SECOND=value:foo"]
    );
    assert_eq!(env(&low(src)), ["FIRST=value:", "SECOND=value:default"]);
    let named = format!("{src}FROM base AS final\n");
    assert_eq!(env(&low(&named)), ["FIRST=value:", "SECOND=value:final"]);
}

/// BuildKit's `suggest.WrapError` wording (dockerfile_core_test.go testTargetMistype and
/// dockerfile_mount_test.go testMountInvalid): the hint ends the message.
#[test]
fn did_you_mean_hints_are_worded_as_buildkit() {
    let src = "FROM busybox AS build\nRUN true\nFROM build\n";
    let mut o = opts();
    o.target = Some("bulid".into());
    assert_eq!(
        err_with(src, &o).lines().next(),
        Some("Dockerfile:0:0: target stage \"bulid\" could not be found (did you mean build?)")
    );
    let first = |src: &str| err(src).lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first("FROM busybox\nRUN --mont=target=/t,type=tmpfs true\n"),
        "Dockerfile:2:5: unknown flag: --mont (did you mean mount?)"
    );
    assert!(
        first("FROM busybox\nRUN --mount=typ=tmpfs true\n")
            .ends_with("unexpected key 'typ' in 'typ=tmpfs' (did you mean type?)"),
        "{}",
        err("FROM busybox\nRUN --mount=typ=tmpfs true\n")
    );
    assert!(
        first("FROM busybox\nRUN --mount=type=tmp true\n")
            .ends_with("unsupported mount type \"tmp\" (did you mean tmpfs?)"),
        "{}",
        err("FROM busybox\nRUN --mount=type=tmp true\n")
    );
    assert!(
        first("FROM busybox\nRUN --mount=type=cache,target=/c,sharing=lock true\n")
            .ends_with("unsupported sharing value \"lock\" (did you mean locked?)")
    );
    // Nothing close: no hint.
    assert!(
        !err("FROM busybox\nRUN --mount=type=nfs true\n").contains("did you mean"),
        "{}",
        err("FROM busybox\nRUN --mount=type=nfs true\n")
    );
}

/// dockerfile_add_test.go testDockerfileAddArchive: ADD unpacks a local archive unless
/// `--unpack=false`, and a download only with `--unpack=true`; COPY never does.
#[test]
fn add_unpack_flag() {
    let src = "FROM busybox\nADD t.tar.gz /a/\nADD --unpack=false t.tar.gz /b/\n\
               ADD --unpack=true t.tar.gz /c/\nADD https://example.com/t.tar.gz /d/\n\
               ADD --unpack=true https://example.com/t.tar.gz /e/\nADD --unpack https://example.com/t.tar.gz /f/\n\
               ADD --unpack=false https://example.com/t.tar.gz /g/\nCOPY t.tar.gz /h/\n";
    let l = low(src);
    let extract: Vec<bool> = chain(&l.definition)
        .into_iter()
        .rev()
        .skip(1)
        .map(|v| copy_action(v).extract_archive)
        .collect();
    assert_eq!(
        extract,
        [true, false, true, false, true, true, false, false]
    );
    assert!(
        err("FROM busybox\nCOPY --unpack=true t.tar /x/\n").contains("unknown flag: --unpack"),
        "COPY takes no --unpack"
    );
}
