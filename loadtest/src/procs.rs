//! Runs a scenario as several harness processes, for when one process's
//! open-file limit is not enough: each child takes every n-th socket,
//! says `ready` once connected, starts its measured phase on `go`, and
//! prints its summary as one JSON line; the parent merges them.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::rss::RssWatch;
use crate::run::{Options, RunError};
use crate::scenario::Scenario;
use crate::summary::Summary;

/// What a child prints before its summary JSON.
pub const SUMMARY_PREFIX: &str = "summary ";
/// What a child prints when its run failed.
pub const ERROR_PREFIX: &str = "error ";

struct ChildRun {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl ChildRun {
    /// The next line that is not progress chatter; `None` at the end.
    async fn next(&mut self) -> Option<String> {
        self.lines.next_line().await.ok().flatten()
    }
}

/// Spawns `procs` children running `file` with `args` (overrides the
/// user passed), and merges their summaries.
pub async fn run(
    file: &Path,
    args: &[String],
    procs: usize,
    scenario: &Scenario,
    options: &Options,
) -> Result<Summary, RunError> {
    let exe = std::env::current_exe().map_err(|e| RunError::Setup(format!("own path: {e}")))?;
    let rss = options.watch_pid.map(RssWatch::start);
    let mut children = Vec::with_capacity(procs);
    for index in 0..procs {
        let mut command = Command::new(&exe);
        command
            .arg("run")
            .arg(file)
            .args(args)
            .args(["--shard", &format!("{index}/{procs}")])
            .args(["--run-id", &options.run_id])
            .args(["--barrier", "--quiet", "--emit-summary"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(secret) = &options.secret {
            command.env("SWITCHBOARD_JWT_SECRET", secret);
        }
        if let Some(key) = &options.api_key {
            command.env("SWITCHBOARD_API_KEY", key);
        }
        let mut child = command
            .spawn()
            .map_err(|e| RunError::Setup(format!("start {}: {e}", exe.display())))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(RunError::Setup("child without pipes".into()));
        };
        children.push(ChildRun {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
    }
    for (index, child) in children.iter_mut().enumerate() {
        match child.next().await {
            Some(line) if line == "ready" => {}
            Some(line) => return Err(child_failed(index, &line)),
            None => {
                return Err(RunError::Setup(format!(
                    "process {index} ended before it was ready"
                )));
            }
        }
    }
    if let Some(w) = &rss {
        w.mark("connected");
        w.mark("measure");
    }
    for child in &mut children {
        let _ = child.stdin.write_all(b"go\n").await;
        let _ = child.stdin.flush().await;
    }
    let mut merged: Option<Summary> = None;
    for (index, child) in children.iter_mut().enumerate() {
        let summary = loop {
            match child.next().await {
                Some(line) => {
                    if let Some(json) = line.strip_prefix(SUMMARY_PREFIX) {
                        break serde_json::from_str::<Summary>(json).map_err(|e| {
                            RunError::Setup(format!("process {index} summary: {e}"))
                        })?;
                    }
                    if line.starts_with(ERROR_PREFIX) {
                        return Err(child_failed(index, &line));
                    }
                }
                None => {
                    return Err(RunError::Setup(format!(
                        "process {index} ended without a summary"
                    )));
                }
            }
        };
        let _ = child.child.wait().await;
        match merged.as_mut() {
            None => merged = Some(summary),
            Some(m) => m.merge(&summary),
        }
    }
    let mut summary = merged.ok_or_else(|| RunError::Setup("no processes".into()))?;
    summary.processes = procs;
    summary.vus = scenario.vus;
    if let Some(w) = rss {
        w.mark("end");
        summary.rss = Some(w.finish(summary.counts.open_at_end, scenario.warmup));
    }
    Ok(summary)
}

fn child_failed(index: usize, line: &str) -> RunError {
    let message = line.strip_prefix(ERROR_PREFIX).unwrap_or(line);
    if let Some(what) = message.strip_prefix("unsupported by target: ") {
        return RunError::Unsupported(what.to_owned());
    }
    RunError::Setup(format!("process {index}: {message}"))
}
