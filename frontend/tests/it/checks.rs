//! Build checks: each of BuildKit's rules fires where BuildKit's does (name, message, location)
//! and stays quiet on the Dockerfiles its documentation calls good; the `# check=` directive
//! and `BUILDKIT_DOCKERFILE_CHECK` configure them.

use kiln_frontend::diagnostic::render;
use kiln_frontend::lint::{Finding, Report, Rule};
use kiln_frontend::lower::{ImageResolver, LowerOptions, ResolvedImage, lower_checked};
use kiln_frontend::parser::parse;
use kiln_graph::{ImageConfig, RootFs, RunConfig};
use kiln_oci::Platform;

/// Every image is a one-layer linux/amd64 image with PATH set; `python` also sets
/// PYTHON_VERSION, `armimage` is linux/arm64, `shellimage` has a SHELL.
struct Images;

impl ImageResolver for Images {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, String> {
        let mut env = vec!["PATH=/usr/bin:/bin".to_owned()];
        if reference.starts_with("python") {
            env.push("PYTHON_VERSION=3.12".to_owned());
        }
        let architecture = if reference == "armimage" {
            "arm64"
        } else {
            "amd64"
        };
        let shell = if reference == "shellimage" {
            vec!["/bin/bash".to_owned(), "-c".to_owned()]
        } else {
            Vec::new()
        };
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}"),
            digest: None,
            config: ImageConfig {
                architecture: architecture.into(),
                os: "linux".into(),
                config: RunConfig {
                    env,
                    shell,
                    ..RunConfig::default()
                },
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![
                        "sha256:1111111111111111111111111111111111111111111111111111111111111111"
                            .into(),
                    ],
                },
                ..ImageConfig::default()
            },
        })
    }
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn opts() -> LowerOptions {
    LowerOptions {
        target_platform: amd64(),
        build_platform: amd64(),
        ..LowerOptions::default()
    }
}

fn report_with(src: &str, o: &LowerOptions) -> Report {
    let ast = parse(src).unwrap_or_else(|e| panic!("{}", render(&e, "Dockerfile", src)));
    let (result, report) = lower_checked(&ast, o, &Images);
    if let Err(e) = result {
        panic!("lowering failed:\n{}", render(&e, "Dockerfile", src));
    }
    report
}

/// `(rule, message, line, column)` of every finding.
fn findings_with(src: &str, o: &LowerOptions) -> Vec<(String, String, u32, u32)> {
    report_with(src, o)
        .findings
        .iter()
        .map(|f: &Finding| {
            (
                f.rule.name().to_owned(),
                f.message.clone(),
                f.span.line,
                f.span.column,
            )
        })
        .collect()
}

fn findings(src: &str) -> Vec<(String, String, u32, u32)> {
    findings_with(src, &opts())
}

fn one(rule: &str, msg: &str, line: u32, col: u32) -> Vec<(String, String, u32, u32)> {
    vec![(rule.to_owned(), msg.to_owned(), line, col)]
}

/// The rules of `src`'s findings only.
fn rules(src: &str) -> Vec<String> {
    findings(src).into_iter().map(|f| f.0).collect()
}

#[test]
fn stage_name_casing() {
    assert_eq!(
        findings("FROM alpine AS BuilderBase\n"),
        one(
            "StageNameCasing",
            "Stage name 'BuilderBase' should be lowercase",
            1,
            16
        )
    );
    assert!(findings("FROM alpine AS builder-base\n").is_empty());
}

#[test]
fn from_as_casing() {
    assert_eq!(
        findings("FROM debian:latest as builder\n"),
        one(
            "FromAsCasing",
            "'as' and 'FROM' keywords' casing do not match",
            1,
            20
        )
    );
    assert!(findings("FROM debian:latest AS deb-builder\n").is_empty());
    assert!(findings("from debian:latest as deb-builder\n").is_empty());
}

#[test]
fn no_empty_continuation() {
    let f = findings("FROM alpine\nEXPOSE \\\n\n80\n");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, "NoEmptyContinuation");
    assert_eq!(f[0].1, "Empty continuation line");
    assert!(findings("FROM alpine\nEXPOSE \\\n# Port\n80\n").is_empty());
}

#[test]
fn consistent_instruction_casing() {
    assert_eq!(
        findings(
            "From alpine\nRun echo hello > /greeting.txt\nEntRYpOiNT [\"cat\", \"/greeting.txt\"]\n"
        ),
        vec![
            (
                "ConsistentInstructionCasing".to_owned(),
                "Command 'From' should match the case of the command majority (uppercase)"
                    .to_owned(),
                1,
                1
            ),
            (
                "ConsistentInstructionCasing".to_owned(),
                "Command 'Run' should match the case of the command majority (uppercase)"
                    .to_owned(),
                2,
                1
            ),
            (
                "ConsistentInstructionCasing".to_owned(),
                "Command 'EntRYpOiNT' should match the case of the command majority (uppercase)"
                    .to_owned(),
                3,
                1
            ),
        ]
    );
    assert_eq!(
        findings("from alpine\nrun true\nRUN true\nrun true\n"),
        one(
            "ConsistentInstructionCasing",
            "Command 'RUN' should match the case of the command majority (lowercase)",
            3,
            1
        )
    );
    assert!(findings("from alpine\nrun echo hi\nentrypoint [\"cat\"]\n").is_empty());
}

#[test]
fn duplicate_and_reserved_stage_names() {
    // A duplicate name is also an error of lowering; the finding is kept with it.
    let src = "FROM debian:latest AS builder\nFROM golang:latest AS builder\n";
    let ast = parse(src).unwrap();
    let (result, report) = lower_checked(&ast, &opts(), &Images);
    assert!(result.is_err());
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].rule, Rule::DuplicateStageName);
    assert_eq!(
        report.findings[0].message,
        "Duplicate stage name \"builder\", stage names should be unique"
    );
    assert_eq!(report.findings[0].span.line, 2);

    assert_eq!(
        findings("FROM alpine AS scratch\nFROM alpine AS context\nFROM alpine\n"),
        vec![
            (
                "ReservedStageName".to_owned(),
                "Stage name should not use the same name as reserved stage \"scratch\"".to_owned(),
                1,
                16
            ),
            (
                "ReservedStageName".to_owned(),
                "Stage name should not use the same name as reserved stage \"context\"".to_owned(),
                2,
                16
            ),
        ]
    );
    assert!(findings("FROM alpine AS deb-builder\nFROM alpine AS go-builder\n").is_empty());
}

#[test]
fn json_args_recommended() {
    assert_eq!(
        findings("FROM alpine\nENTRYPOINT my-program start\n"),
        one(
            "JSONArgsRecommended",
            "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals",
            2,
            1
        )
    );
    assert_eq!(rules("FROM alpine\nCMD echo hi\n"), ["JSONArgsRecommended"]);
    assert!(findings("FROM alpine\nENTRYPOINT [\"my-program\", \"start\"]\n").is_empty());
    // An explicit SHELL (here, or in the base image) says the shell form is meant.
    assert!(findings("FROM alpine\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\n").is_empty());
    assert!(findings("FROM shellimage\nCMD echo hi\n").is_empty());
    // HEALTHCHECK's CMD is not the image's.
    assert!(findings("FROM alpine\nHEALTHCHECK CMD curl -f http://localhost/\n").is_empty());
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        findings("FROM alpine\nMAINTAINER moby@example.com\n"),
        one(
            "MaintainerDeprecated",
            "Maintainer instruction is deprecated in favor of using label",
            2,
            1
        )
    );
    assert!(
        findings("FROM alpine\nLABEL org.opencontainers.image.authors=\"moby@example.com\"\n")
            .is_empty()
    );
}

#[test]
fn undefined_arg_in_from() {
    assert_eq!(
        findings("FROM node:22${VARIANT} AS jsbuilder\n"),
        one(
            "UndefinedArgInFrom",
            "FROM argument 'VARIANT' is not declared",
            1,
            6
        )
    );
    assert!(
        findings("ARG VARIANT=\"-alpine3.20\"\nFROM node:22${VARIANT} AS jsbuilder\n").is_empty()
    );
    // Declared without a value: not undefined.
    assert!(findings("ARG VARIANT\nFROM node:22${VARIANT}\n").is_empty());
    // A misspelled automatic arg gets a suggestion.
    assert_eq!(
        findings("FROM alpine$TARGETARC\n")[0].1,
        "FROM argument 'TARGETARC' is not declared (did you mean TARGETARCH?)"
    );
}

#[test]
fn workdir_relative_path() {
    assert_eq!(
        findings("FROM nginx AS web\nWORKDIR usr/share/nginx/html\nCOPY public .\n"),
        one(
            "WorkdirRelativePath",
            "Relative workdir \"usr/share/nginx/html\" can have unexpected results if the base image changes",
            2,
            9
        )
    );
    assert!(findings("FROM nginx AS web\nWORKDIR /usr/share/nginx/html\nWORKDIR sub\n").is_empty());
    // The stage built on another inherits its WORKDIR.
    assert!(findings("FROM nginx AS base\nWORKDIR /app\nFROM base\nWORKDIR src\n").is_empty());
}

#[test]
fn undefined_var() {
    assert_eq!(
        findings("FROM alpine AS base\nCOPY $foo .\n"),
        one("UndefinedVar", "Usage of undefined variable '$foo'", 2, 6)
    );
    assert!(findings("FROM alpine AS base\nARG foo\nCOPY $foo .\n").is_empty());
    assert_eq!(
        findings("FROM alpine AS base\nARG VERSION=$foo\n"),
        one("UndefinedVar", "Usage of undefined variable '$foo'", 2, 13)
    );
    // The base image's ENV defines variables.
    assert!(findings("FROM python AS base\nARG VERSION=$PYTHON_VERSION\n").is_empty());
    assert_eq!(
        findings("FROM alpine\nENV PATH=$PAHT:/app/bin\n"),
        one(
            "UndefinedVar",
            "Usage of undefined variable '$PAHT' (did you mean $PATH?)",
            2,
            10
        )
    );
    // Shell-form RUN is the shell's business.
    assert!(findings("FROM alpine\nRUN echo $nothing\n").is_empty());
    // A default does not define the variable (BuildKit's lexer counts it as unmatched).
    assert_eq!(rules("FROM alpine\nENV A=${unset:-x}\n"), ["UndefinedVar"]);
}

#[test]
fn multiple_instructions_disallowed() {
    assert_eq!(
        findings(
            "FROM alpine\nENTRYPOINT [\"echo\", \"Hello, Norway!\"]\nENTRYPOINT [\"echo\", \"Hello, Sweden!\"]\n"
        ),
        one(
            "MultipleInstructionsDisallowed",
            "Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be used",
            2,
            1
        )
    );
    assert!(
        findings(
            "FROM python:alpine\nHEALTHCHECK --interval=1s CMD [\"curl\", \"-f\", \"http://localhost:8080\"]\nCMD [\"python\", \"-m\", \"http.server\"]\n"
        )
        .is_empty()
    );
    // One per stage.
    assert!(findings("FROM alpine\nCMD [\"a\"]\nFROM alpine\nCMD [\"b\"]\n").is_empty());
}

#[test]
fn legacy_key_value_format() {
    assert_eq!(
        findings("FROM alpine\nENV DEPS curl\n"),
        one(
            "LegacyKeyValueFormat",
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
            2,
            1
        )
    );
    assert_eq!(
        rules("FROM alpine\nLABEL foo bar\n"),
        ["LegacyKeyValueFormat"]
    );
    assert!(findings("FROM alpine\nENV DEPS=\"curl git\"\nLABEL a=b\n").is_empty());
}

#[test]
fn invalid_base_image_platform() {
    assert_eq!(
        findings("FROM armimage\n"),
        one(
            "InvalidBaseImagePlatform",
            "Base image armimage was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build",
            1,
            1
        )
    );
    assert!(findings("FROM alpine\n").is_empty());
}

#[test]
fn redundant_target_platform() {
    assert_eq!(
        findings("FROM --platform=$TARGETPLATFORM alpine AS builder\n"),
        one(
            "RedundantTargetPlatform",
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
            1,
            6
        )
    );
    assert!(findings("FROM --platform=$BUILDPLATFORM alpine AS builder\n").is_empty());
}

#[test]
fn secrets_used_in_arg_or_env() {
    assert_eq!(
        findings("FROM alpine\nARG AWS_ACCESS_KEY_ID\nENV GITHUB_TOKEN=x\n"),
        vec![
            (
                "SecretsUsedInArgOrEnv".to_owned(),
                "Do not use ARG or ENV instructions for sensitive data (ARG \"AWS_ACCESS_KEY_ID\")"
                    .to_owned(),
                2,
                5
            ),
            (
                "SecretsUsedInArgOrEnv".to_owned(),
                "Do not use ARG or ENV instructions for sensitive data (ENV \"GITHUB_TOKEN\")"
                    .to_owned(),
                3,
                5
            ),
        ]
    );
    assert!(findings("FROM alpine\nARG PUBLIC_KEY\nENV KEY_FILE=/k\nARG monkey\n").is_empty());
}

#[test]
fn invalid_default_arg_in_from() {
    let f = findings_with(
        "ARG TAG\nFROM busybox:${TAG}\n",
        &LowerOptions {
            build_args: [("TAG".to_owned(), "1.36".to_owned())].into(),
            ..opts()
        },
    );
    assert_eq!(
        f,
        one(
            "InvalidDefaultArgInFrom",
            "Default value for ARG busybox:${TAG} results in empty or invalid base image name",
            2,
            6
        )
    );
    assert!(findings("ARG TAG=latest\nFROM busybox:${TAG}\n").is_empty());
    assert!(findings("ARG VARIANT\nFROM busybox:stable${VARIANT}\n").is_empty());
    assert!(findings("ARG TAG\nFROM alpine:${TAG:-3.14}\n").is_empty());
}

#[test]
fn from_platform_flag_const_disallowed() {
    assert_eq!(
        findings("FROM --platform=linux/amd64 alpine AS base\n"),
        one(
            "FromPlatformFlagConstDisallowed",
            "FROM --platform flag should not use constant value \"linux/amd64\"",
            1,
            6
        )
    );
    assert!(findings("FROM --platform=${BUILDPLATFORM} alpine AS base\n").is_empty());
    assert!(findings("FROM --platform=linux/amd64 alpine AS build_amd64\n").is_empty());
}

#[test]
fn copy_ignored_file() {
    let o = LowerOptions {
        dockerignore: vec!["*/tmp/*".to_owned()],
        ..opts()
    };
    assert_eq!(
        findings_with(
            "FROM scratch\nCOPY ./a/tmp/helloworld.txt /helloworld.txt\n",
            &o
        ),
        one(
            "CopyIgnoredFile",
            "Attempting to Copy file \"a/tmp/helloworld.txt\" that is excluded by .dockerignore",
            2,
            6
        )
    );
    assert_eq!(
        findings_with("FROM scratch\nADD a/tmp/x /x\n", &o)[0].1,
        "Attempting to Add file \"a/tmp/x\" that is excluded by .dockerignore"
    );
    assert!(findings_with("FROM scratch\nCOPY ./forever/helloworld.txt /h\n", &o).is_empty());
    // From another stage, the context's .dockerignore does not apply.
    assert!(
        findings_with(
            "FROM scratch AS b\nFROM scratch\nCOPY --from=b a/tmp/x /x\n",
            &o
        )
        .is_empty()
    );
    // With an exception BuildKit does not decide statically.
    let with_exception = LowerOptions {
        dockerignore: vec!["*/tmp/*".to_owned(), "!a/tmp/keep".to_owned()],
        ..opts()
    };
    assert!(findings_with("FROM scratch\nCOPY a/tmp/x /x\n", &with_exception).is_empty());
}

#[test]
fn invalid_definition_description_is_experimental() {
    let src = "# check=experimental=InvalidDefinitionDescription\n\n# a non-descriptive comment\nFROM scratch AS base\n# another non-descriptive comment\nARG VERSION=1\n";
    assert_eq!(
        findings(src),
        vec![
            (
                "InvalidDefinitionDescription".to_owned(),
                "Comment for FROM should follow the format: `# base <description>`".to_owned(),
                4,
                1
            ),
            (
                "InvalidDefinitionDescription".to_owned(),
                "Comment for ARG should follow the format: `# VERSION <description>`".to_owned(),
                6,
                1
            ),
        ]
    );
    let good = "# check=experimental=all\n\n# base is a stage\nFROM scratch AS base\n# VERSION This is the version number.\nARG VERSION=1\n";
    assert!(findings(good).is_empty());
    // Off by default.
    assert!(findings("# a comment\nFROM scratch AS base\n").is_empty());
}

#[test]
fn expose_rules() {
    assert_eq!(
        findings("FROM alpine\nEXPOSE 80/TcP\n"),
        one(
            "ExposeProtoCasing",
            "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase",
            2,
            8
        )
    );
    assert_eq!(
        findings("FROM alpine\nEXPOSE 127.0.0.1:80:80\n"),
        one(
            "ExposeInvalidFormat",
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
            2,
            8
        )
    );
    assert_eq!(
        rules("FROM alpine\nEXPOSE 80:80\n"),
        ["ExposeInvalidFormat"]
    );
    assert!(findings("FROM alpine\nEXPOSE 80 53/udp\n").is_empty());
}

#[test]
fn only_lowered_stages_unless_all_stages() {
    let src = "FROM alpine AS unused\nCMD echo hi\nFROM alpine\nCMD [\"x\"]\n";
    assert!(findings(src).is_empty());
    let all = LowerOptions {
        all_stages: true,
        ..opts()
    };
    assert_eq!(
        findings_with(src, &all)
            .into_iter()
            .map(|f| (f.0, f.2))
            .collect::<Vec<_>>(),
        [("JSONArgsRecommended".to_owned(), 2)]
    );
}

#[test]
fn check_directive_and_build_arg() {
    let src =
        "# check=skip=JSONArgsRecommended;error=true\nFROM alpine\nCMD echo hi\nMAINTAINER me\n";
    let r = report_with(src, &opts());
    assert!(r.error);
    assert_eq!(
        r.findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
        [Rule::MaintainerDeprecated]
    );
    assert_eq!(
        r.violation().unwrap(),
        "lint violation found for rules: MaintainerDeprecated"
    );
    assert!(findings("# check=skip=all\nFROM alpine\nCMD echo hi\n").is_empty());
    // The build arg replaces the directive.
    let o = LowerOptions {
        build_args: [(
            "BUILDKIT_DOCKERFILE_CHECK".to_owned(),
            "skip=MaintainerDeprecated".to_owned(),
        )]
        .into(),
        ..opts()
    };
    let r = report_with(src, &o);
    assert!(!r.error);
    assert_eq!(
        r.findings.iter().map(|f| f.rule).collect::<Vec<_>>(),
        [Rule::JsonArgsRecommended]
    );
    // A `# check=` comment right above one instruction skips rules for it alone.
    let src =
        "FROM alpine\n# check=skip=JSONArgsRecommended\nCMD echo hi\nFROM alpine\nCMD echo again\n";
    assert_eq!(
        findings(src).into_iter().map(|f| f.2).collect::<Vec<_>>(),
        [5]
    );
    // A directive that does not parse fails the build at the directive.
    let src = "# check=skip\nFROM alpine\n";
    let ast = parse(src).unwrap();
    let (result, _) = lower_checked(&ast, &opts(), &Images);
    let e = render(&result.unwrap_err(), "Dockerfile", src);
    assert!(
        e.starts_with(
            "Dockerfile:1:1: failed to parse check options: invalid check option \"skip\""
        ),
        "{e}"
    );
}

#[test]
fn findings_render_with_caret_and_link() {
    let src = "FROM alpine\nCMD echo hi\n";
    let r = report_with(src, &opts());
    assert_eq!(
        render(&r.findings[0], "Dockerfile", src),
        "Dockerfile:2:1: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
         2 | CMD echo hi\n  | ^^^\n\
         help: https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"
    );
}
