//! BuildKit shell tables (`buildkit/shell` of the conformance directory).
//!
//! Without the conformance directory each test skips loudly (fails under `KILN_REQUIRE_ALL=1`);
//! a table missing from it fails the test.

use kiln_frontend::shell::{Env, Escape, expand_word, expand_words};

use crate::conformance;

/// Reads one table from `buildkit/shell/`; `None` when the conformance directory is missing.
fn table(name: &str) -> Option<String> {
    let path = conformance::dir()?.join("buildkit/shell").join(name);
    match fs_err::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) => panic!("BuildKit shell table missing, conformance cannot run: {e}"),
    }
}

/// One failed row, for a report of all failures at once.
fn failure(line_no: usize, input: &str, expected: &str, got: &str) -> String {
    format!("line {line_no}: {input:?}: expected {expected:?}, got {got:?}")
}

#[test]
fn env_var_test() {
    let Some(text) = table("envVarTest") else {
        return;
    };
    let env = Env::from_kv_strings(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let (mut passed, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let columns: Vec<&str> = line.split('|').collect();
        let [platform, input, expected] = columns[..] else {
            panic!("envVarTest line {line_no} does not have 3 columns: {line:?}");
        };
        let (platform, input, expected) = (platform.trim(), input.trim(), expected.trim());
        match platform {
            "A" | "U" => {}
            "W" => {
                skipped += 1;
                continue;
            }
            other => panic!("envVarTest line {line_no}: unknown platform {other:?}"),
        }
        let got = match expand_word(input, &env, Escape::Backslash) {
            Ok(result) => result.value,
            Err(_) => "error".to_owned(),
        };
        if got == expected {
            passed += 1;
        } else {
            failures.push(failure(line_no, input, expected, &got));
        }
    }
    eprintln!(
        "envVarTest: {passed} passed, {} failed, {skipped} Windows rows skipped",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The table has 228 A/U rows: a parse that silently dropped rows must not pass.
    assert_eq!(passed, 228, "envVarTest row count");
}

#[test]
fn words_test() {
    let Some(text) = table("wordsTest") else {
        return;
    };
    let mut env = Env::new();
    let mut passed = 0;
    let mut failures = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let Some((name, value)) = assignment.split_once('=') else {
                panic!("wordsTest line {line_no}: ENV without '=': {line:?}");
            };
            env.set(name, value);
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            panic!("wordsTest line {line_no} has no '|': {line:?}");
        };
        let input = input.trim_matches(' ');
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = match expand_words(input, &env, Escape::Backslash) {
            Ok((words, _)) => words,
            Err(_) => vec!["error".to_owned()],
        };
        if got == expected {
            passed += 1;
        } else {
            failures.push(failure(
                line_no,
                input,
                &format!("{expected:?}"),
                &format!("{got:?}"),
            ));
        }
    }
    eprintln!("wordsTest: {passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(passed, 24, "wordsTest row count");
}
