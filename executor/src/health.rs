//! Health checks (`HEALTHCHECK`, `--health-*`): while a container runs, whoever supervises it
//! (the shim of a detached container, the `kiln` process of a foreground one) runs the check
//! in it every interval and records docker's `State.Health` in `<container>/health.json`,
//! which `ps` (`Up 3 seconds (healthy)`) and `inspect` read.
//!
//! docker's rules: the first check runs one interval after the start (`--health-start-interval`
//! during the start period when set); a check passes with exit code 0; a failure during the
//! start period does not count, but a pass there makes the container healthy; `retries`
//! consecutive failures make it unhealthy; a check that outlives its timeout is killed and
//! fails. The last five results are kept, each output cut at 4 KiB.

use crate::containers::now;
use crate::containers::{Container, Status};
use crate::runtime::{Output, OutputChunk};
use crate::{ExecOptions, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in `Log`, and the output kept of each.
const KEEP_RESULTS: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// A container's health check, in docker's `Config.Healthcheck` form (durations in
/// nanoseconds, 0 for the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD", arg...]`, `["CMD-SHELL", script]`, or `["NONE"]` (disabled).
    #[serde(default)]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default)]
    pub interval: i64,
    /// Time a check may take.
    #[serde(default)]
    pub timeout: i64,
    /// Grace period after the start during which failures do not count.
    #[serde(default)]
    pub start_period: i64,
    /// Time between checks during the start period.
    #[serde(default)]
    pub start_interval: i64,
    /// Consecutive failures that make the container unhealthy.
    #[serde(default)]
    pub retries: i64,
}

fn nanos(n: i64, default: Duration) -> Duration {
    if n > 0 {
        Duration::from_nanos(n as u64)
    } else {
        default
    }
}

impl HealthConfig {
    /// The command to run in the container, or `None` when the check is disabled or empty.
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            // docker joins the words of a CMD-SHELL another tool split (buildah's
            // `config --healthcheck 'CMD-SHELL a b'` stores ["CMD-SHELL", "a", "b"]).
            Some((kind, words)) if kind == "CMD-SHELL" && !words.is_empty() => {
                Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), words.join(" ")])
            }
            _ => None,
        }
    }
}

/// docker's `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failures counted so far.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthResult>,
}

/// One check's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// RFC 3339 start.
    pub start: String,
    /// RFC 3339 end.
    pub end: String,
    /// The check's exit code (-1 when it could not run or timed out).
    pub exit_code: i32,
    /// Its output (stdout and stderr), at most 4 KiB.
    pub output: String,
}

impl Health {
    /// Folds one result in: `in_start_period` failures are not counted.
    fn record(&mut self, result: HealthResult, retries: u32, in_start_period: bool) {
        if result.exit_code == 0 {
            self.status = "healthy".to_owned();
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".to_owned();
            }
        }
        self.log.push(result);
        if self.log.len() > KEEP_RESULTS {
            let extra = self.log.len() - KEEP_RESULTS;
            self.log.drain(..extra);
        }
    }
}

impl Container {
    fn health_path(&self) -> std::path::PathBuf {
        self.dir().join("health.json")
    }

    /// The recorded health, when the container has a health check and has started.
    pub fn health(&self) -> Option<Health> {
        self.config().healthcheck.as_ref()?.command()?;
        let data = fs_err::read(self.health_path()).ok()?;
        serde_json::from_slice(&data).ok()
    }

    fn write_health(&self, health: &Health) -> Result<()> {
        let data = serde_json::to_vec_pretty(health).map_err(|source| crate::Error::Json {
            path: self.health_path(),
            source,
        })?;
        crate::bundle::write_atomic(&self.health_path(), &data)
    }

    /// Runs one check: its exit code and output.
    async fn run_check(&self, command: &[String], timeout: Duration) -> HealthResult {
        let start = now();
        let pid_file = self
            .dir()
            .join(format!("health-{}.pid", std::process::id()));
        let _ = fs_err::remove_file(&pid_file);
        let opts = ExecOptions {
            pid_file: Some(pid_file.clone()),
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OutputChunk>();
        let exec = self.exec_with(command, &opts, Output::Channel(tx));
        let (exit_code, mut output) = match tokio::time::timeout(timeout, exec).await {
            Ok(Ok(status)) => (status.code, String::new()),
            Ok(Err(e)) => (-1, format!("{e}\n")),
            Err(_) => {
                // The runtime's `exec` is killed with the future; the check itself must be too.
                if let Ok(pid) = fs_err::read_to_string(&pid_file)
                    && let Ok(pid) = pid.trim().parse::<i32>()
                    && let Some(pid) = rustix::process::Pid::from_raw(pid)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                (
                    -1,
                    format!(
                        "Health check exceeded timeout ({})\n",
                        humantime_secs(timeout)
                    ),
                )
            }
        };
        let _ = fs_err::remove_file(&pid_file);
        let mut captured = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            captured.extend_from_slice(&chunk.data);
        }
        let mut text = String::from_utf8_lossy(&captured).into_owned();
        text.push_str(&output);
        if text.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        output = text;
        HealthResult {
            start,
            end: now(),
            exit_code,
            output,
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The health checker of one running container; stops (and waits for its check to end) when
/// dropped.
pub struct HealthMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthMonitor {
    /// Starts checking `container` if it has a health check: the first check comes one
    /// interval after the container is running.
    pub fn start(container: &Container) -> Option<HealthMonitor> {
        let config = container.config().healthcheck.clone()?;
        let command = config.command()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let container = container.clone();
        let thread = std::thread::Builder::new()
            .name("health".to_owned())
            .spawn(move || {
                if let Err(e) = monitor(&container, &config, &command, &flag) {
                    tracing::warn!(error = %e, "health check");
                }
            })
            .ok()?;
        Some(HealthMonitor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Sleeps `d` unless told to stop; false when stopped.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::park_timeout((until - now).min(Duration::from_millis(200)));
    }
}

fn monitor(
    container: &Container,
    config: &HealthConfig,
    command: &[String],
    stop: &AtomicBool,
) -> Result<()> {
    let interval = nanos(config.interval, DEFAULT_INTERVAL);
    let timeout = nanos(config.timeout, DEFAULT_TIMEOUT);
    let start_period = nanos(config.start_period, Duration::ZERO);
    let start_interval = nanos(config.start_interval, DEFAULT_START_INTERVAL);
    let retries = if config.retries > 0 {
        config.retries as u32
    } else {
        DEFAULT_RETRIES
    };
    // Wait for the container to run.
    loop {
        match container.state()?.status {
            Status::Running => break,
            Status::Created => {
                if !pause(Duration::from_millis(20), stop) {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        }
    }
    let started = Instant::now();
    let mut health = Health {
        status: "starting".to_owned(),
        ..Default::default()
    };
    container.write_health(&health)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    loop {
        let in_start = started.elapsed() < start_period;
        let wait = if in_start && config.start_interval > 0 {
            start_interval
        } else {
            interval
        };
        if !pause(wait, stop) {
            return Ok(());
        }
        if container.state()?.status != Status::Running {
            return Ok(());
        }
        let in_start = started.elapsed() < start_period;
        let result = rt.block_on(container.run_check(command, timeout));
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        health.record(result, retries, in_start);
        container.write_health(&health)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> HealthResult {
        HealthResult {
            exit_code: code,
            ..Default::default()
        }
    }

    #[test]
    fn streaks_and_the_start_period() {
        let mut h = Health {
            status: "starting".into(),
            ..Default::default()
        };
        h.record(result(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        h.record(result(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        h.record(result(0), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        h.record(result(1), 2, false);
        assert_eq!(h.status, "healthy");
        h.record(result(2), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        for _ in 0..4 {
            h.record(result(0), 2, false);
        }
        assert_eq!(h.log.len(), KEEP_RESULTS);
        assert_eq!(h.status, "healthy");
    }

    #[test]
    fn test_forms() {
        let c = |t: &[&str]| HealthConfig {
            test: t.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            c(&["CMD-SHELL", "curl -f x || exit 1"]).command().unwrap(),
            ["/bin/sh", "-c", "curl -f x || exit 1"]
        );
        assert_eq!(
            c(&["CMD-SHELL", "test", "-f", "/tmp/ok"])
                .command()
                .unwrap(),
            ["/bin/sh", "-c", "test -f /tmp/ok"]
        );
        assert_eq!(c(&["CMD-SHELL"]).command(), None);
        assert_eq!(c(&["CMD", "true"]).command().unwrap(), ["true"]);
        assert_eq!(c(&["NONE"]).command(), None);
        assert_eq!(c(&[]).command(), None);
        assert_eq!(c(&["CMD"]).command(), None);
    }
}
