//! `--format` for `ps`, `images` and `inspect`: the part of Go's text/template docker users
//! write (`{{.ID}}`, `{{.State.ExitCode}}`, `{{json .}}`, `{{json .Config}}`, `{{upper .X}}`,
//! `{{lower .X}}`, `{{index .Config.Labels "k"}}`), a `table` prefix that adds a header row and
//! aligns columns as docker's tabwriter does, and `\t`/`\n` written as two characters.

use anyhow::{Result, bail};
use serde_json::Value;

/// A parsed `--format` string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    /// `table ...`: a header row, and columns aligned.
    pub table: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Action { func: Option<Func>, args: Vec<Arg> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Json,
    Upper,
    Lower,
    Index,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.A.B` (empty for `.`).
    Path(Vec<String>),
    /// `"key"`.
    Str(String),
}

impl Template {
    /// Parses `format`; errors name the action and say what is supported.
    pub fn parse(format: &str) -> Result<Template> {
        let format = format.replace("\\t", "\t").replace("\\n", "\n");
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) => (true, rest.trim_start_matches([' ', '\t']).to_owned()),
            None => (false, format),
        };
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                bail!("--format {body:?}: unclosed action (missing }}}})");
            };
            parts.push(parse_action(after[..close].trim())?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts, table })
    }

    /// One row for `v`.
    pub fn render(&self, v: &Value) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action { func, args } => out.push_str(&eval(*func, args, v)?),
            }
        }
        Ok(out)
    }

    /// The header row of a `table`: each field's column name from `header` (for `.ID`,
    /// `header("ID")`), the text between them kept.
    pub fn header(&self, header: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action { args, .. } => match args.first() {
                    Some(Arg::Path(path)) if !path.is_empty() => {
                        out.push_str(&header(&path.join(".")));
                    }
                    _ => {}
                },
            }
        }
        out
    }

    /// Renders `rows`, with the header first and columns aligned for a `table`.
    pub fn render_all(&self, rows: &[Value], header: impl Fn(&str) -> String) -> Result<String> {
        let mut lines = Vec::new();
        if self.table {
            lines.push(self.header(header));
        }
        for r in rows {
            lines.push(self.render(r)?);
        }
        let mut out = if self.table {
            align(&lines)
        } else {
            lines.join("\n")
        };
        if !lines.is_empty() {
            out.push('\n');
        }
        Ok(out)
    }
}

fn parse_action(src: &str) -> Result<Part> {
    let words = split_words(src)?;
    let (func, rest) = match words.first().map(String::as_str) {
        Some("json") => (Some(Func::Json), &words[1..]),
        Some("upper") => (Some(Func::Upper), &words[1..]),
        Some("lower") => (Some(Func::Lower), &words[1..]),
        Some("index") => (Some(Func::Index), &words[1..]),
        Some(w) if w.starts_with('.') => (None, &words[..]),
        _ => bail!(
            "--format: unsupported action {{{{{src}}}}} (fields such as .ID, and json, upper, \
             lower, index)"
        ),
    };
    let mut args = Vec::new();
    for w in rest {
        if let Some(s) = w.strip_prefix('"') {
            args.push(Arg::Str(s.trim_end_matches('"').to_owned()));
        } else if w == "." {
            args.push(Arg::Path(Vec::new()));
        } else if let Some(p) = w.strip_prefix('.') {
            args.push(Arg::Path(p.split('.').map(str::to_owned).collect()));
        } else {
            bail!("--format: {{{{{src}}}}}: {w:?} is neither a field (.Name) nor a \"string\"");
        }
    }
    let want = match func {
        None | Some(Func::Json | Func::Upper | Func::Lower) => 1,
        Some(Func::Index) => 2,
    };
    if args.len() != want {
        bail!("--format: {{{{{src}}}}}: expected {want} argument(s)");
    }
    Ok(Part::Action { func, args })
}

fn split_words(src: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in src.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ' ' | '\t' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if quoted {
        bail!("--format: {{{{{src}}}}}: unterminated string");
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn eval(func: Option<Func>, args: &[Arg], v: &Value) -> Result<String> {
    let arg = |a: &Arg| -> Option<Value> {
        match a {
            Arg::Path(p) => lookup(v, p).cloned(),
            Arg::Str(s) => Some(Value::String(s.clone())),
        }
    };
    let first = arg(&args[0]);
    Ok(match func {
        None => show(first.as_ref()),
        Some(Func::Json) => serde_json::to_string(&first.unwrap_or(Value::Null))?,
        Some(Func::Upper) => show(first.as_ref()).to_uppercase(),
        Some(Func::Lower) => show(first.as_ref()).to_lowercase(),
        Some(Func::Index) => {
            let key = arg(&args[1]);
            let found = match (&first, &key) {
                (Some(Value::Object(m)), Some(Value::String(k))) => m.get(k),
                _ => None,
            };
            // Go's index of a missing map key is the zero value: empty.
            found.map(|f| show(Some(f))).unwrap_or_default()
        }
    })
}

/// A value as Go's template prints it: strings bare, a missing field `<no value>`.
fn show(v: Option<&Value>) -> String {
    match v {
        None => "<no value>".to_owned(),
        Some(Value::Null) => "<nil>".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Aligns tab-separated cells as docker's tabwriter (minimum width 10, padding 3); the last
/// cell of a line is not padded.
pub fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 < r.len() {
                width[i] = width[i].max((cell.chars().count() + 3).max(10));
            }
        }
    }
    let mut out = Vec::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                let pad = width[i] - cell.chars().count();
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push(line.trim_end().to_owned());
    }
    out.join("\n")
}

/// docker's `HumanDuration` (go-units): "Less than a second", "3 seconds", "About a minute",
/// "5 minutes", "About an hour", "3 hours", "2 days", "3 weeks", "4 months", "2 years".
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    let hours = (s as f64 / 3600.0 + 0.5) as i64;
    if s < 1 {
        "Less than a second".to_owned()
    } else if s == 1 {
        "1 second".to_owned()
    } else if s < 60 {
        format!("{s} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", s / 3600 / 24 / 365)
    }
}

/// Seconds since an RFC 3339 time (0 when it cannot be read).
pub fn seconds_since(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(f: &str, v: &Value) -> String {
        Template::parse(f).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_nested_fields_and_functions() {
        let v = json!({"ID": "abc", "State": {"ExitCode": 3, "Running": false},
                       "Config": {"Labels": {"a": "b"}}, "Names": "web"});
        assert_eq!(render("{{.ID}} {{.Names}}", &v), "abc web");
        assert_eq!(render("{{.State.ExitCode}}", &v), "3");
        assert_eq!(render("{{ .State.Running }}", &v), "false");
        assert_eq!(
            render("{{json .State}}", &v),
            r#"{"ExitCode":3,"Running":false}"#
        );
        assert_eq!(render("{{upper .Names}}", &v), "WEB");
        assert_eq!(render(r#"{{index .Config.Labels "a"}}"#, &v), "b");
        assert_eq!(render(r#"{{index .Config.Labels "zz"}}"#, &v), "");
        assert_eq!(render("{{.Nope}}", &v), "<no value>");
        assert_eq!(render(r"{{.ID}}\t{{.Names}}", &v), "abc\tweb");
        let all: Value = serde_json::from_str(&render("{{json .}}", &v)).unwrap();
        assert_eq!(all, v);
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let e = Template::parse("{{.ID").unwrap_err().to_string();
        assert!(e.contains("unclosed"), "{e}");
        let e = Template::parse("{{range .X}}").unwrap_err().to_string();
        assert!(e.contains("unsupported action {{range .X}}"), "{e}");
        let e = Template::parse("{{index .X}}").unwrap_err().to_string();
        assert!(e.contains("expected 2"), "{e}");
        assert!(Template::parse(r#"{{index .X "a}}"#).is_err());
    }

    #[test]
    fn tables_get_a_header_and_aligned_columns() {
        let t = Template::parse(r"table {{.ID}}\t{{.Names}}").unwrap();
        assert!(t.table);
        let rows = [
            json!({"ID": "a", "Names": "x"}),
            json!({"ID": "abcdefghijkl", "Names": "y"}),
        ];
        let out = t
            .render_all(&rows, |f| match f {
                "ID" => "CONTAINER ID".into(),
                f => f.to_uppercase(),
            })
            .unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   NAMES\na              x\nabcdefghijkl   y\n"
        );
        assert_eq!(align(&["a\tb".into()]), "a         b");
    }

    #[test]
    fn durations_read_as_docker_s() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(21 * 86400), "3 weeks");
        assert_eq!(human_duration(100 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }
}
