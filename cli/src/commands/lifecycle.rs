//! `ps` and `inspect --format`: containers as docker's CLI shows them (relative times, STATUS
//! `Up 2 seconds` / `Exited (0) 3 seconds ago`, PORTS from the record), through the shared
//! `--format` engine.

use crate::commands::Global;
use crate::format::{Template, human_duration, seconds_since};
use anyhow::{Result, bail};
use kiln_solver::containers::Container;
use serde_json::{Value, json};
use std::io::Write;

/// docker's default `ps` table.
const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// `kiln ps` options.
pub struct PsOptions {
    pub all: bool,
    pub quiet: bool,
    pub no_trunc: bool,
    pub format: Option<String>,
    pub filters: Vec<String>,
}

/// A `ps --filter KEY=VALUE`.
#[derive(Debug, PartialEq)]
enum Filter {
    Id(String),
    Name(String),
    Status(String),
    Exited(i32),
    Ancestor(String),
    Health(String),
}

fn parse_filter(f: &str) -> Result<Filter> {
    let Some((k, v)) = f.split_once('=') else {
        bail!("bad format of filter (expected name=value): {f}");
    };
    Ok(match k {
        "id" => Filter::Id(v.to_owned()),
        "name" => Filter::Name(v.to_owned()),
        "status" => {
            const KNOWN: [&str; 7] = [
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ];
            if !KNOWN.contains(&v) {
                bail!("invalid filter 'status={v}' (created, running, paused, exited, ...)");
            }
            Filter::Status(v.to_owned())
        }
        "exited" => Filter::Exited(
            v.parse()
                .map_err(|_| anyhow::anyhow!("invalid filter 'exited={v}': not a number"))?,
        ),
        "ancestor" => Filter::Ancestor(v.to_owned()),
        "health" => {
            if !["starting", "healthy", "unhealthy", "none"].contains(&v) {
                bail!("Unrecognised filter value for health: {v}");
            }
            Filter::Health(v.to_owned())
        }
        _ => bail!("invalid filter '{k}' (id, name, status, exited, ancestor, health)"),
    })
}

/// The docker `ps --format` fields of one container.
pub fn ps_row(c: &Container, no_trunc: bool) -> Result<Value> {
    let st = c.state()?;
    let doc = c.inspect()?;
    let status = match st.docker_status() {
        "running" => format!(
            "Up {}{}",
            human_duration(seconds_since(st.started_at.as_deref().unwrap_or(""))),
            match c.health().as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)".to_owned(),
                Some(s) => format!(" ({s})"),
                None => String::new(),
            }
        ),
        "paused" => format!(
            "Up {} (Paused)",
            human_duration(seconds_since(st.started_at.as_deref().unwrap_or("")))
        ),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            st.exit_code.unwrap_or(0),
            human_duration(seconds_since(st.finished_at.as_deref().unwrap_or("")))
        ),
        "exited" => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(0),
            human_duration(seconds_since(st.finished_at.as_deref().unwrap_or("")))
        ),
        "created" => "Created".to_owned(),
        other => other.to_owned(),
    };
    let mut cmd = c.config().plan.args.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    let id = if no_trunc { c.id() } else { &c.id()[..12] };
    let created = chrono::DateTime::parse_from_rfc3339(&st.created_at)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %z UTC").to_string())
        .unwrap_or_default();
    let mounts: Vec<String> = doc["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["Destination"].as_str().map(str::to_owned))
        .collect();
    Ok(json!({
        "ID": id,
        "Image": c.config().image,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": created,
        "RunningFor": format!("{} ago", human_duration(seconds_since(&st.created_at))),
        "Status": status,
        "State": st.docker_status(),
        "Ports": ports(&doc["NetworkSettings"]["Ports"]),
        "Names": c.name(),
        "Labels": "",
        "Mounts": mounts.join(","),
        "Networks": doc["HostConfig"]["NetworkMode"].as_str().unwrap_or(""),
        "Size": "",
    }))
}

/// docker's PORTS cell from `NetworkSettings.Ports` (`{"80/tcp": [{"HostIp": "0.0.0.0",
/// "HostPort": "8080"}]}`): `0.0.0.0:8080->80/tcp`, and `80/tcp` for an unpublished port.
fn ports(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return String::new();
    };
    let mut out = Vec::new();
    for (port, bindings) in map {
        match bindings.as_array().filter(|b| !b.is_empty()) {
            None => out.push(port.clone()),
            Some(bs) => {
                for b in bs {
                    let ip = b["HostIp"].as_str().unwrap_or("0.0.0.0");
                    let ip = if ip.is_empty() { "0.0.0.0" } else { ip };
                    let hp = b["HostPort"].as_str().unwrap_or("");
                    out.push(format!("{ip}:{hp}->{port}"));
                }
            }
        }
    }
    out.join(", ")
}

fn keep(c: &Container, row: &Value, filters: &[Filter]) -> bool {
    // Filters of one key are alternatives; different keys must all match (docker's rule).
    let matches = |f: &Filter| match f {
        Filter::Id(p) => c.id().starts_with(p.as_str()),
        Filter::Name(n) => c.name().contains(n.as_str()),
        Filter::Status(s) => row["State"] == s.as_str(),
        Filter::Exited(code) => {
            row["State"] == "exited" && c.state().ok().and_then(|s| s.exit_code) == Some(*code)
        }
        Filter::Ancestor(a) => {
            let image = c.config().image.as_str();
            image == a || image.split(':').next() == Some(a.as_str())
        }
        Filter::Health(h) => {
            c.health()
                .map_or_else(|| "none".to_owned(), |health| health.status)
                == *h
        }
    };
    let kinds = [
        |f: &Filter| matches!(f, Filter::Id(_)),
        |f: &Filter| matches!(f, Filter::Name(_)),
        |f: &Filter| matches!(f, Filter::Status(_)),
        |f: &Filter| matches!(f, Filter::Exited(_)),
        |f: &Filter| matches!(f, Filter::Ancestor(_)),
        |f: &Filter| matches!(f, Filter::Health(_)),
    ];
    kinds.iter().all(|kind| {
        let of_kind: Vec<&Filter> = filters.iter().filter(|f| kind(f)).collect();
        of_kind.is_empty() || of_kind.iter().any(|f| matches(f))
    })
}

/// `ps` column names for `table` formats.
fn ps_header(field: &str) -> String {
    match field {
        "ID" => "CONTAINER ID",
        "Image" => "IMAGE",
        "Command" => "COMMAND",
        "CreatedAt" => "CREATED AT",
        "RunningFor" => "CREATED",
        "Status" => "STATUS",
        "State" => "STATE",
        "Ports" => "PORTS",
        "Names" => "NAMES",
        "Mounts" => "MOUNTS",
        "Networks" => "NETWORKS",
        "Labels" => "LABELS",
        "Size" => "SIZE",
        other => return other.to_uppercase(),
    }
    .to_owned()
}

/// `kiln ps`.
pub fn ps(g: &Global, o: &PsOptions) -> Result<()> {
    let filters = o
        .filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<Result<Vec<_>>>()?;
    let template = match (&o.format, o.quiet) {
        (_, true) => Template::parse("{{.ID}}")?,
        (Some(f), false) => Template::parse(f)?,
        (None, false) => Template::parse(PS_TABLE)?,
    };
    // A status filter looks at every container, as docker's does.
    let all = o.all
        || filters
            .iter()
            .any(|f| matches!(f, Filter::Status(_) | Filter::Exited(_)));
    let cs = g.host()?.containers()?;
    let mut rows = Vec::new();
    for c in cs.list(all)? {
        // A container removed meanwhile (its `--rm` shim) is not listed.
        let Ok(row) = ps_row(&c, o.no_trunc) else {
            continue;
        };
        if keep(&c, &row, &filters) {
            rows.push(row);
        }
    }
    let out = template.render_all(&rows, ps_header)?;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

/// `kiln inspect -f FORMAT`: one line per document.
pub fn inspect_format(docs: &[Value], format: &str) -> Result<()> {
    let t = Template::parse(format)?;
    let mut out = std::io::stdout().lock();
    for d in docs {
        writeln!(out, "{}", t.render(d)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_docker_s() {
        assert_eq!(
            parse_filter("name=web").unwrap(),
            Filter::Name("web".into())
        );
        assert_eq!(parse_filter("exited=3").unwrap(), Filter::Exited(3));
        assert!(
            parse_filter("status=bogus")
                .unwrap_err()
                .to_string()
                .contains("status=bogus")
        );
        assert!(
            parse_filter("nope=1")
                .unwrap_err()
                .to_string()
                .contains("'nope'")
        );
        assert!(
            parse_filter("name")
                .unwrap_err()
                .to_string()
                .contains("name=value")
        );
    }

    #[test]
    fn ports_read_as_docker_s() {
        let v = json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": null});
        assert_eq!(ports(&v), "53/udp, 127.0.0.1:8080->80/tcp");
        assert_eq!(ports(&Value::Null), "");
    }
}
