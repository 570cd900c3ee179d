//! Renders the solver's progress events for people: a live view on a terminal, BuildKit's plain
//! lines in CI logs (`#5 [2/6] RUN make` … `#5 DONE 1.2s`), or one JSON event per line. Step
//! output is never clipped (the live view shows the last lines; the whole log stays on disk).

use crate::cli::ProgressMode;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_oci::Digest;
use kiln_solver::engine::{Event, EventKind};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Which renderer `auto` picks: the live view on a terminal, plain lines otherwise.
pub fn resolve_mode(mode: ProgressMode) -> ProgressMode {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    }
}

/// Consumes events until the channel closes. Returns what was seen (for the final line).
pub async fn render(mode: ProgressMode, mut rx: UnboundedReceiver<Event>) -> Summary {
    let mut summary = Summary::default();
    let mut plain = Plain::default();
    let mut tty = (mode == ProgressMode::Tty).then(Tty::new);
    while let Some(ev) = rx.recv().await {
        summary.count(&ev);
        match mode {
            ProgressMode::Plain => plain.event(&ev, &mut std::io::stderr().lock()),
            ProgressMode::Rawjson => {
                if let Ok(line) = serde_json::to_string(&ev) {
                    eprintln!("{line}");
                }
            }
            ProgressMode::Tty => {
                if let Some(t) = tty.as_mut() {
                    t.event(&ev);
                }
            }
            ProgressMode::Quiet | ProgressMode::Auto => {}
        }
    }
    if let Some(t) = tty {
        t.finish();
    }
    summary
}

/// Counts of what happened.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub executed: usize,
    pub cached: usize,
}

impl Summary {
    fn count(&mut self, ev: &Event) {
        match ev.kind {
            EventKind::Completed { .. } => self.executed += 1,
            EventKind::Cached { .. } => self.cached += 1,
            _ => {}
        }
    }
}

/// BuildKit's plain progress: vertices numbered in order of first appearance; a header line
/// again whenever the output switches to another vertex.
#[derive(Default)]
pub struct Plain {
    numbers: HashMap<Digest, (usize, String, Instant)>,
    next: usize,
    last: Option<Digest>,
    /// A log line that has not ended yet, per vertex.
    partial: HashMap<Digest, Vec<u8>>,
}

impl Plain {
    /// Writes the lines for one event.
    pub fn event(&mut self, ev: &Event, out: &mut dyn Write) {
        let _ = self.try_event(ev, out);
    }

    fn try_event(&mut self, ev: &Event, out: &mut dyn Write) -> std::io::Result<()> {
        let name = match &ev.kind {
            EventKind::Started { name } | EventKind::Cached { name } => Some(name.clone()),
            _ => None,
        };
        if let Some(name) = &name
            && name.is_empty()
        {
            return Ok(());
        }
        if !self.numbers.contains_key(&ev.vertex) {
            let Some(name) = name else {
                return Ok(());
            };
            self.next += 1;
            self.numbers
                .insert(ev.vertex.clone(), (self.next, name, Instant::now()));
        }
        let (n, name, started) = self.numbers[&ev.vertex].clone();
        if self.last.as_ref() != Some(&ev.vertex) {
            if self.last.is_some() {
                writeln!(out)?;
            }
            writeln!(out, "#{n} {name}")?;
            self.last = Some(ev.vertex.clone());
        }
        match &ev.kind {
            EventKind::Started { .. } => {}
            EventKind::Cached { .. } => writeln!(out, "#{n} CACHED")?,
            EventKind::Log { data, .. } => {
                let buf = self.partial.entry(ev.vertex.clone()).or_default();
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                    let t = started.elapsed().as_secs_f64();
                    writeln!(out, "#{n} {t:.3} {}", text.trim_end_matches('\r'))?;
                }
            }
            EventKind::Status { message } => writeln!(out, "#{n} {message}")?,
            EventKind::Completed { duration_ms } => {
                self.flush_partial(&ev.vertex, n, started, out)?;
                writeln!(out, "#{n} DONE {:.1}s", *duration_ms as f64 / 1000.0)?;
            }
            EventKind::Failed { error } => {
                self.flush_partial(&ev.vertex, n, started, out)?;
                writeln!(out, "#{n} ERROR: {error}")?;
            }
            EventKind::Cancelled => {
                self.flush_partial(&ev.vertex, n, started, out)?;
                writeln!(out, "#{n} CANCELED")?;
            }
        }
        Ok(())
    }

    fn flush_partial(
        &mut self,
        d: &Digest,
        n: usize,
        started: Instant,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        if let Some(rest) = self.partial.remove(d)
            && !rest.is_empty()
        {
            let t = started.elapsed().as_secs_f64();
            writeln!(out, "#{n} {t:.3} {}", String::from_utf8_lossy(&rest))?;
        }
        Ok(())
    }
}

/// The live view: one line per running step with its last output line; finished steps stay as
/// one line each with their state and duration.
struct Tty {
    multi: MultiProgress,
    bars: HashMap<Digest, (ProgressBar, String)>,
    style: ProgressStyle,
}

impl Tty {
    fn new() -> Tty {
        let style = ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        Tty {
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            style,
        }
    }

    fn event(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Started { name } if !name.is_empty() => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(self.style.clone());
                bar.set_prefix(name.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(ev.vertex.clone(), (bar, name.clone()));
            }
            EventKind::Cached { name } if !name.is_empty() => {
                let _ = self.multi.println(format!("  CACHED {name}"));
            }
            EventKind::Log { data, .. } => {
                if let Some((bar, _)) = self.bars.get(&ev.vertex) {
                    let text = String::from_utf8_lossy(data);
                    if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                        bar.set_message(last.to_string());
                    }
                }
            }
            EventKind::Completed { duration_ms } => {
                if let Some((bar, name)) = self.bars.remove(&ev.vertex) {
                    bar.finish_and_clear();
                    let _ = self.multi.println(format!(
                        "  DONE {:>5.1}s {name}",
                        *duration_ms as f64 / 1000.0
                    ));
                }
            }
            EventKind::Failed { error } => {
                if let Some((bar, name)) = self.bars.remove(&ev.vertex) {
                    bar.finish_and_clear();
                    let _ = self.multi.println(format!("  ERROR {name}: {error}"));
                }
            }
            EventKind::Cancelled => {
                if let Some((bar, name)) = self.bars.remove(&ev.vertex) {
                    bar.finish_and_clear();
                    let _ = self.multi.println(format!("  CANCELED {name}"));
                }
            }
            _ => {}
        }
    }

    fn finish(self) {
        for (_, (bar, _)) in self.bars {
            bar.finish_and_clear();
        }
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::sha256;
    use kiln_solver::engine::LogStream;

    fn ev(v: &Digest, kind: EventKind) -> Event {
        Event {
            vertex: v.clone(),
            timestamp_ms: 0,
            kind,
        }
    }

    #[test]
    fn plain_output_has_buildkit_shape() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        let mut p = Plain::default();
        let mut out = Vec::new();
        for e in [
            ev(
                &a,
                EventKind::Cached {
                    name: "[1/3] FROM busybox".into(),
                },
            ),
            ev(
                &b,
                EventKind::Started {
                    name: "[2/3] RUN make".into(),
                },
            ),
            ev(
                &b,
                EventKind::Log {
                    stream: LogStream::Stdout,
                    data: b"hello\nwor".to_vec(),
                },
            ),
            ev(
                &b,
                EventKind::Log {
                    stream: LogStream::Stdout,
                    data: b"ld\n".to_vec(),
                },
            ),
            ev(&b, EventKind::Completed { duration_ms: 1200 }),
        ] {
            p.event(&e, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#1 [1/3] FROM busybox");
        assert_eq!(lines[1], "#1 CACHED");
        assert_eq!(lines[2], "");
        assert_eq!(lines[3], "#2 [2/3] RUN make");
        assert!(
            lines[4].starts_with("#2 0.") && lines[4].ends_with(" hello"),
            "{text}"
        );
        assert!(lines[5].ends_with(" world"), "{text}");
        assert_eq!(lines[6], "#2 DONE 1.2s");
    }
}
