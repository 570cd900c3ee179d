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

/// A vertex of the build that the solver does not run (reading the Dockerfile, a base image's
/// metadata, the export), shown as BuildKit shows its own: a name, status lines, a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Internal {
    pub name: String,
    pub lines: Vec<String>,
    pub duration_ms: u64,
}

impl Internal {
    /// Its events, under a vertex id made from its name.
    fn events(&self) -> Vec<Event> {
        let d = kiln_oci::sha256(self.name.as_bytes());
        let mut out = vec![Event::now(
            d.clone(),
            EventKind::Started {
                name: self.name.clone(),
            },
        )];
        for l in &self.lines {
            out.push(Event::now(
                d.clone(),
                EventKind::Status { message: l.clone() },
            ));
        }
        out.push(Event::now(
            d,
            EventKind::Completed {
                duration_ms: self.duration_ms,
            },
        ));
        out
    }
}

/// Consumes events until the channel closes, after showing `prelude` (the vertices before the
/// solve). Returns what was seen (for the final line and [`epilogue`]).
pub async fn render(
    mode: ProgressMode,
    prelude: Vec<Internal>,
    mut rx: UnboundedReceiver<Event>,
) -> Summary {
    let mut summary = Summary::default();
    let mut plain = Plain::default();
    let mut tty = (mode == ProgressMode::Tty).then(Tty::new);
    let started = Instant::now();
    let before: Vec<Event> = prelude.iter().flat_map(Internal::events).collect();
    let mut before = before.into_iter();
    loop {
        let (ev, internal) = match before.next() {
            Some(ev) => (ev, true),
            None => match rx.recv().await {
                Some(ev) => (ev, false),
                None => break,
            },
        };
        if !internal {
            summary.count(&ev);
        }
        match mode {
            ProgressMode::Plain => plain.event(&ev, &mut std::io::stderr().lock()),
            ProgressMode::Rawjson => {
                if let Ok(line) = serde_json::to_string(&ev) {
                    eprintln!("{line}");
                }
            }
            ProgressMode::Tty => {
                if let Some(t) = tty.as_mut() {
                    t.event(&ev, started);
                }
            }
            ProgressMode::Quiet | ProgressMode::Auto => {}
        }
    }
    summary.vertices = plain.next;
    summary.elapsed = started.elapsed();
    if let Some(t) = tty {
        summary.shown = t.total;
        summary.finished = t.done;
        t.finish();
    }
    summary
}

/// After the solve: the vertices that follow it (the export), in the same numbering, and for
/// the live view its `FINISHED` header.
pub fn epilogue(mode: ProgressMode, summary: &Summary, after: &[Internal]) {
    match mode {
        ProgressMode::Plain => {
            let mut plain = Plain {
                next: summary.vertices,
                ..Plain::default()
            };
            let mut out = std::io::stderr().lock();
            if summary.vertices > 0 {
                let _ = writeln!(out);
            }
            for ev in after.iter().flat_map(Internal::events) {
                plain.event(&ev, &mut out);
            }
        }
        ProgressMode::Rawjson => {
            for ev in after.iter().flat_map(Internal::events) {
                if let Ok(line) = serde_json::to_string(&ev) {
                    eprintln!("{line}");
                }
            }
        }
        ProgressMode::Tty => {
            let total = summary.shown + after.len();
            let done = summary.finished + after.len();
            let elapsed = summary.elapsed.as_secs_f64()
                + after
                    .iter()
                    .map(|a| a.duration_ms as f64 / 1000.0)
                    .sum::<f64>();
            let mut out = std::io::stderr().lock();
            for a in after {
                let _ = writeln!(out, "{}", tty_done_line(&a.name, a.duration_ms));
                for l in &a.lines {
                    let _ = writeln!(out, " => => {l}");
                }
            }
            let _ = writeln!(out, "{}", tty_header(elapsed, done, total, true));
        }
        ProgressMode::Quiet | ProgressMode::Auto => {}
    }
}

/// The live view's header: `[+] Building 6.3s (12/12) FINISHED`.
fn tty_header(elapsed_s: f64, done: usize, total: usize, finished: bool) -> String {
    let state = if finished { " FINISHED" } else { "" };
    format!("[+] Building {elapsed_s:.1}s ({done}/{total}){state}")
}

/// A finished step of the live view: ` => [2/3] RUN make    1.2s`.
fn tty_done_line(name: &str, duration_ms: u64) -> String {
    format!(" => {name} {:.1}s", duration_ms as f64 / 1000.0)
}

/// Counts of what happened.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Steps that ran (internal vertices, such as loading the build context, left out).
    pub executed: usize,
    pub cached: usize,
    /// Vertices the plain view numbered.
    pub vertices: usize,
    /// Vertices the live view showed, and how many of them finished.
    pub shown: usize,
    pub finished: usize,
    /// How long the solve took.
    pub elapsed: Duration,
    /// Vertices whose name says they are internal (`[internal] …`).
    internal: std::collections::HashSet<Digest>,
}

impl Summary {
    fn count(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Started { name } if name.starts_with("[internal]") => {
                self.internal.insert(ev.vertex.clone());
            }
            EventKind::Completed { .. } if !self.internal.contains(&ev.vertex) => {
                self.executed += 1
            }
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

/// The live view, as BuildKit's: a `[+] Building 6.3s (5/12)` header, one line per running
/// step with its last output line (cut to the terminal's width, never wrapped), and finished
/// steps as ` => [2/3] RUN make 1.2s` / ` => CACHED [1/3] FROM busybox`.
struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    bars: HashMap<Digest, (ProgressBar, String)>,
    style: ProgressStyle,
    /// Vertices shown, and how many of them finished.
    total: usize,
    done: usize,
    seen: std::collections::HashSet<Digest>,
    /// The terminal's width: printed lines are cut to it, never wrapped.
    width: Option<usize>,
    /// Each running step's log box: its bar, its last lines, a line not ended yet.
    boxes: HashMap<Digest, LogBox>,
}

/// The last lines of a running step, under it (` => => # line`), as BuildKit's live view.
struct LogBox {
    bar: ProgressBar,
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

/// Lines a step's log box shows.
const LOG_BOX_LINES: usize = 6;

impl LogBox {
    /// Adds output; returns the box's text (each line cut to `width`).
    fn push(&mut self, data: &[u8], width: Option<usize>) -> String {
        self.partial.extend_from_slice(data);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            // A line redrawn with `\r` (a progress bar) shows as its last drawing.
            let text = text
                .trim_end_matches('\r')
                .rsplit('\r')
                .next()
                .unwrap_or_default()
                .to_owned();
            self.lines.push_back(text);
            if self.lines.len() > LOG_BOX_LINES {
                self.lines.pop_front();
            }
        }
        let mut shown: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            shown.push(String::from_utf8_lossy(&self.partial).into_owned());
            if shown.len() > LOG_BOX_LINES {
                shown.remove(0);
            }
        }
        shown
            .iter()
            .map(|l| clip_line(&format!(" => => # {l}"), width))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `text` cut to `width` characters (the last one `…` when cut).
fn clip_line(text: &str, width: Option<usize>) -> String {
    match width {
        Some(w) if w > 1 && text.chars().count() > w => {
            let mut out: String = text.chars().take(w - 1).collect();
            out.push('…');
            out
        }
        _ => text.to_owned(),
    }
}

impl Tty {
    fn new() -> Tty {
        let style = ProgressStyle::with_template(" => {prefix} {elapsed:>4} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let multi = MultiProgress::new();
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.set_message(tty_header(0.0, 0, 0, false));
        Tty {
            multi,
            header,
            bars: HashMap::new(),
            style,
            total: 0,
            done: 0,
            seen: std::collections::HashSet::new(),
            width: rustix::termios::tcgetwinsize(std::io::stderr())
                .ok()
                .map(|w| usize::from(w.ws_col))
                .filter(|w| *w > 0),
            boxes: HashMap::new(),
        }
    }

    fn line(&self, text: String) {
        let _ = self.multi.println(clip_line(&text, self.width));
    }

    fn event(&mut self, ev: &Event, started: Instant) {
        let named = match &ev.kind {
            EventKind::Started { name } | EventKind::Cached { name } => !name.is_empty(),
            _ => false,
        };
        if named && self.seen.insert(ev.vertex.clone()) {
            self.total += 1;
        }
        if matches!(
            ev.kind,
            EventKind::Completed { .. } | EventKind::Failed { .. } | EventKind::Cancelled
        ) && let Some(log) = self.boxes.remove(&ev.vertex)
        {
            log.bar.finish_and_clear();
        }
        match &ev.kind {
            EventKind::Started { name } if !name.is_empty() => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(self.style.clone());
                // The name is cut to leave room for the time: a bar line never wraps.
                bar.set_prefix(clip_line(name, self.width.map(|w| w.saturating_sub(12))));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(ev.vertex.clone(), (bar, name.clone()));
            }
            EventKind::Cached { name } if !name.is_empty() => {
                self.done += 1;
                self.line(format!(" => CACHED {name}"));
            }
            EventKind::Log { data, .. } => {
                if let Some((step, _)) = self.bars.get(&ev.vertex) {
                    let width = self.width;
                    let log = self.boxes.entry(ev.vertex.clone()).or_insert_with(|| {
                        let bar = self.multi.insert_after(step, ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("{msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        LogBox {
                            bar,
                            lines: Default::default(),
                            partial: Vec::new(),
                        }
                    });
                    let text = log.push(data, width);
                    log.bar.set_message(text);
                }
            }
            EventKind::Status { message } => {
                if let Some((bar, _)) = self.bars.get(&ev.vertex) {
                    bar.set_message(format!("=> {message}"));
                }
            }
            EventKind::Completed { duration_ms } => {
                if let Some((bar, name)) = self.bars.remove(&ev.vertex) {
                    bar.finish_and_clear();
                    self.done += 1;
                    self.line(tty_done_line(&name, *duration_ms));
                }
            }
            EventKind::Failed { .. } => {
                if let Some((bar, name)) = self.bars.remove(&ev.vertex) {
                    bar.finish_and_clear();
                    self.done += 1;
                    // The error and the step's last lines follow once, in the failure report.
                    self.line(format!(" => ERROR {name}"));
                }
            }
            EventKind::Cancelled => {
                if let Some((bar, name)) = self.bars.remove(&ev.vertex) {
                    bar.finish_and_clear();
                    self.line(format!(" => CANCELED {name}"));
                }
            }
            _ => {}
        }
        self.header.set_message(tty_header(
            started.elapsed().as_secs_f64(),
            self.done,
            self.total,
            false,
        ));
    }

    /// Clears the live part; what was printed stays, and the output ends with a newline so
    /// the next line starts on its own.
    fn finish(self) {
        for (_, log) in self.boxes {
            log.bar.finish_and_clear();
        }
        for (_, (bar, _)) in self.bars {
            bar.finish_and_clear();
        }
        self.header.finish_and_clear();
        let _ = self.multi.clear();
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_box_keeps_the_last_lines_cut_to_the_width() {
        let mut b = LogBox {
            bar: ProgressBar::hidden(),
            lines: Default::default(),
            partial: Vec::new(),
        };
        let text = b.push(b"1\n2\n3\n4\n5\n6\n7\nhalf", Some(20));
        assert_eq!(
            text,
            " => => # 3\n => => # 4\n => => # 5\n => => # 6\n => => # 7\n => => # half"
        );
        let text = b.push(b"-way and much longer\r\n", Some(12));
        assert!(text.ends_with(" => => # ha…"), "{text}");
        assert_eq!(text.lines().count(), LOG_BOX_LINES);
    }

    #[test]
    fn tty_lines_are_cut_not_wrapped() {
        assert_eq!(clip_line("abcdef", Some(4)), "abc…");
        assert_eq!(clip_line("abcd", Some(4)), "abcd");
        assert_eq!(clip_line("abcdef", None), "abcdef");
        assert_eq!(
            tty_header(6.31, 12, 12, true),
            "[+] Building 6.3s (12/12) FINISHED"
        );
        assert_eq!(tty_header(0.04, 1, 3, false), "[+] Building 0.0s (1/3)");
        assert_eq!(
            tty_done_line("[2/3] RUN make", 1200),
            " => [2/3] RUN make 1.2s"
        );
    }

    #[test]
    fn internal_vertices_render_as_buildkit_does() {
        let v = Internal {
            name: "[internal] load build definition from Dockerfile".into(),
            lines: vec!["transferring dockerfile: 57B done".into()],
            duration_ms: 0,
        };
        let mut p = Plain::default();
        let mut out = Vec::new();
        for e in v.events() {
            p.event(&e, &mut out);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#1 [internal] load build definition from Dockerfile\n\
             #1 transferring dockerfile: 57B done\n\
             #1 DONE 0.0s\n"
        );
        // Internal vertices of the solver (the build context) are not steps that ran.
        let mut s = Summary::default();
        for e in v.events() {
            s.count(&e);
        }
        assert_eq!(s.executed, 0);
    }
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
