//! The fuzz targets' checks as a test: a committed corpus of regression inputs
//! (`tests/it/fuzz_corpus/`), BuildKit's parser test files, and a few thousand inputs made by
//! combining and mutating Dockerfile fragments with a fixed-seed generator.
//!
//! Each input goes the way `frontend/fuzz/fuzz_targets/lower.rs` sends it, from raw bytes:
//! decode, parse, dump, flag validation, the typed layer, expansion of every argument and
//! lowering, rendering every error. Nothing may panic, every error must render as
//! `Dockerfile:LINE:COL: ...` and the rendering must stay small.
//!
//! Add every crash the fuzzers find to `fuzz_corpus/`, named after what it does.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use kiln_frontend::diagnostic::{Diagnostic, MESSAGE_WINDOW, SOURCE_WINDOW, render};
use kiln_frontend::instructions::Instruction;
use kiln_frontend::lower::{ImageResolver, LowerOptions, ResolvedImage, lower};
use kiln_frontend::parser::{decode, dump, dump_with_heredocs, parse, validate_flags};
use kiln_frontend::shell::{Env, Escape, expand_word, expand_words};
use kiln_graph::{ImageConfig, RunConfig};
use kiln_oci::Platform;

use crate::conformance;

/// Answers every image (with an ONBUILD trigger), fails names containing `fail`.
struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        if reference.contains("fail") {
            return Err(format!("{reference}: not found"));
        }
        Ok(ResolvedImage {
            reference: reference.to_owned(),
            digest: None,
            config: ImageConfig {
                os: platform.os.clone(),
                architecture: platform.architecture.clone(),
                config: RunConfig {
                    env: vec!["PATH=/bin".to_owned()],
                    on_build: vec!["RUN echo onbuild".to_owned()],
                    ..RunConfig::default()
                },
                ..ImageConfig::default()
            },
        })
    }
}

/// The most a rendered error may take: a header with a clipped message, a source window, a
/// caret line and a help line, each with a little framing.
const MAX_RENDERED: usize = 4 * (MESSAGE_WINDOW + 3 * SOURCE_WINDOW) + 256;

/// What an input came to.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    not_utf8: bool,
    parse_error: bool,
    lowered: bool,
}

/// Renders `err` and checks the rendering is located and bounded.
fn rendered<D: Diagnostic + ?Sized>(err: &D, src: &str) -> Result<(), String> {
    let out = render(err, "Dockerfile", src);
    let header = out.lines().next().unwrap_or_default();
    let located = header
        .strip_prefix("Dockerfile:")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(pos, _)| pos.split_once(':'))
        .is_some_and(|(l, c)| l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok());
    if !located {
        return Err(format!("not located: {header:?}"));
    }
    if out.len() > MAX_RENDERED {
        return Err(format!("rendered error of {} bytes", out.len()));
    }
    Ok(())
}

/// Everything the fuzz targets do with one input.
fn check(bytes: &[u8]) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    let src = match decode(bytes) {
        Ok(src) => src,
        Err(e) => {
            outcome.not_utf8 = true;
            if std::str::from_utf8(bytes).is_ok() {
                return Err("decode rejected valid UTF-8".to_owned());
            }
            rendered(&e, &String::from_utf8_lossy(bytes))?;
            return Ok(outcome);
        }
    };
    let ast = match parse(src) {
        Ok(ast) => ast,
        Err(e) => {
            outcome.parse_error = true;
            rendered(&e, src)?;
            return Ok(outcome);
        }
    };
    let _ = dump(&ast);
    let _ = dump_with_heredocs(&ast);
    let env = Env::from_kv_strings(["A=1", "EMPTY=", "PATH=/bin"]);
    let escape = Escape::from_char(ast.escape).unwrap_or(Escape::Backslash);
    for node in &ast.nodes {
        if let Err(e) = validate_flags(node) {
            rendered(&e, src)?;
        }
        if let Err(e) = Instruction::from_node(node) {
            rendered(&e, src)?;
        }
        for w in &node.args {
            let _ = expand_word(&w.value, &env, escape);
            let _ = expand_words(&w.value, &env, escape);
        }
    }
    let mut opts = LowerOptions::default();
    opts.build_args.insert("A".to_owned(), "2".to_owned());
    match lower(&ast, &opts, &AnyImage) {
        Ok(l) => {
            outcome.lowered = true;
            l.definition
                .validate()
                .map_err(|e| format!("graph invariant: {e:?}"))?;
        }
        Err(e) => rendered(&e, src)?,
    }
    Ok(outcome)
}

/// `check`, with a panic turned into an error that shows the input.
fn run(name: &str, bytes: &[u8]) -> Outcome {
    let result = catch_unwind(AssertUnwindSafe(|| check(bytes)));
    let shown: String = String::from_utf8_lossy(bytes).chars().take(2000).collect();
    match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => panic!("{name}: {e}\ninput: {shown:?}"),
        Err(_) => panic!("{name}: panicked\ninput: {shown:?}"),
    }
}

#[test]
fn committed_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fuzz_corpus");
    let mut entries: Vec<_> = fs_err::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    assert!(entries.len() >= 9, "corpus at {}", dir.display());
    for path in entries {
        let name = path.display().to_string();
        let bytes = fs_err::read(&path).unwrap_or_default();
        let outcome = run(&name, &bytes);
        if name.contains("invalid-utf8") {
            assert!(outcome.not_utf8, "{name}: {outcome:?}");
        }
        if name.contains("bomb") {
            assert!(!outcome.lowered, "{name} must fail: {outcome:?}");
            let src = String::from_utf8_lossy(&bytes);
            let e = parse(&src).map(|ast| lower(&ast, &LowerOptions::default(), &AnyImage));
            let message = match e {
                Ok(Err(e)) => e.to_string(),
                other => format!("{other:?}"),
            };
            assert!(
                message.ends_with(": expansion longer than 1048576 bytes"),
                "{name}: {message}"
            );
        }
    }
}

#[test]
fn buildkit_test_files_replay() {
    let Some(dir) = conformance::dir() else {
        return;
    };
    let mut count = 0;
    for set in ["testfiles", "testfiles-negative"] {
        let Ok(cases) = fs_err::read_dir(dir.join("buildkit/parser").join(set)) else {
            continue;
        };
        for case in cases.filter_map(Result::ok) {
            let path = case.path().join("Dockerfile");
            if let Ok(bytes) = fs_err::read(&path) {
                run(&path.display().to_string(), &bytes);
                count += 1;
            }
        }
    }
    assert!(count > 20, "only {count} BuildKit test files");
}

#[test]
fn invalid_utf8_reports_line_and_column() {
    let bytes = b"FROM a\n\nLABEL a=\xc0\xafb\n";
    let e = decode(bytes).err().map(|e| {
        let out = render(&e, "Dockerfile", &String::from_utf8_lossy(bytes));
        out.lines().take(3).collect::<Vec<_>>().join("\n")
    });
    assert_eq!(
        e.as_deref(),
        Some(
            "Dockerfile:3:9: invalid UTF-8: byte 0xc0 in the Dockerfile\n\
             3 | LABEL a=\u{fffd}\u{fffd}b\n  |         ^"
        )
    );
}

#[test]
fn errors_on_long_lines_render_a_window() {
    // 2 MB lines (the frontend is slow in debug builds); `render`'s own test uses 10 MB.
    let long = "x".repeat(2_000_000);
    for (src, line_col) in [
        // Expansion error at the end of the line, quoting the whole word.
        (format!("FROM busybox\nENV A={long}${{\n"), "2:2000007"),
        // Parse error: a long word without `=`.
        (format!("FROM busybox\nENV A=1 {long}\n"), "2:9"),
        // Typed layer: a long unknown flag.
        (format!("FROM busybox\nCOPY --{long} a b\n"), "2:6"),
    ] {
        let out = match parse(&src) {
            Err(e) => render(&e, "Dockerfile", &src),
            Ok(ast) => match ast.nodes.iter().find_map(|n| validate_flags(n).err()) {
                Some(e) => render(&e, "Dockerfile", &src),
                None => match lower(&ast, &LowerOptions::default(), &AnyImage) {
                    Err(e) => render(&e, "Dockerfile", &src),
                    Ok(_) => panic!("expected an error"),
                },
            },
        };
        assert!(out.len() <= MAX_RENDERED, "{} bytes", out.len());
        assert!(
            out.starts_with(&format!("Dockerfile:{line_col}: ")),
            "{}",
            out.lines().next().unwrap_or_default()
        );
        let source = out.lines().nth(1).unwrap_or_default();
        assert!(source.contains('…'), "{source}");
        assert!(source.chars().count() <= SOURCE_WINDOW + 8, "{source}");
    }
}

/// splitmix64: a tiny, fixed-seed generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Whole instructions to combine.
const LINES: &[&[u8]] = &[
    b"FROM busybox AS base\n",
    b"FROM base AS next\n",
    b"FROM --platform=$BUILDPLATFORM ${IMG:-alpine} AS b2\n",
    b"FROM scratch\n",
    b"FROM fail\n",
    b"FROM 0\n",
    b"ARG IMG=alpine\n",
    b"ARG A\n",
    b"ARG B=${A}${A}\n",
    b"ARG B=${B}${B}${B}\n",
    b"ENV A=$A$A B=\"$A\" C='$A'\n",
    b"ENV PATH=$PATH:/x\n",
    b"LABEL l=${A:+x} \"k\"=v\n",
    b"RUN --mount=type=cache,target=/c,id=$A echo $A\n",
    b"RUN --mount=from=base,target=/m true\n",
    b"RUN --network=none --security=insecure [\"echo\", \"$A\"]\n",
    b"RUN <<EOF\necho hi $A\nEOF\n",
    b"RUN <<-'EOT' sh\n\techo $A\nEOT\n",
    b"COPY --from=base /a /b\n",
    b"COPY --from=0 --chown=1:1 --chmod=755 a b/\n",
    b"COPY <<EOF /f\n$A ${B}\nEOF\n",
    b"ADD --checksum=sha256:00 http://x/y /z\n",
    b"WORKDIR ${W:-/w}/$A\n",
    b"USER ${U%%:*}:${G#*:}\n",
    b"EXPOSE 80/tcp ${P:-8000-8002}/udp\n",
    b"VOLUME [\"/v\", \"$A\"]\n",
    b"STOPSIGNAL SIGTERM\n",
    b"HEALTHCHECK --interval=5s --retries=3 CMD true\n",
    b"HEALTHCHECK NONE\n",
    b"SHELL [\"/bin/sh\", \"-c\"]\n",
    b"ONBUILD RUN echo $A\n",
    b"ONBUILD ONBUILD RUN x\n",
    b"CMD [\"a\", \"b\"]\n",
    b"ENTRYPOINT echo $A\n",
    b"MAINTAINER me\n",
    b"# a comment\n",
    b"\n",
];

/// Pieces inserted anywhere: the constructs of expansion and bytes that break things (quotes,
/// escapes, a lone `$`, directives, a byte order mark, invalid UTF-8).
const TOKENS: &[&[u8]] = &[
    b"# escape=`\n",
    b"# syntax=docker/dockerfile:1\n",
    b"\\\n",
    b"`\n",
    b"${A//?/'$0$0$0$0'}",
    b"${A/#1/x}",
    b"${A:?no}",
    b"${#A}",
    b"$A",
    b"${",
    b"}",
    b"$",
    b"\"",
    b"'",
    b" ",
    b"\t",
    b"=",
    b"\n",
    b"\r\n",
    b" --link",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xe2\x82\xac",
];

/// Bytes a mutation writes.
const INTERESTING: &[u8] = b"${}\\`\"'=:-+?#%/*\n\t [] \xff\xc3";

/// One generated input: a few instructions, then a few mutations.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(4) != 0 {
        out.extend_from_slice(LINES[0]);
    }
    for _ in 0..1 + rng.below(12) {
        out.extend_from_slice(LINES[rng.below(LINES.len())]);
    }
    for _ in 0..rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0..=3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if at < out.len() => out[at] = *rng.pick(INTERESTING),
            5 if at < out.len() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            6 => {
                let end = (at + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.truncate(at),
        }
    }
    out
}

#[test]
fn generated_inputs_never_panic() {
    let mut rng = Rng(0x6b69_6c6e_2d66_757a);
    let mut totals = (0, 0, 0);
    let count = 3000;
    for i in 0..count {
        let input = generate(&mut rng);
        let outcome = run(&format!("generated input {i}"), &input);
        totals.0 += usize::from(outcome.not_utf8);
        totals.1 += usize::from(outcome.parse_error);
        totals.2 += usize::from(outcome.lowered);
    }
    // The mix reaches every stage: some inputs stop at decoding, some at parsing, some lower.
    let (not_utf8, parse_errors, lowered) = totals;
    eprintln!(
        "{count} inputs: {not_utf8} not UTF-8, {parse_errors} parse errors, {lowered} lowered"
    );
    assert!(not_utf8 > count / 50, "{totals:?}");
    assert!(parse_errors > count / 50, "{totals:?}");
    assert!(lowered > count / 10, "{totals:?}");
}
