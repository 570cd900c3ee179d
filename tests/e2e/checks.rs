//! Build checks (BuildKit's lint rules) end to end: `kiln build --check` lists the findings
//! without building and fails only under `error=true`; a build prints them at its end, located
//! and with a caret like kiln's other Dockerfile errors.

use crate::support::{Context, Kiln, text};

const NOISY: &str = "FROM busybox\nMAINTAINER me@example.com\nCMD echo hi\nRUN exit 7\n";

#[test]
fn build_check_lists_findings_without_building() {
    let k = Kiln::with_busybox();
    let ctx = Context::new().file("Dockerfile", NOISY);
    let out = k.run(&["build", "--check", ctx.arg()]);
    let err = text(&out.stderr);
    // `RUN exit 7` would fail the build: exit 0 shows nothing ran.
    assert!(out.status.success(), "{err}");
    assert!(
        err.starts_with("Check complete, 2 warnings have been found!\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: Dockerfile:2:1: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label\n\
             2 | MAINTAINER me@example.com\n  | ^^^^^^^^^^\n\
             help: https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\n"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: Dockerfile:3:1: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
             3 | CMD echo hi\n  | ^^^\n"
        ),
        "{err}"
    );
    assert!(!err.contains("exit code"), "{err}");

    // error=true: the same findings, and exit 1 naming the rules.
    ctx.write("Dockerfile", &format!("# check=error=true\n{NOISY}"));
    let err = k.fails(&["build", "--check", ctx.arg()]);
    assert!(
        err.contains("Check complete, 2 warnings have been found!"),
        "{err}"
    );
    assert!(
        err.contains(
            "error: Dockerfile: lint violation found for rules: MaintainerDeprecated, JSONArgsRecommended\n"
        ),
        "{err}"
    );

    // The build arg replaces the directive.
    let out = k.run(&[
        "build",
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip=all",
        ctx.arg(),
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err, "Check complete, no warnings found.\n");

    // A value that does not parse names the flag.
    let err = k.fails(&[
        "build",
        "--check",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=skip",
        ctx.arg(),
    ]);
    assert!(
        err.contains("--build-arg BUILDKIT_DOCKERFILE_CHECK=skip")
            && err.contains("failed to parse check options: invalid check option \"skip\""),
        "{err}"
    );

    // Every stage is checked, not only the target's.
    ctx.write(
        "Dockerfile",
        "FROM busybox AS Unused\nFROM busybox\nCMD [\"sh\"]\n",
    );
    let out = k.run(&["build", "--check", ctx.arg()]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "warning: Dockerfile:1:17: StageNameCasing: Stage name 'Unused' should be lowercase\n"
        ),
        "{err}"
    );

    // A Dockerfile that does not lower fails the check, with its findings first.
    ctx.write(
        "Dockerfile",
        "FROM busybox\nENV A $B\nCOPY --from=later /x /x\nFROM busybox AS later\n",
    );
    let err = k.fails(&["build", "--check", ctx.arg()]);
    assert!(
        err.starts_with("Check complete, 2 warnings have been found!\n"),
        "{err}"
    );
    assert!(
        err.contains("LegacyKeyValueFormat") && err.contains("UndefinedVar"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:3:"), "{err}");
}

#[test]
fn a_build_summarises_findings_at_its_end_and_error_true_stops_it() {
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nENV DEPS curl\nCMD echo $DEPS\n",
    );
    let out = k.run(&["build", "--progress=plain", "-t", "checked:1", ctx.arg()]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let tail = err
        .split("kiln: built")
        .nth(1)
        .unwrap_or_else(|| panic!("no build line:\n{err}"));
    assert!(tail.contains("\n2 warnings found:\n"), "{err}");
    assert!(
        tail.contains(
            "warning: Dockerfile:2:1: LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format\n"
        ),
        "{err}"
    );
    assert!(
        tail.contains("warning: Dockerfile:3:1: JSONArgsRecommended"),
        "{err}"
    );

    // Under error=true the build stops before any step, with the findings.
    ctx.write(
        "Dockerfile",
        "# check=error=true\nFROM busybox\nWORKDIR app\nRUN exit 9\n",
    );
    let err = k.fails(&["build", "--progress=plain", "-t", "checked:2", ctx.arg()]);
    assert!(
        err.contains("warning: Dockerfile:3:9: WorkdirRelativePath: Relative workdir \"app\" can have unexpected results if the base image changes\n"),
        "{err}"
    );
    assert!(
        err.contains("error: Dockerfile: lint violation found for rules: WorkdirRelativePath\n"),
        "{err}"
    );
    assert!(!err.contains("exit"), "no step may have run:\n{err}");
    let images = k.ok(&["images"]);
    assert!(images.contains("checked"), "{images}");
    assert!(
        !images
            .lines()
            .any(|l| l.contains("checked") && l.split_whitespace().any(|w| w == "2")),
        "{images}"
    );
}
