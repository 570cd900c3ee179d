//! Named contexts (`--build-context`): which names the frontend looks up, and what a context
//! replaces, with a resolver that records every call.

use std::cell::RefCell;

use kiln_frontend::lower::{ImageResolver, LowerOptions, NamedContext, ResolvedImage, lower};
use kiln_frontend::parser::parse;
use kiln_graph::{ImageConfig, LocalSource, Op, RootFs, RunConfig, SourceOp};
use kiln_oci::Platform;

const DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// Images for any reference; named contexts `docs` (a directory) and `alpine` (an image with
/// `FROM_CONTEXT=1` in its env).
#[derive(Default)]
struct Resolver {
    resolved: RefCell<Vec<String>>,
    asked: RefCell<Vec<String>>,
}

fn image(reference: &str, env: &str) -> ResolvedImage {
    ResolvedImage {
        reference: reference.to_owned(),
        digest: Some(DIGEST.parse().unwrap()),
        config: ImageConfig {
            os: "linux".into(),
            architecture: "amd64".into(),
            config: RunConfig {
                env: vec![env.to_owned()],
                ..RunConfig::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![DIGEST.to_owned()],
            },
            ..ImageConfig::default()
        },
    }
}

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
        self.resolved.borrow_mut().push(reference.to_owned());
        if reference == "missing" {
            return Err("pull access denied".to_owned());
        }
        Ok(image(reference, "FROM_CONTEXT=0"))
    }

    fn has_named_context(&self, name: &str) -> bool {
        matches!(name, "docs" | "alpine")
    }

    fn named_context(&self, name: &str, _: &Platform) -> Result<Option<NamedContext>, String> {
        self.asked.borrow_mut().push(name.to_owned());
        Ok(match name {
            "docs" => Some(NamedContext::Local(LocalSource {
                name: "context:docs".into(),
                include: Vec::new(),
                exclude: vec!["*.tmp".into()],
            })),
            "alpine" => Some(NamedContext::Image(Box::new(image(
                "docker.io/library/busybox:latest",
                "FROM_CONTEXT=1",
            )))),
            _ => None,
        })
    }
}

fn lowered(src: &str) -> (kiln_frontend::lower::Lowered, Resolver) {
    let ast = parse(src).unwrap();
    let p = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
    };
    let o = LowerOptions {
        target_platform: p.clone(),
        build_platform: p,
        ..LowerOptions::default()
    };
    let r = Resolver::default();
    let l = lower(&ast, &o, &r).unwrap_or_else(|e| panic!("{e}"));
    (l, r)
}

fn locals(l: &kiln_frontend::lower::Lowered) -> Vec<String> {
    l.definition
        .vertices
        .values()
        .filter_map(|v| match &v.op {
            Op::Source(SourceOp::Local(s)) => Some(s.name.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_base_named_like_a_context_is_the_context_in_any_spelling() {
    for base in ["alpine", "alpine:latest", "docker.io/library/alpine"] {
        let (l, r) = lowered(&format!("FROM {base}\nRUN true\n"));
        assert!(r.resolved.borrow().is_empty(), "{base}: {:?}", r.resolved);
        let env = &l.definition.image.config.config.env;
        assert!(
            env.contains(&"FROM_CONTEXT=1".to_owned()),
            "{base}: {env:?}"
        );
    }
    // Another tag is another name.
    let (_, r) = lowered("FROM alpine:3.20\n");
    assert_eq!(*r.resolved.borrow(), ["alpine:3.20"]);
}

#[test]
fn a_stage_named_like_a_context_is_replaced_and_its_base_never_resolved() {
    let (l, r) = lowered(
        "FROM missing AS docs\nRUN echo never\n\
         FROM busybox\nCOPY --from=docs /a /a\nRUN --mount=from=docs,target=/m cat /m/a\n",
    );
    assert_eq!(*r.resolved.borrow(), ["busybox"]);
    let runs: Vec<String> = l
        .definition
        .vertices
        .values()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e.args.join(" ")),
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].contains("cat /m/a"), "{runs:?}");
    assert_eq!(locals(&l), ["context:docs"]);
}

#[test]
fn from_and_mounts_of_a_context_name_read_it_and_unused_contexts_cost_nothing() {
    let (l, r) = lowered("FROM busybox\nCOPY --from=docs / /docs/\n");
    assert_eq!(locals(&l), ["context:docs"]);
    assert_eq!(*r.asked.borrow(), ["docs"]);
    // A stage of the same name as an unused context: nothing loaded for it.
    let (_, r) = lowered("FROM busybox AS alpine\nFROM busybox\nRUN true\n");
    assert!(r.asked.borrow().is_empty(), "{:?}", r.asked);
}
