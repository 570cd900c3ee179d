//! Fuzz the whole frontend: parse, expand every argument as a word and as a word list, and
//! lower to the build graph (with a resolver that answers every image). Nothing may panic;
//! every error must render.
#![no_main]

use kiln_frontend::diagnostic::render;
use kiln_frontend::lower::{ImageResolver, LowerOptions, ResolvedImage, lower};
use kiln_frontend::parser::parse;
use kiln_frontend::shell::{Env, Escape, expand_word, expand_words};
use kiln_graph::{ImageConfig, RunConfig};
use kiln_oci::Platform;
use libfuzzer_sys::fuzz_target;

struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        if reference.contains("fail") {
            return Err(format!("{reference}: not found"));
        }
        Ok(ResolvedImage {
            reference: reference.to_string(),
            digest: None,
            config: ImageConfig {
                os: platform.os.clone(),
                architecture: platform.architecture.clone(),
                config: RunConfig {
                    env: vec!["PATH=/bin".to_string()],
                    on_build: vec!["RUN echo onbuild".to_string()],
                    ..RunConfig::default()
                },
                ..ImageConfig::default()
            },
        })
    }
}

fuzz_target!(|src: &str| {
    let ast = match parse(src) {
        Ok(ast) => ast,
        Err(e) => {
            let _ = render(&e, "Dockerfile", src);
            return;
        }
    };
    let env = Env::from_kv_strings(["A=1", "EMPTY=", "PATH=/bin"]);
    let escape = Escape::from_char(ast.escape).unwrap_or(Escape::Backslash);
    for node in &ast.nodes {
        for w in &node.args {
            let _ = expand_word(&w.value, &env, escape);
            let _ = expand_words(&w.value, &env, escape);
        }
    }
    let mut opts = LowerOptions::default();
    opts.build_args.insert("A".to_string(), "2".to_string());
    if let Err(e) = lower(&ast, &opts, &AnyImage) {
        let _ = render(&e, "Dockerfile", src);
    }
});
