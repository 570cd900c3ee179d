//! Build checks in the CLI: the findings printed as our other Dockerfile errors are (file,
//! line, column, the source line and a caret, the rule's page), the summary at the end of a
//! build, and `kiln build --check`.

use kiln_frontend::diagnostic::render;
use kiln_frontend::lint::Report;

/// `1 warning found:` / `N warnings found:` and each finding, on stderr.
pub(super) fn print_warnings(report: &Report, file_name: &str, text: &str) {
    if report.findings.is_empty() {
        return;
    }
    let n = report.findings.len();
    eprintln!("{n} {} found:", if n == 1 { "warning" } else { "warnings" });
    for f in &report.findings {
        eprint!("warning: {}", render(f, file_name, text));
    }
}

/// `kiln build --check`'s summary line, as BuildKit words it.
pub(super) fn check_summary(report: &Report) -> String {
    match report.findings.len() {
        0 => "Check complete, no warnings found.".to_owned(),
        1 => "Check complete, 1 warning has been found!".to_owned(),
        n => format!("Check complete, {n} warnings have been found!"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_frontend::diagnostic::Span;
    use kiln_frontend::lint::{Finding, Rule};

    #[test]
    fn summary_counts() {
        let mut r = Report::default();
        assert_eq!(check_summary(&r), "Check complete, no warnings found.");
        r.findings.push(Finding {
            rule: Rule::UndefinedVar,
            message: "m".into(),
            span: Span::new(1, 1, 1),
        });
        assert_eq!(
            check_summary(&r),
            "Check complete, 1 warning has been found!"
        );
        r.findings.push(r.findings[0].clone());
        assert_eq!(
            check_summary(&r),
            "Check complete, 2 warnings have been found!"
        );
    }
}
