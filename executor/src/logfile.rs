//! A container's log, in docker's `json-file` format: one JSON object per line,
//! `{"log":"hello\n","stream":"stdout","time":"2026-12-03T08:00:00.123456789Z"}`, so that
//! `kiln logs` keeps stdout and stderr apart and can honour `--tail`, `--since`, `--until`
//! and `-t` without a daemon holding the history.
//!
//! A chunk of output becomes one entry per line; a line still open at the end of a chunk is
//! written as an entry without its newline (docker writes such partial lines the same way), so
//! `logs -f` shows a prompt that has no newline yet. Lines of a log written before this format
//! (plain text) read back as stdout.

use crate::Result;
use crate::containers::now;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

/// Which output stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The container's stdout (or its terminal).
    Stdout,
    /// The container's stderr (and kiln's own messages about the container).
    Stderr,
}

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    stream: LogStream,
    time: std::borrow::Cow<'a, str>,
}

/// Appends entries to a log file. Writes go straight to the file (one `write` per entry), so
/// a concurrent reader never sees half an entry line except at the very end.
pub struct LogWriter {
    file: fs_err::File,
}

impl LogWriter {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> Result<LogWriter> {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogWriter { file })
    }

    /// Appends `data` from `stream`, one entry per line (invalid UTF-8 replaced, as docker does).
    pub fn write(&mut self, stream: LogStream, data: &[u8]) -> Result<()> {
        let time = now();
        let mut out = Vec::with_capacity(data.len() + 64);
        for line in data.split_inclusive(|&b| b == b'\n') {
            let entry = Entry {
                log: String::from_utf8_lossy(line),
                stream,
                time: std::borrow::Cow::Borrowed(&time),
            };
            serde_json::to_writer(&mut out, &entry).map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        self.file.write_all(&out)?;
        Ok(())
    }
}

/// What `kiln logs` shows.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep reading until the container has exited.
    pub follow: bool,
    /// Only the last N lines (of both streams together), as `--tail N`; `None` for all.
    pub tail: Option<usize>,
    /// Only entries at or after this time (`--since`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries before this time (`--until`).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Prefix each line with its RFC 3339 time (`-t`).
    pub timestamps: bool,
}

/// One decoded entry.
struct Line {
    stream: LogStream,
    time: Option<chrono::DateTime<chrono::Utc>>,
    time_text: String,
    log: String,
}

fn decode(raw: &str) -> Line {
    match serde_json::from_str::<Entry<'_>>(raw.trim_end_matches('\n')) {
        Ok(e) => Line {
            stream: e.stream,
            time: chrono::DateTime::parse_from_rfc3339(&e.time)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
            time_text: e.time.into_owned(),
            log: e.log.into_owned(),
        },
        // A plain-text log of an older kiln.
        Err(_) => Line {
            stream: LogStream::Stdout,
            time: None,
            time_text: String::new(),
            log: raw.to_owned(),
        },
    }
}

/// Reads a log incrementally, sending whole entries to `stdout` and `stderr` (both to `stdout`
/// when there is no `stderr`) as the options say; an entry still being written is left for the
/// next [`drain`](LogReader::drain).
pub struct LogReader<'a> {
    opts: &'a LogOptions,
    offset: u64,
    /// Whether a line ended without its newline: the next entry continues it, so `-t` does
    /// not prefix it again.
    open_line: [bool; 2],
}

impl<'a> LogReader<'a> {
    /// A reader at the start of the log.
    pub fn new(opts: &'a LogOptions) -> LogReader<'a> {
        LogReader {
            opts,
            offset: 0,
            open_line: [false; 2],
        }
    }

    /// A reader from byte `offset` of the log on (where an earlier [`std::fs::metadata`] saw
    /// its end: `attach` shows what comes next).
    pub fn at(opts: &'a LogOptions, offset: u64) -> LogReader<'a> {
        LogReader {
            offset,
            ..LogReader::new(opts)
        }
    }

    /// What `line` shows, if the options keep it: whether it goes to stderr, and its text.
    fn render(&mut self, line: &Line) -> Option<(bool, String)> {
        let keep = self
            .opts
            .since
            .is_none_or(|s| line.time.is_none_or(|t| t >= s))
            && self
                .opts
                .until
                .is_none_or(|u| line.time.is_none_or(|t| t < u));
        if !keep {
            return None;
        }
        let slot = (line.stream == LogStream::Stderr) as usize;
        let mut text = String::new();
        if self.opts.timestamps && !self.open_line[slot] && !line.time_text.is_empty() {
            text.push_str(&line.time_text);
            text.push(' ');
        }
        text.push_str(&line.log);
        self.open_line[slot] = !line.log.ends_with('\n');
        Some((slot == 1, text))
    }

    fn emit(
        &mut self,
        line: &Line,
        stdout: &mut dyn Write,
        stderr: &mut Option<&mut dyn Write>,
    ) -> std::io::Result<()> {
        let Some((to_err, text)) = self.render(line) else {
            return Ok(());
        };
        match stderr {
            Some(err) if to_err => err.write_all(text.as_bytes()),
            _ => stdout.write_all(text.as_bytes()),
        }
    }

    /// Reads what the log holds now; on the first call with `tail`, only the last lines.
    pub fn drain(
        &mut self,
        path: &Path,
        stdout: &mut dyn Write,
        stderr: &mut Option<&mut dyn Write>,
    ) -> Result<()> {
        let Ok(mut file) = fs_err::File::open(path) else {
            return Ok(());
        };
        let first = self.offset == 0;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(&mut file);
        let mut raw = Vec::new();
        let mut lines: Vec<Line> = Vec::new();
        loop {
            raw.clear();
            let n = reader.read_until(b'\n', &mut raw)?;
            if n == 0 || !raw.ends_with(b"\n") {
                break;
            }
            self.offset += n as u64;
            let line = decode(&String::from_utf8_lossy(&raw));
            if first && self.opts.tail.is_some() {
                lines.push(line);
            } else {
                self.emit(&line, stdout, stderr)?;
            }
        }
        if let (true, Some(n)) = (first, self.opts.tail) {
            // docker counts lines: an entry that continues an open line is part of it.
            let mut starts: Vec<usize> = Vec::new();
            let mut open = [false; 2];
            for (i, l) in lines.iter().enumerate() {
                let slot = (l.stream == LogStream::Stderr) as usize;
                if !open[slot] {
                    starts.push(i);
                }
                open[slot] = !l.log.ends_with('\n');
            }
            let from = if n == 0 {
                lines.len()
            } else if n >= starts.len() {
                0
            } else {
                starts[starts.len() - n]
            };
            for l in &lines[from..] {
                self.emit(l, stdout, stderr)?;
            }
        }
        stdout.flush()?;
        if let Some(err) = stderr {
            err.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path, opts: &LogOptions) -> (String, String) {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        LogReader::new(opts)
            .drain(path, &mut o, &mut Some(&mut e))
            .unwrap();
        (String::from_utf8(o).unwrap(), String::from_utf8(e).unwrap())
    }

    #[test]
    fn streams_stay_apart_and_tail_counts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(LogStream::Stdout, b"one\ntwo\n").unwrap();
        w.write(LogStream::Stderr, b"oops\n").unwrap();
        w.write(LogStream::Stdout, b"thr").unwrap();
        w.write(LogStream::Stdout, b"ee\n\xff\n").unwrap();
        let (o, e) = read(&path, &LogOptions::default());
        assert_eq!(o, "one\ntwo\nthree\n\u{fffd}\n");
        assert_eq!(e, "oops\n");
        let (o, e) = read(
            &path,
            &LogOptions {
                tail: Some(2),
                ..Default::default()
            },
        );
        assert_eq!((o.as_str(), e.as_str()), ("three\n\u{fffd}\n", ""));
        let (o, _) = read(
            &path,
            &LogOptions {
                timestamps: true,
                tail: Some(2),
                ..Default::default()
            },
        );
        let first = o.lines().next().unwrap();
        let (time, text) = first.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{o}");
        assert_eq!(text, "three");
        let future = chrono::Utc::now() + chrono::Duration::hours(1);
        let (o, e) = read(
            &path,
            &LogOptions {
                since: Some(future),
                ..Default::default()
            },
        );
        assert_eq!((o.as_str(), e.as_str()), ("", ""));
        let (o, _) = read(
            &path,
            &LogOptions {
                until: Some(future),
                ..Default::default()
            },
        );
        assert!(o.starts_with("one\n"));
    }

    #[test]
    fn a_plain_text_log_reads_as_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs_err::write(&path, "old\nlog\n").unwrap();
        assert_eq!(
            read(&path, &LogOptions::default()),
            ("old\nlog\n".to_owned(), String::new())
        );
    }
}
