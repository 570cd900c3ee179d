//! Our own cases, beside BuildKit's tables in `tests/it/shell_conformance.rs`.

use std::collections::BTreeSet;

use super::*;

fn env() -> Env {
    Env::from_kv_strings([
        "PWD=/home",
        "NULL=",
        "PATHV=/usr/local/bin",
        "FILE=archive.tar.gz",
        "SP=a  b ",
        "FOO=foo boo",
        "STAR=a*b",
    ])
}

fn word(input: &str) -> String {
    match expand_word(input, &env(), Escape::Backslash) {
        Ok(r) => r.value,
        Err(e) => panic!("{input:?} failed: {e}"),
    }
}

fn tick(input: &str) -> String {
    match expand_word(input, &env(), Escape::Backtick) {
        Ok(r) => r.value,
        Err(e) => panic!("{input:?} failed: {e}"),
    }
}

fn error(input: &str) -> String {
    match expand_word(input, &env(), Escape::Backslash) {
        Ok(r) => panic!("{input:?} expanded to {:?}, expected an error", r.value),
        Err(e) => e.to_string(),
    }
}

fn words(input: &str) -> Vec<String> {
    match expand_words(input, &env(), Escape::Backslash) {
        Ok((w, _)) => w,
        Err(e) => panic!("{input:?} failed: {e}"),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn plain_and_braced() {
    assert_eq!(word("$PWD/x"), "/home/x");
    assert_eq!(word("${PWD}x"), "/homex");
    assert_eq!(word("$NOPE"), "");
    assert_eq!(word("a$"), "a$");
    assert_eq!(word("$/"), "$/");
    assert_eq!(word("${PWD}}"), "/home}");
}

#[test]
fn default_operators_tell_unset_from_empty() {
    assert_eq!(word("${NOPE:-d}"), "d");
    assert_eq!(word("${NULL:-d}"), "d");
    assert_eq!(word("${PWD:-d}"), "/home");
    assert_eq!(word("${NOPE-d}"), "d");
    assert_eq!(word("${NULL-d}"), "");
    assert_eq!(word("${PWD-d}"), "/home");
}

#[test]
fn alternative_operators_tell_unset_from_empty() {
    assert_eq!(word("${NOPE:+a}"), "");
    assert_eq!(word("${NULL:+a}"), "");
    assert_eq!(word("${PWD:+a}"), "a");
    assert_eq!(word("${NOPE+a}"), "");
    assert_eq!(word("${NULL+a}"), "a");
    assert_eq!(word("${PWD+a}"), "a");
}

#[test]
fn required_operators() {
    assert_eq!(word("${PWD:?m}"), "/home");
    assert_eq!(word("${PWD?m}"), "/home");
    assert_eq!(word("${NULL?m}"), "");
    assert_eq!(error("${NOPE?must be set}"), "NOPE: must be set");
    assert_eq!(error("${NOPE:?}"), "NOPE: is not allowed to be unset");
    assert_eq!(error("${NOPE?}"), "NOPE: is not allowed to be unset");
    assert_eq!(error("${NULL:?}"), "NULL: is not allowed to be empty");
    assert_eq!(error("${NULL:?give $PWD}"), "NULL: give /home");
}

#[test]
fn prefix_removal() {
    assert_eq!(word("${PATHV#*/}"), "usr/local/bin");
    assert_eq!(word("${PATHV##*/}"), "bin");
    assert_eq!(word("${PATHV#/usr}"), "/local/bin");
    assert_eq!(word("${PATHV#nomatch}"), "/usr/local/bin");
    assert_eq!(word("${NOPE#x}"), "");
    assert_eq!(word("${PATHV:#*/}"), "usr/local/bin");
    // The pattern is expanded first.
    assert_eq!(word("${PATHV#$PWD}"), "/usr/local/bin");
    assert_eq!(word("${PATHV#${NOPE:-/usr}}"), "/local/bin");
}

#[test]
fn suffix_removal() {
    assert_eq!(word("${FILE%.*}"), "archive.tar");
    assert_eq!(word("${FILE%%.*}"), "archive");
    assert_eq!(word("${FILE%.gz}"), "archive.tar");
    assert_eq!(word("${FILE%?z}"), "archive.tar.");
    assert_eq!(word("${FILE%x}"), "archive.tar.gz");
}

#[test]
fn pattern_escapes_and_quotes() {
    assert_eq!(word(r"${STAR#a\*}"), "b");
    assert_eq!(word("${STAR#a*}"), "*b");
    assert_eq!(word("${STAR##a*}"), "");
    assert_eq!(word(r"${STAR%\*b}"), "a");
    assert_eq!(word(r"${PATHV/\//:}"), ":usr/local/bin");
    assert_eq!(
        error(r"${PATHV#\u}"),
        r"invalid pattern (\u) in substitution: invalid escape '\u'"
    );
}

#[test]
fn replacement() {
    assert_eq!(word("${FOO/oo/00}"), "f00 boo");
    assert_eq!(word("${FOO//oo/00}"), "f00 b00");
    assert_eq!(error("${FOO//o}"), "syntax error: missing '/' in ${}");
    assert_eq!(word("${FOO/o*/X}"), "fX");
    assert_eq!(word("${FOO//?/.}"), ".......");
    assert_eq!(
        word("${FOO/#/x}"),
        "foo boo",
        "# is not an anchor in BuildKit"
    );
    assert_eq!(word("${FOO//o/}"), "f b");
    assert_eq!(word("${NOPE/a/b}"), "");
    assert_eq!(word("${FOO/ /$PWD}"), "foo/homeboo");
}

#[test]
fn quotes() {
    assert_eq!(word(r#"'a $PWD \x'"#), r"a $PWD \x");
    assert_eq!(word(r#""a $PWD \x \" \$ \\""#), r#"a /home \x " $ \"#);
    assert_eq!(word(r#""it's""#), "it's");
    assert_eq!(word(r#"a"b"'c'd"#), "abcd");
    assert_eq!(word(r#"${NOPE:-"a b"}"#), "a b");
    assert_eq!(word("${NOPE:-'}'}"), "}");
}

#[test]
fn escapes_outside_quotes() {
    assert_eq!(word(r"a\ b"), "a b");
    assert_eq!(word(r"\$PWD"), "$PWD");
    assert_eq!(word(r"\n"), "n");
    assert_eq!(word("end\\"), "end");
    assert_eq!(word(r"${NOPE:-\}}"), "}");
    assert_eq!(word("a`b"), "a`b");
}

#[test]
fn backtick_escape() {
    assert_eq!(tick(r"C:\path\$PWD"), r"C:\path\/home");
    assert_eq!(tick("`$PWD"), "$PWD");
    assert_eq!(tick("a` b"), "a b");
    assert_eq!(tick("``"), "`");
    assert_eq!(tick("end`"), "end");
    assert_eq!(tick(r#""q`"x""#), r#"q"x"#);
    assert_eq!(tick(r#""q\x""#), r"q\x");
    assert_eq!(tick(r#""``""#), "`");
    assert_eq!(tick("${NOPE:-`}}"), "}");
    let lexer = Lexer::new(Escape::Backtick);
    assert_eq!(lexer.escape(), Escape::Backtick);
    match lexer.expand_words("a` b c", &env()) {
        Ok((w, _)) => assert_eq!(w, ["a b", "c"]),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn escape_from_directive_char() {
    assert_eq!(Escape::from_char('\\'), Some(Escape::Backslash));
    assert_eq!(Escape::from_char('`'), Some(Escape::Backtick));
    assert_eq!(Escape::from_char('x'), None);
    assert_eq!(Escape::default().as_char(), '\\');
    assert_eq!(Escape::Backtick.as_char(), '`');
}

#[test]
fn used_and_unset_sets() {
    let result = expand_word(
        "$PWD ${NOPE:-$NULL} ${X+y} \\$ESCAPED '$QUOTED' \"$DQ\" $1 $@",
        &env(),
        Escape::Backslash,
    );
    let Ok(result) = result else {
        panic!("{result:?}")
    };
    assert_eq!(
        result.used,
        set(&["1", "@", "DQ", "NOPE", "NULL", "PWD", "X"])
    );
    assert_eq!(result.unset, set(&["1", "@", "DQ", "NOPE", "X"]));
    let Ok((_, used)) = expand_words("${A:-$B} c", &env(), Escape::Backslash) else {
        panic!()
    };
    assert_eq!(used, set(&["A", "B"]));
}

#[test]
fn words_split_on_unquoted_and_expanded_whitespace() {
    assert_eq!(words("a $SP c"), ["a", "a", "b", "c"]);
    assert_eq!(words("x\"$SP\"y"), ["xa  b y"]);
    assert_eq!(words("'' \"\" a"), ["a"]);
    assert_eq!(words("  "), Vec::<String>::new());
    assert_eq!(words("a\\ b\tc\nd"), ["a b", "c", "d"]);
    assert_eq!(words("${NOPE:-x y}"), ["x", "y"]);
}

#[test]
fn every_syntax_error_message() {
    let cases = [
        (
            "'abc",
            "unexpected end of statement while looking for matching single-quote",
            0,
        ),
        (
            "a\"bc",
            "unexpected end of statement while looking for matching double-quote",
            1,
        ),
        ("x${PWD", "syntax error: missing '}'", 1),
        ("${", "syntax error: missing '}'", 0),
        ("${PWD:", "syntax error: missing '}'", 0),
        ("${PWD:-abc", "syntax error: missing '}'", 0),
        ("${PWD:-'abc}", "syntax error: missing '}'", 0),
        ("${PWD/abc}", "syntax error: missing '/' in ${}", 0),
        ("${PWD/a/b", "syntax error: missing '}'", 0),
        ("${}", "syntax error: bad substitution", 0),
        ("${:-x}", "syntax error: bad substitution", 0),
        ("ab${{x}", "syntax error: bad substitution", 2),
        ("${PWD:=x}", "unsupported modifier (:=) in substitution", 0),
        ("${PWD:x}", "unsupported modifier (:x) in substitution", 0),
        ("${PWD=x}", "unsupported modifier (=) in substitution", 0),
        ("${.}", "unsupported modifier (.) in substitution", 0),
        ("${#PWD}", "unsupported modifier (P) in substitution", 0),
        ("${NOPE?m}", "NOPE: m", 0),
        ("${NOPE?}", "NOPE: is not allowed to be unset", 0),
        ("${NULL:?}", "NULL: is not allowed to be empty", 0),
        ("${NULL:?m}", "NULL: m", 0),
        (
            "${PWD#a\\b}",
            "invalid pattern (a\\b) in substitution: invalid escape '\\b'",
            0,
        ),
        (
            "${PWD/a\\b/c}",
            "invalid pattern (a\\b) in substitution: invalid escape '\\b'",
            0,
        ),
    ];
    for (input, message, offset) in cases {
        match expand_word(input, &env(), Escape::Backslash) {
            Ok(r) => panic!("{input:?} expanded to {:?}", r.value),
            Err(e) => {
                assert_eq!(e.to_string(), message, "message for {input:?}");
                assert_eq!(e.offset(), offset, "offset for {input:?}");
            }
        }
    }
}

#[test]
fn pattern_ending_in_lone_backslash_is_invalid() {
    // Only reachable with the backtick escape, where `\` is an ordinary character.
    match expand_word(r"${PWD%a\}", &env(), Escape::Backtick) {
        Ok(r) => panic!("expanded to {:?}", r.value),
        Err(e) => {
            assert_eq!(
                e,
                ShellError::InvalidPattern {
                    pattern: r"a\".to_owned(),
                    escaped: None,
                    offset: 0,
                }
            );
            assert_eq!(
                e.to_string(),
                r"invalid pattern (a\) in substitution: invalid escape '\'"
            );
        }
    }
}

#[test]
fn nested_error_inside_braces_keeps_its_message() {
    assert_eq!(error("${A:-${NOPE?inner}}"), "NOPE: inner");
    // At the very end BuildKit reports the missing brace instead.
    assert_eq!(error("${A:-${NOPE?inner}"), "syntax error: missing '}'");
}

#[test]
fn expansion_stops_at_the_word_limit() {
    let lexer = Lexer::new(Escape::Backslash).max_len(100);
    let env = Env::from_kv_strings([format!("A={}", "a".repeat(60))]);
    // Fits: 60 bytes, or 60 + 40 literal bytes exactly at the limit.
    assert_eq!(lexer.expand_word("$A", &env).map(|r| r.value.len()), Ok(60));
    let at_limit = format!("${{A}}{}", "x".repeat(40));
    assert_eq!(
        lexer.expand_word(&at_limit, &env).map(|r| r.value.len()),
        Ok(100)
    );
    // The second copy does not fit: the error points at its `$`.
    for (input, offset) in [
        ("$A$A", 2),
        ("${A}${A}", 4),
        ("\"$A$A\"", 3),
        ("${X:-$A$A}", 7),
        ("${A/a/$A}", 0),
        ("${A//a/$A}", 0),
        ("$A-$A", 3),
    ] {
        assert_eq!(
            lexer.expand_word(input, &env),
            Err(ShellError::TooLong { limit: 100, offset }),
            "{input}"
        );
    }
    let one_too_many = format!("${{A}}{}", "x".repeat(41));
    assert!(matches!(
        lexer.expand_word(&one_too_many, &env),
        Err(ShellError::TooLong { offset: 44, .. })
    ));
    // Word splitting is bounded the same way.
    assert!(matches!(
        lexer.expand_words("$A $A", &env),
        Err(ShellError::TooLong { offset: 3, .. })
    ));
    // A word written longer than the limit keeps its length.
    let long = "y".repeat(500);
    assert_eq!(lexer.expand_word(&long, &env).map(|r| r.value), Ok(long));
    assert_eq!(
        ShellError::TooLong {
            limit: 5,
            offset: 0
        }
        .to_string(),
        "expansion longer than 5 bytes"
    );
}

#[test]
fn doubling_stops_near_a_mebibyte_by_default() {
    let mut env = Env::from_kv_strings(["A0=xx"]);
    let mut failed_at = None;
    for i in 1..40 {
        match expand_word(
            &format!("${{A{}}}${{A{}}}", i - 1, i - 1),
            &env,
            Escape::Backslash,
        ) {
            Ok(r) => env.set(format!("A{i}"), r.value),
            Err(e) => {
                failed_at = Some((i, e));
                break;
            }
        }
    }
    // A19 holds 2^20 bytes: A20 would be twice that.
    assert_eq!(
        failed_at,
        Some((
            20,
            ShellError::TooLong {
                limit: MAX_WORD_LEN,
                offset: 6
            }
        ))
    );
    assert_eq!(env.get("A19").map(str::len), Some(MAX_WORD_LEN));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let ok = format!(
        "{}x{}",
        "${A:-".repeat(MAX_NESTING),
        "}".repeat(MAX_NESTING)
    );
    assert_eq!(word(&ok), "x");
    let deep = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
    let err = expand_word(&deep, &env(), Escape::Backslash);
    assert!(
        matches!(
            err,
            Err(ShellError::TooDeep {
                limit: MAX_NESTING,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(
        ShellError::TooDeep {
            limit: 3,
            offset: 0
        }
        .to_string(),
        "substitutions nested deeper than 3 levels"
    );
}

#[test]
fn heredoc_keeps_quotes_and_applies_escapes() {
    let content = "echo '$PWD' \"${NOPE:-d}\"\nline \\$PWD \\n\n";
    let Ok(result) = expand_heredoc(content, &env(), Escape::Backslash) else {
        panic!()
    };
    assert_eq!(result.value, "echo '/home' \"d\"\nline $PWD n\n");
    assert_eq!(result.used, set(&["NOPE", "PWD"]));
    // A lone quote is no error there.
    let Ok(result) = expand_heredoc("it's \"", &env(), Escape::Backslash) else {
        panic!()
    };
    assert_eq!(result.value, "it's \"");
    assert_eq!(
        expand_heredoc("${PWD", &env(), Escape::Backslash),
        Err(ShellError::MissingBrace { offset: 0 })
    );
}

#[test]
fn leading_byte_order_mark_is_dropped() {
    assert_eq!(word("\u{feff}$PWD"), "/home");
    assert_eq!(word("a\u{feff}"), "a\u{feff}");
}

#[test]
fn unicode_names_and_values() {
    let env = Env::from_pairs(&[("변수".to_owned(), "값 값".to_owned())]);
    let Ok(r) = expand_word("$변수/${변수//값/v}", &env, Escape::Backslash) else {
        panic!()
    };
    assert_eq!(r.value, "값 값/v v");
    let Ok((w, _)) = expand_words("$변수", &env, Escape::Backslash) else {
        panic!()
    };
    assert_eq!(w, ["값", "값"]);
}

/// Cheap deterministic pseudo-random generator, so the robustness test needs no dependency.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn arbitrary_input_never_panics() {
    let alphabet: Vec<char> = "${}:-+?#%/\\`'\" \tabAB_019@*!.\n한\u{feff}"
        .chars()
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let env = env();
    for _ in 0..20_000 {
        let len = (next(&mut seed) % 24) as usize;
        let input: String = (0..len)
            .map(|_| alphabet[(next(&mut seed) % alphabet.len() as u64) as usize])
            .collect();
        for escape in [Escape::Backslash, Escape::Backtick] {
            // Whatever the outcome, it must be an outcome; errors point inside the input.
            if let Err(e) = expand_word(&input, &env, escape) {
                assert!(e.offset() <= input.len(), "{input:?}: {e:?}");
            }
            let _ = expand_words(&input, &env, escape);
            let _ = expand_heredoc(&input, &env, escape);
        }
    }
}

#[test]
fn expands_100k_words_quickly() {
    let env = env();
    let inputs = [
        "/opt/$PWD/${FILE%%.*}",
        "${NOPE:-default}-${PATHV##*/}",
        "plain-word",
        "\"quoted $FOO\" 'single'",
    ];
    let start = std::time::Instant::now();
    let mut bytes = 0;
    for i in 0..100_000 {
        match expand_word(inputs[i % inputs.len()], &env, Escape::Backslash) {
            Ok(r) => bytes += r.value.len(),
            Err(e) => panic!("{e}"),
        }
    }
    let elapsed = start.elapsed();
    eprintln!("expanded 100000 words ({bytes} bytes out) in {elapsed:?}");
    assert_eq!(bytes, 25_000 * (18 + 11 + 10 + 21));
    assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
}

fn with(pairs: &[(&str, &str)], input: &str) -> Result<ExpandResult, ShellError> {
    let env: Env = pairs.iter().copied().collect();
    expand_word(input, &env, Escape::Backslash)
}

/// Variables, input, expected value.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

#[test]
fn patterns_as_buildkit_matches_them() {
    let cases: &[Case] = &[
        // Regex metacharacters are literal; `\}` keeps the brace in the pattern.
        (&[("V", r"()[]{}^$.*?|\x")], r"${V#()[]{\}^$.\*\?|\\}", "x"),
        (&[("V", "xx**")], r"${V%%\**}", "xx"),
        (&[("V", "a***yy*")], r"${V%%\**\*}", "a"),
        (&[("V", "xxyy")], "${V#*x*y}", "y"),
        (&[("V", "xxyy")], "${V#*}", "xxyy"),
        (&[("V", "xxyy"), ("P", "x")], "${V#$P}", "xyy"),
        (&[("V", "xxyy"), ("P", "")], "${V#$P}", "xxyy"),
        (&[("V", "xxyy")], "${V#}", "xxyy"),
        (&[("V", "xxyy")], "${V##}", "xxyy"),
        (&[("V", "xxyy")], "${V##*x}", "yy"),
        (&[("V", "???y")], r"${V#?\?}", "?y"),
        (&[("V", "xxyy")], "${A:-.}${V%x}${A:-.}", ".xxyy."),
        (&[("V", "xxyy")], "${V%}", "xxyy"),
        (
            &[("V", "/foo*/*/*.txt"), ("N", r"\*/")],
            "${V/$N/.} ${V//$N/.}",
            "/foo.*/*.txt /foo..*.txt",
        ),
        (
            &[("V", "/tmp/tmp/bar.txt"), ("N", "/tmp")],
            "${V/$N/} ${V//$N/}",
            "/tmp/bar.txt /bar.txt",
        ),
        (
            &[("V", "/a/foo/b/c.txt"), ("N", "/?/"), ("R", "/")],
            "${V/$N/$R} ${V//$N/$R}",
            "/foo/b/c.txt /foo/c.txt",
        ),
        // The replacement keeps its escapes.
        (&[("V", "/tmp/foo.txt")], r"${V//\//\/}", r"\/tmp\/foo.txt"),
        (&[("V", "xxyy"), ("E", "")], "${V/$E/ww}", "wwxxyy"),
        (&[("V", "xxyy")], "${V///}", "xxyy"),
        (&[], "${V///}", ""),
        (&[("E", "")], "${V/$E/ww}", "ww"),
    ];
    for (pairs, input, expected) in cases {
        match with(pairs, input) {
            Ok(r) => assert_eq!(r.value, *expected, "{input:?}"),
            Err(e) => panic!("{input:?}: {e}"),
        }
    }
    for input in ["${V//ww}", "${V//}", "${V=x}", "${V=:x}", "${V=}"] {
        assert!(with(&[("V", "xxyy")], input).is_err(), "{input:?}");
    }
}

#[test]
fn required_message_is_expanded() {
    let empty = with(&[("V", ""), ("A", "x")], "${V:?message here$A}");
    assert_eq!(
        empty.map_err(|e| e.to_string()),
        Err("V: message herex".to_owned())
    );
    let unset = with(&[("A", "x")], "${V?message here$A}");
    assert_eq!(
        unset.map_err(|e| e.to_string()),
        Err("V: message herex".to_owned())
    );
    assert_eq!(
        with(&[("V", "")], "${V?m}").map(|r| r.value),
        Ok(String::new())
    );
}

#[test]
fn used_distinguishes_set_and_unset_like_buildkit_matches() {
    let r = with(
        &[("FOO", "xxx"), ("BAR", "")],
        "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
    );
    let Ok(r) = r else { panic!("{r:?}") };
    assert_eq!(r.value, "aaa bbb ");
    assert_eq!(r.used, set(&["BAR", "BAZ", "FOO"]));
    assert_eq!(r.unset, set(&["BAZ"]));
}

#[test]
fn skip_unset_keeps_unset_references_as_written() {
    let lexer = Lexer::new(Escape::Backslash).skip_unset(true);
    let cases = [
        ("$NOPE/$PWD", "$NOPE//home"),
        ("${NOPE}", "${NOPE}"),
        ("${NOPE:-$PWD}", "${NOPE:-/home}"),
        ("${NOPE+x}", "${NOPE+x}"),
        ("${NOPE:?}", "${NOPE:?}"),
        ("${NOPE:=x}", "${NOPE:=x}"),
        ("${NOPE##*/}", "${NOPE##*/}"),
        ("${NOPE//a/b}", "${NOPE/a/b}"),
        ("${NULL:-d}", "d"),
        ("${PWD#/}", "home"),
    ];
    for (input, expected) in cases {
        match lexer.expand_word(input, &env()) {
            Ok(r) => assert_eq!(r.value, expected, "{input:?}"),
            Err(e) => panic!("{input:?}: {e}"),
        }
    }
    assert!(lexer.expand_word("${PWD:=x}", &env()).is_err());
}

#[test]
fn raw_quotes_and_raw_escapes() {
    let raw_quotes = Lexer::new(Escape::Backslash).raw_quotes(true);
    let raw_escapes = Lexer::new(Escape::Backslash).raw_escapes(true);
    let both = raw_quotes.raw_escapes(true);
    let expand = |lexer: Lexer, input: &str| match lexer.expand_word(input, &env()) {
        Ok(r) => r.value,
        Err(e) => panic!("{input:?}: {e}"),
    };
    assert_eq!(expand(raw_quotes, r#"a'$PWD'"$PWD""#), r#"a'$PWD'"/home""#);
    assert_eq!(expand(raw_quotes, r#"<<"EOF""#), r#"<<"EOF""#);
    assert_eq!(expand(raw_escapes, r"a\ b\$PWD"), r"a\ b\$PWD");
    assert_eq!(
        expand(raw_escapes, r"${NOPE:-\x}"),
        "x",
        "not inside braces"
    );
    assert_eq!(expand(both, r#""a\"b""#), r#""a\"b""#);
    match both.expand_words(r#"x 'a b' \ y"#, &env()) {
        Ok((w, _)) => assert_eq!(w, ["x", "'a b'", r"\ y"]),
        Err(e) => panic!("{e}"),
    }
}
