//! BuildKit's parser tables (`buildkit/parser` of the conformance directory; without it those
//! tests skip loudly) and our own golden cases for heredocs, flags and every error message.

use std::path::{Path, PathBuf};

use kiln_frontend::diagnostic::render;
use kiln_frontend::instructions::parse_instructions;
use kiln_frontend::parser::{dump, dump_with_heredocs, parse, parse_and_validate};

use crate::conformance;

/// BuildKit's parser tables; `None` (the test skips) when the conformance directory is missing.
fn parser_dir() -> Option<PathBuf> {
    conformance::dir().map(|d| d.join("buildkit/parser"))
}

/// The case folders under `sub` of the parser tables, sorted; fails if there are none.
fn cases(parser_dir: &Path, sub: &str) -> Vec<PathBuf> {
    let dir = parser_dir.join(sub);
    let mut out: Vec<PathBuf> = fs_err::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no cases under {}", dir.display());
    out
}

#[test]
fn buildkit_testfiles_dump_byte_for_byte() {
    let Some(dir) = parser_dir() else {
        return;
    };
    let cases = cases(&dir, "testfiles");
    let mut failures = Vec::new();
    for case in &cases {
        let src = fs_err::read(case.join("Dockerfile")).unwrap_or_else(|e| panic!("{e}"));
        let src = String::from_utf8(src).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let expected =
            fs_err::read_to_string(case.join("result")).unwrap_or_else(|e| panic!("{e}"));
        match parse(&src) {
            Ok(ast) => {
                let got = dump(&ast);
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{}: rejected:\n{}",
                case.display(),
                render(&e, "Dockerfile", &src)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "buildkit parser testfiles: {} of {} cases match",
        cases.len(),
        cases.len()
    );
    assert!(
        cases.len() >= 33,
        "expected at least 33 cases, found {}",
        cases.len()
    );
}

#[test]
fn buildkit_negative_testfiles_are_rejected() {
    let Some(dir) = parser_dir() else {
        return;
    };
    let cases = cases(&dir, "testfiles-negative");
    for case in &cases {
        let src = fs_err::read_to_string(case.join("Dockerfile")).unwrap_or_else(|e| panic!("{e}"));
        if let Ok(ast) = parse_and_validate(&src) {
            panic!("{} was accepted:\n{}", case.display(), dump(&ast));
        }
    }
    eprintln!(
        "buildkit parser testfiles-negative: {} of {} rejected",
        cases.len(),
        cases.len()
    );
    assert!(cases.len() >= 4);
}

/// Same files with CRLF line endings and a UTF-8 byte-order mark: same dump.
#[test]
fn buildkit_testfiles_with_crlf_and_bom() {
    let Some(dir) = parser_dir() else {
        return;
    };
    for case in cases(&dir, "testfiles") {
        let src = fs_err::read_to_string(case.join("Dockerfile")).unwrap_or_else(|e| panic!("{e}"));
        let expected =
            fs_err::read_to_string(case.join("result")).unwrap_or_else(|e| panic!("{e}"));
        let crlf = format!("\u{feff}{}", src.replace('\n', "\r\n"));
        let ast = parse(&crlf).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        assert_eq!(dump(&ast), expected, "{}", case.display());
    }
}

/// Parse, validate flags, type every instruction; the heredoc-aware dump (plus warnings) on
/// success, the rendered diagnostic on failure.
fn check(src: &str) -> String {
    match parse_instructions(src) {
        Ok((ast, _)) => {
            let mut out = dump_with_heredocs(&ast);
            for w in &ast.warnings {
                out.push_str(&format!("warning {}: {}\n", w.span, w.message));
            }
            out
        }
        Err(e) => render(&e, "Dockerfile", src),
    }
}

/// Our own golden cases: heredocs, flags, and every error message the parser and the typed
/// layer produce, rendered as the CLI shows them.
const GOLDEN: &[(&str, &str)] = &[
    (
        "FROM a\nRUN <<EOF\necho hi\nEOF",
        "(from \"a\")\n(run \"<<EOF\" (heredoc \"EOF\" \"echo hi\\n\"))\n",
    ),
    (
        "FROM a\nRUN python3 <<EOF\nprint(1)\nEOF\nRUN <<A cat - <<'B' 2<<-\"C\"\na\nA\n$b\nB\n\tc\n\tC",
        "(from \"a\")\n(run \"python3 <<EOF\" (heredoc \"EOF\" \"print(1)\\n\"))\n(run \"<<A cat - <<'B' 2<<-\\\"C\\\"\" (heredoc \"A\" \"a\\n\") (heredoc [\"expand=false\"] \"B\" \"$b\\n\") (heredoc [\"expand=false\" \"chomp=true\" \"fd=2\"] \"C\" \"c\\n\"))\n",
    ),
    (
        "FROM a\nCOPY --chmod=755 <<EOF /file\nhello\nEOF",
        "(from \"a\")\n(copy [\"--chmod=755\"] \"<<EOF\" \"/file\" (heredoc \"EOF\" \"hello\\n\"))\n",
    ),
    (
        "FROM a\nRUN [\"cat\", \"<<EOF\"]\nENV A=<<EOF\nRUN <<EOF \\\n  bash\necho\nEOF\nRUN <<EOF\nEOF",
        "(from \"a\")\n(run \"cat\" \"<<EOF\")\n(env \"A\" \"<<EOF\" \"=\")\n(run \"<<EOF   bash\" (heredoc \"EOF\" \"echo\\n\"))\n(run \"<<EOF\" (heredoc \"EOF\" \"\"))\n",
    ),
    (
        "FROM a\r\nRUN <<EOF\r\nx\r\nEOF\r",
        "(from \"a\")\n(run \"<<EOF\" (heredoc \"EOF\" \"x\\r\\n\"))\n",
    ),
    (
        "FROM a\nCOPPY . /",
        "Dockerfile:2:1: unknown instruction: COPPY (did you mean COPY?)\n2 | COPPY . /\n  | ^^^^^\n",
    ),
    (
        "",
        "Dockerfile:1:1: file with no instructions\n1 | \n  | ^\n",
    ),
    (
        "# only\n# comments",
        "Dockerfile:2:1: file with no instructions\n2 | # comments\n  | ^\n",
    ),
    (
        "# escape=`\n# escape=\\\nFROM a",
        "Dockerfile:2:1: only one escape parser directive can be used\n2 | # escape=\\\n  | ^^^^^^^^^^\n",
    ),
    (
        "# escape=x\nFROM a",
        "Dockerfile:1:1: invalid escape token 'x' does not match ` or \\\n1 | # escape=x\n  | ^^^^^^^^^^\n",
    ),
    (
        "FROM a\nRUN cat <<EOF\nhello",
        "Dockerfile:2:9: unterminated heredoc EOF\n2 | RUN cat <<EOF\n  |         ^^^^^\nhelp: end the heredoc with a line containing only EOF\n",
    ),
    (
        "FROM a\nENV PATH",
        "Dockerfile:2:5: ENV must have two arguments\n2 | ENV PATH\n  |     ^^^^\nhelp: use ENV key=value or ENV key value\n",
    ),
    (
        "FROM a\nLABEL a=b c",
        "Dockerfile:2:11: syntax error - can't find = in \"c\", must be of the form: name=value\n2 | LABEL a=b c\n  |           ^\n",
    ),
    (
        "FROM a\nCMD [ \"echo\", [ \"nested json\" ] ]",
        "Dockerfile:2:5: when using JSON array syntax, arrays must be comprised of strings only\n2 | CMD [ \"echo\", [ \"nested json\" ] ]\n  |     ^\nhelp: exec form is a JSON array of strings, e.g. [\"sh\", \"-c\", \"echo hi\"]\n",
    ),
    (
        "ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD RUN x",
        "Dockerfile:1:33: ONBUILD nested too deeply\n1 | ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD RUN x\n  |                                 ^^^^^^^\n",
    ),
    (
        "FROM a\nCOPY --keep-git-dir . /",
        "Dockerfile:2:6: unknown flag: --keep-git-dir\n2 | COPY --keep-git-dir . /\n  |      ^^^^^^^^^^^^^^\nhelp: COPY takes --from, --chown, --chmod, --link, --parents and --exclude\n",
    ),
    (
        "FROM a\nADD --from=b . /",
        "Dockerfile:2:5: unknown flag: --from\n2 | ADD --from=b . /\n  |     ^^^^^^^^\nhelp: ADD takes --chown, --chmod, --link, --exclude, --keep-git-dir, --checksum and --unpack\n",
    ),
    (
        "FROM a\nRUN --mout=type=cache,target=/x true",
        "Dockerfile:2:5: unknown flag: --mout (did you mean mount?)\n2 | RUN --mout=type=cache,target=/x true\n  |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^\nhelp: RUN takes --mount, --network and --security\n",
    ),
    (
        "FROM a\nCOPY --from a b",
        "Dockerfile:2:6: missing a value on flag: --from\n2 | COPY --from a b\n  |      ^^^^^^\n",
    ),
    (
        "FROM a\nCOPY --link=maybe a b",
        "Dockerfile:2:6: expecting boolean value for flag --link, not: maybe\n2 | COPY --link=maybe a b\n  |      ^^^^^^^^^^^^\n",
    ),
    (
        "FROM a\nHEALTHCHECK --interval=5 CMD true",
        "Dockerfile:2:13: invalid value for flag --interval: \"5\" (expected a duration such as 30s or 1m30s)\n2 | HEALTHCHECK --interval=5 CMD true\n  |             ^^^^^^^^^^^^\n",
    ),
    (
        "FROM a\nHEALTHCHECK --retries=-1 CMD true",
        "Dockerfile:2:13: invalid value for flag --retries: \"-1\" (expected a non-negative integer)\n2 | HEALTHCHECK --retries=-1 CMD true\n  |             ^^^^^^^^^^^^\n",
    ),
    (
        "FROM --platform=linux/amd64 --platform=linux/arm64 a",
        "Dockerfile:1:29: duplicate flag specified: --platform\n1 | FROM --platform=linux/amd64 --platform=linux/arm64 a\n  |                             ^^^^^^^^^^^^^^^^^^^^^^\n",
    ),
    (
        "FROM a\n\tWORKDIR /x\n\tUSER --x=1 me",
        "Dockerfile:3:7: unknown flag: --x\n3 | \tUSER --x=1 me\n  | \t     ^^^^^\nhelp: USER takes no flags\n",
    ),
    (
        "FROM a\nRUN echo \\\n\n  hi",
        "(from \"a\")\n(run \"echo   hi\")\nwarning 3:1: Empty continuation line found in: RUN echo   hi\n",
    ),
    (
        "FROM a\nONBUILD COPY --frm=x a b",
        "Dockerfile:2:14: unknown flag: --frm (did you mean from?)\n2 | ONBUILD COPY --frm=x a b\n  |              ^^^^^^^\nhelp: COPY takes --from, --chown, --chmod, --link, --parents and --exclude\n",
    ),
    (
        "FROM a\nONBUILD COPY <<EOF /x\nhi\nEOF\nONBUILD RUN [\"cat\", \"<<EOF\"]\n",
        "(from \"a\")\n(onbuild (copy \"<<EOF\" \"/x\" (heredoc \"EOF\" \"hi\\n\")))\n(onbuild (run \"cat\" \"<<EOF\"))\n",
    ),
    (
        "FROM a AS 9lives",
        "Dockerfile:1:11: invalid name for build stage: \"9lives\", name can't start with a number or contain symbols\n1 | FROM a AS 9lives\n  |           ^^^^^^\n",
    ),
    (
        "FROM a b c",
        "Dockerfile:1:8: FROM requires either one or three arguments (FROM image AS name)\n1 | FROM a b c\n  |        ^\nhelp: write FROM image or FROM image AS name\n",
    ),
    (
        "FROM a\nENV =x",
        "Dockerfile:2:5: ENV names can not be blank\n2 | ENV =x\n  |     ^\n",
    ),
    (
        "FROM a\nARG =x",
        "Dockerfile:2:5: ARG names can not be blank\n2 | ARG =x\n  |     ^^\n",
    ),
    (
        "FROM a\nHEALTHCHECK CONNECT TCP 7000",
        "Dockerfile:2:13: unknown type \"CONNECT\" in HEALTHCHECK (try CMD)\n2 | HEALTHCHECK CONNECT TCP 7000\n  |             ^^^^^^^\n",
    ),
    (
        "FROM a\nHEALTHCHECK NONE now",
        "Dockerfile:2:18: HEALTHCHECK NONE takes no arguments\n2 | HEALTHCHECK NONE now\n  |                  ^^^\n",
    ),
    (
        "FROM a\nHEALTHCHECK --interval=5s CMD",
        "Dockerfile:2:27: missing command after HEALTHCHECK CMD\n2 | HEALTHCHECK --interval=5s CMD\n  |                           ^^^\n",
    ),
    (
        "FROM a\nHEALTHCHECK --timeout=10us CMD true",
        "Dockerfile:2:13: invalid value for flag --timeout: \"10us\" (must be 0 or at least 1ms)\n2 | HEALTHCHECK --timeout=10us CMD true\n  |             ^^^^^^^^^^^^^^\n",
    ),
    (
        "FROM a\nSHELL /bin/sh -c",
        "Dockerfile:2:1: SHELL requires the arguments to be in JSON form\n2 | SHELL /bin/sh -c\n  | ^^^^^\n",
    ),
    (
        "FROM a\nONBUILD ONBUILD RUN x",
        "Dockerfile:2:9: ONBUILD isn't allowed as an ONBUILD trigger\n2 | ONBUILD ONBUILD RUN x\n  |         ^^^^^^^\nhelp: chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed\n",
    ),
    (
        "FROM a\nONBUILD MAINTAINER me",
        "Dockerfile:2:9: MAINTAINER isn't allowed as an ONBUILD trigger\n2 | ONBUILD MAINTAINER me\n  |         ^^^^^^^^^^\n",
    ),
    (
        "FROM a\nVOLUME [\"/a\", \"\"]",
        "Dockerfile:2:15: VOLUME specified can not be an empty string\n2 | VOLUME [\"/a\", \"\"]\n  |               ^\n",
    ),
    (
        "FROM a\nCOPY onlyone",
        "Dockerfile:2:1: COPY requires at least two arguments (sources and a destination)\n2 | COPY onlyone\n  | ^^^^\n",
    ),
    (
        "FROM a\nWORKDIR",
        "Dockerfile:2:1: WORKDIR requires exactly one argument\n2 | WORKDIR\n  | ^^^^^^^\n",
    ),
    (
        "FROM a\nCMD --doit [ \"a\", \"b\" ]",
        "Dockerfile:2:5: unknown flag: --doit\n2 | CMD --doit [ \"a\", \"b\" ]\n  |     ^^^^^^\nhelp: CMD takes no flags\n",
    ),
    (
        "FROM a\nRUN --mount=type=cache,target=/c --mount=type=secret,id=x --network=none --security=insecure true\nCOPY --from=b --chown=1:1 --chmod=644 --link --parents --exclude=*.md --exclude=.git . /\nADD --chown=1 --chmod=600 --link=false --exclude=x --keep-git-dir --checksum=sha256:ab https://x/y.tar /\nHEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=2s --retries=5 CMD [\"curl\", \"-f\", \"x\"]",
        "(from \"a\")\n(run [\"--mount=type=cache,target=/c\" \"--mount=type=secret,id=x\" \"--network=none\" \"--security=insecure\"] \"true\")\n(copy [\"--from=b\" \"--chown=1:1\" \"--chmod=644\" \"--link\" \"--parents\" \"--exclude=*.md\" \"--exclude=.git\"] \".\" \"/\")\n(add [\"--chown=1\" \"--chmod=600\" \"--link=false\" \"--exclude=x\" \"--keep-git-dir\" \"--checksum=sha256:ab\"] \"https://x/y.tar\" \"/\")\n(healthcheck [\"--interval=30s\" \"--timeout=3s\" \"--start-period=1m\" \"--start-interval=2s\" \"--retries=5\"] \"CMD\" \"curl\" \"-f\" \"x\")\n",
    ),
    (
        "from a\nrun echo hi\nCopy . /",
        "(from \"a\")\n(run \"echo hi\")\n(copy \".\" \"/\")\n",
    ),
    (
        "FROM a\nENV A=1 \\\n# comment inside\n    B=2",
        "(from \"a\")\n(env \"A\" \"1\" \"=\" \"B\" \"2\" \"=\")\n",
    ),
    ("\u{feff}FROM bom", "(from \"bom\")\n"),
    (
        "#syntax=docker/dockerfile:1\n#check=skip=all\nFROM x",
        "(from \"x\")\n",
    ),
    (
        "FROM a\nrun [\"sh\", \"-c\", 'echo']\n",
        "(from \"a\")\n(run \"[\\\"sh\\\", \\\"-c\\\", 'echo']\")\n",
    ),
];

#[test]
fn golden_heredocs_flags_and_errors() {
    let mut failures = Vec::new();
    for (src, expected) in GOLDEN {
        let got = check(src);
        if got != *expected {
            failures.push(format!("{src:?}\n--- expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        GOLDEN.len(),
        failures.join("\n")
    );
}

/// A tiny deterministic PRNG (xorshift64*), so the mutation test is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "\\\n",
    "\\",
    "`",
    "`\n",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "#",
    "# escape=`\n",
    "# escape=\\\n",
    "# syntax=x\n",
    "# check=a\n",
    "<<EOF\n",
    "<<EOF",
    "EOF\n",
    "<<-\"X\" ",
    "\tX\n",
    "2<<'Q' ",
    "Q\n",
    "[",
    "]",
    "\"",
    "'",
    ",",
    "\\u",
    "\\ud800",
    "{",
    "}",
    ":",
    "--",
    "--mount=",
    "--from",
    "--link=",
    "--interval=",
    "=",
    "ONBUILD ",
    "ONBUILD ONBUILD ",
    "HEALTHCHECK ",
    "NONE",
    "CMD ",
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "SHELL ",
    "AS ",
    "\u{feff}",
    "é",
    "\u{0}",
    "\u{85}",
    "\u{a0}",
    "😀",
    "$",
    "${",
];

/// Exercise everything a Dockerfile goes through before expansion; panics are the failure.
fn exercise(src: &str) {
    let line_count = u32::try_from(src.split('\n').count()).unwrap_or(u32::MAX);
    match parse(src) {
        Ok(ast) => {
            let _ = dump(&ast);
            let _ = dump_with_heredocs(&ast);
            for node in &ast.nodes {
                assert!(
                    node.span.line >= 1 && node.span.line <= line_count,
                    "{src:?}"
                );
                assert!(node.span.column >= 1, "{src:?}");
                assert!(node.end_line >= node.span.line, "{src:?}");
                if let Err(e) = kiln_frontend::instructions::Instruction::from_node(node) {
                    assert!(
                        e.span.line >= 1 && e.span.line <= line_count,
                        "{src:?}: {e}"
                    );
                    let _ = render(&e, "Dockerfile", src);
                }
            }
        }
        Err(e) => {
            assert!(
                e.span.line >= 1 && e.span.line <= line_count.max(1),
                "{src:?}: {e}"
            );
            let _ = render(&e, "Dockerfile", src);
        }
    }
}

/// Deterministic stand-in for the fuzzer inside the normal test suite: thousands of mutated
/// Dockerfiles from the conformance corpus and our golden cases must never make the parser, the
/// typed layer or the renderer panic, and every span must point into the source. Without the
/// conformance directory only our golden cases are mutated.
#[test]
fn mutated_corpus_never_panics() {
    let mut corpus: Vec<Vec<char>> = Vec::new();
    if let Some(dir) = parser_dir() {
        for sub in ["testfiles", "testfiles-negative"] {
            for case in cases(&dir, sub) {
                let src = fs_err::read_to_string(case.join("Dockerfile"))
                    .unwrap_or_else(|e| panic!("{e}"));
                corpus.push(src.chars().collect());
            }
        }
    }
    corpus.extend(GOLDEN.iter().map(|(src, _)| src.chars().collect()));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let iterations = 20_000;
    for _ in 0..iterations {
        let mut s = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(s.len() + 1);
            match rng.below(5) {
                0 | 1 => {
                    let token: Vec<char> = TOKENS[rng.below(TOKENS.len())].chars().collect();
                    s.splice(at..at, token);
                }
                2 => {
                    let end = (at + rng.below(16)).min(s.len());
                    s.drain(at..end);
                }
                3 => {
                    let end = (at + rng.below(64)).min(s.len());
                    let copy: Vec<char> = s[at..end].to_vec();
                    let to = rng.below(s.len() + 1);
                    s.splice(to..to, copy);
                }
                _ => {
                    if at < s.len() {
                        s[at] = char::from_u32(rng.below(0x80) as u32).unwrap_or(' ');
                    }
                }
            }
        }
        let src: String = s.into_iter().collect();
        exercise(&src);
    }
    eprintln!("mutated corpus: {iterations} inputs, no panic");
}

#[test]
fn pathological_inputs_are_fast_and_safe() {
    let cases = [
        "ONBUILD ".repeat(10_000) + "RUN x",
        format!("CMD {}", "[".repeat(100_000)),
        format!("FROM a\nRUN {}", "<<EOF ".repeat(2_000)),
        format!("FROM a\nRUN x {}", "\\\n".repeat(50_000)),
        format!("FROM a\nCOPY {} a b", "--exclude=x ".repeat(20_000)),
        format!("FROM a\nENV {}", "a=b ".repeat(20_000)),
        format!("FROM a\nLABEL {}", "a=b ".repeat(250_000)),
        "\\".repeat(100_001),
    ];
    for src in &cases {
        let start = std::time::Instant::now();
        exercise(src);
        assert!(
            start.elapsed().as_secs() < 5,
            "too slow on {:?}",
            &src[..40.min(src.len())]
        );
    }
}
