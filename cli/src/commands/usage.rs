//! `top` and `stats`: a container's processes and resource usage, from its cgroup, in
//! docker's columns and units.

use crate::cli::{StatsArgs, TopArgs};
use crate::commands::Global;
use crate::commands::container::get;
use crate::format::Template;
use anyhow::{Result, bail};
use kiln_solver::containers::{Container, Usage};
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// docker's default `stats` table.
const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// `kiln top NAME [ps OPTIONS]`: the host's `ps` (`-ef` by default) narrowed to the
/// container's processes, as docker's daemon does.
pub fn top(g: &Global, args: &TopArgs) -> Result<()> {
    let cs = g.host()?.containers()?;
    let c = get(&cs, &args.container)?;
    let state = c.state()?;
    if state.status.as_str() != "running" {
        bail!("container {} is not running", c.id());
    }
    let pids = c.processes();
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_owned()]
    } else {
        args.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running ps: {e}"))?;
    if !out.status.success() {
        bail!("ps: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let (titles, rows) = parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)?;
    let mut table = vec![titles];
    table.extend(rows);
    std::io::stdout()
        .lock()
        .write_all(tabulate(&table).as_bytes())?;
    Ok(())
}

/// docker's `parsePSOutput`: the header's titles, and the rows whose PID column is one of
/// `pids` (the last column takes the rest of the line).
fn parse_ps(output: &str, pids: &[i32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let Some(pid_col) = titles.iter().position(|t| t == "PID") else {
        bail!("Couldn't find PID field in ps output");
    };
    let mut rows = Vec::new();
    for line in lines {
        let mut fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if fields.is_empty() {
            continue;
        }
        let Some(pid) = fields.get(pid_col).and_then(|p| p.parse::<i32>().ok()) else {
            bail!(
                "Unexpected pid '{}'",
                fields.get(pid_col).cloned().unwrap_or_default()
            );
        };
        if !pids.contains(&pid) {
            continue;
        }
        if fields.len() > titles.len() {
            let rest = fields.split_off(titles.len() - 1).join(" ");
            fields.push(rest);
        }
        rows.push(fields);
    }
    Ok((titles, rows))
}

/// docker's `tabwriter.NewWriter(out, 20, 1, 3, ' ', 0)`: every column but the last at
/// least 20 wide, 3 spaces of padding.
fn tabulate(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 3).max(20);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// Go's `%.{prec}g` for the magnitudes sizes have (no exponent form needed below 1e21).
fn go_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let exp = v.abs().log10().floor() as i64;
    let decimals = usize::try_from(i64::try_from(prec).unwrap_or(3) - 1 - exp).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// docker's `units.BytesSize`: binary units, 4 significant digits (`540KiB`, `1.953GiB`).
pub fn bytes_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", go_g(v, 4), units[i])
}

/// docker's `units.HumanSizeWithPrecision(n, 3)`: decimal units (`0B`, `1.23kB`, `656kB`).
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g(v, 3), units[i])
}

/// The host's total CPU time (all CPUs) in nanoseconds, and how many CPUs are online.
fn system_cpu() -> (u64, u64) {
    let text = fs_err::read_to_string("/proc/stat").unwrap_or_default();
    let mut total = 0u64;
    let mut cpus = 0u64;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            // In USER_HZ ticks (100 a second on Linux).
            total = rest
                .split_whitespace()
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>()
                * 10_000_000;
        } else if line.starts_with("cpu") {
            cpus += 1;
        }
    }
    (total, cpus.max(1))
}

fn host_memory() -> u64 {
    let text = fs_err::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// One `stats` row from two samples of the container's counters and the host's CPU time.
fn stats_row(c: &Container, before: (Usage, u64), after: (Usage, u64), cpus: u64) -> Value {
    let (u0, sys0) = before;
    let (u, sys1) = after;
    let cpu_delta = u.cpu_ns.saturating_sub(u0.cpu_ns) as f64;
    let sys_delta = sys1.saturating_sub(sys0) as f64;
    let cpu = if sys_delta > 0.0 {
        cpu_delta / sys_delta * cpus as f64 * 100.0
    } else {
        0.0
    };
    let limit = u.memory_limit.unwrap_or_else(host_memory);
    let mem_perc = if limit > 0 {
        u.memory as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let (rx, tx) = c.net_io();
    json!({
        "Container": c.id()[..12],
        "ID": c.id()[..12],
        "Name": c.name(),
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", bytes_size(u.memory), bytes_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", human_size(rx), human_size(tx)),
        "BlockIO": format!("{} / {}", human_size(u.block_read), human_size(u.block_write)),
        "PIDs": u.pids.to_string(),
    })
}

fn stats_header(field: &str) -> String {
    match field {
        "ID" | "Container" => "CONTAINER ID",
        "Name" => "NAME",
        "CPUPerc" => "CPU %",
        "MemUsage" => "MEM USAGE / LIMIT",
        "MemPerc" => "MEM %",
        "NetIO" => "NET I/O",
        "BlockIO" => "BLOCK I/O",
        "PIDs" => "PIDS",
        other => return other.to_uppercase(),
    }
    .to_owned()
}

/// `kiln stats`: CPU % over a short interval, memory, network and block I/O, pids; with
/// `--no-stream` once, else refreshed every second.
pub fn stats(g: &Global, args: &StatsArgs) -> Result<()> {
    let cs = g.host()?.containers()?;
    let containers: Vec<Container> = if args.containers.is_empty() {
        cs.list(args.all)?
    } else {
        args.containers
            .iter()
            .map(|n| get(&cs, n))
            .collect::<Result<_>>()?
    };
    let template = Template::parse(args.format.as_deref().unwrap_or(STATS_TABLE))?;
    let (_, cpus) = system_cpu();
    let sample = |cs: &[Container]| -> Vec<(Usage, u64)> {
        let (sys, _) = system_cpu();
        cs.iter().map(|c| (c.usage(), sys)).collect()
    };
    let mut before = sample(&containers);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let after = sample(&containers);
        let rows: Vec<Value> = containers
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(c, (b, a))| stats_row(c, *b, *a, cpus))
            .collect();
        let text = template.render_all(&rows, stats_header)?;
        let mut out = std::io::stdout().lock();
        if !args.no_stream && out.is_terminal() {
            // Clear the screen and go home, as docker's live view does.
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if args.no_stream {
            return Ok(());
        }
        before = after;
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_docker_s_units() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(540 * 1024), "540KiB");
        assert_eq!(bytes_size(64 << 20), "64MiB");
        assert_eq!(bytes_size(2_097_152_000), "1.953GiB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(656_000), "656kB");
    }

    #[test]
    fn ps_output_is_narrowed_to_the_container_s_pids() {
        let out = "UID PID PPID C STIME TTY TIME CMD\n\
                   root 1 0 0 10:00 ? 00:00:01 /sbin/init\n\
                   root 42 1 0 10:01 ? 00:00:00 sleep 100 --long arg\n";
        let (titles, rows) = parse_ps(out, &[42]).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(
            rows,
            [vec![
                "root",
                "42",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 100 --long arg"
            ]]
        );
        assert!(parse_ps("USER COMMAND\nroot x\n", &[]).is_err());
    }
}
