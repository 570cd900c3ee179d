//! The texts BuildKit writes: history `created_by` lines (Go `%q`/`%v`/`%+v` renderings) and
//! progress names (`[build 2/3] RUN make`).

use std::fmt::Write as _;

use kiln_graph::Healthcheck;

use crate::parser::go_quote;

/// The history comment BuildKit's Dockerfile frontend writes on every entry.
pub(crate) const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Go's `fmt.Sprintf("%q", []string{...})`: `["a" "b"]`.
pub(crate) fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `fmt.Sprintf("%v", []string{...})`: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()` for a count of nanoseconds: `1m30s`, `1.5s`, `300ms`, `0s`.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_owned();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if u < 1_000_000_000 {
        // Sub-second: the largest unit that keeps a non-zero integer part.
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&fraction(u, div));
        out.push_str(unit);
        return out;
    }
    let hours = u / 3_600_000_000_000;
    let rem = u % 3_600_000_000_000;
    let minutes = rem / 60_000_000_000;
    let secs_ns = rem % 60_000_000_000;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    out.push_str(&fraction(secs_ns, 1_000_000_000));
    out.push('s');
    out
}

/// `value / div` with the fractional digits Go prints (trailing zeros dropped).
fn fraction(value: u64, div: u64) -> String {
    let int = value / div;
    let frac = value % div;
    if frac == 0 {
        return int.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// BuildKit's `HEALTHCHECK %+v` of the health config.
pub(crate) fn healthcheck_text(h: &Healthcheck) -> String {
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&h.test),
        go_duration(h.interval),
        go_duration(h.timeout),
        go_duration(h.start_period),
        go_duration(h.start_interval),
        h.retries
    )
}

/// The first word upper-cased, as BuildKit names steps (`run echo` → `RUN echo`).
pub(crate) fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
        None => s.to_uppercase(),
    }
}

/// The first line of a heredoc, with `...` when there are more.
pub(crate) fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim().replace("\r\n", "\n");
    let mut lines = doc.split('\n');
    let mut summary = lines.next().unwrap_or_default().to_owned();
    if lines.next().is_some() {
        summary.push_str("...");
    }
    summary
}

/// Step numbering of one stage: `[name i/total] `.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepCounter {
    /// Stage name shown in the prefix; `None` for a single-stage Dockerfile.
    pub name: Option<String>,
    /// Number of steps (FROM image, RUN, COPY, ADD, WORKDIR, ONBUILD triggers).
    pub total: usize,
    /// Steps named so far.
    pub index: usize,
}

impl StepCounter {
    /// Names the next step: `[build 2/3] RUN make`; with `onbuild`, `[2/3] ONBUILD RUN make`.
    pub(crate) fn name(&mut self, text: &str, onbuild: bool) -> String {
        if self.total == 0 {
            return text.to_owned();
        }
        self.index += 1;
        let width = self.total.ilog10() as usize + 1;
        let mut out = String::from("[");
        if let Some(name) = &self.name {
            out.push_str(name);
            out.push(' ');
        }
        let _ = write!(out, "{:>width$}/{}] ", self.index, self.total);
        if onbuild {
            out.push_str("ONBUILD ");
        }
        out.push_str(text);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(5), "5ns");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
    }

    #[test]
    fn go_lists() {
        let v = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "echo \"hi\"".to_owned(),
        ];
        assert_eq!(go_quoted_list(&v), r#"["/bin/sh" "-c" "echo \"hi\""]"#);
        assert_eq!(go_list(&v), r#"[/bin/sh -c echo "hi"]"#);
    }

    #[test]
    fn step_names() {
        let mut c = StepCounter {
            name: Some("build".into()),
            total: 12,
            index: 0,
        };
        assert_eq!(c.name("FROM x", false), "[build  1/12] FROM x");
        let mut c = StepCounter {
            name: None,
            total: 3,
            index: 1,
        };
        assert_eq!(c.name("RUN a", true), "[2/3] ONBUILD RUN a");
        let mut c = StepCounter::default();
        assert_eq!(c.name("RUN a", false), "RUN a");
        assert_eq!(uppercase_cmd("run echo hi"), "RUN echo hi");
        assert_eq!(summarize_heredoc("\n a\nb\n"), "a...");
    }
}
