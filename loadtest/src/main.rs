//! `loadtest`: runs scenario files against a server (`loadtest run
//! scenarios/fanout.toml --target ws://127.0.0.1:8080`), or the whole
//! benchmark suite (`loadtest bench`, what `make bench` runs).
//!
//! Exit codes, like k6 where it has one: 0 every threshold passed, 99 a
//! threshold failed, 3 the target does not support the scenario, 1 any
//! other failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadtest::procs::{ERROR_PREFIX, SUMMARY_PREFIX};
use loadtest::run::{Options, RunError, Shard};
use loadtest::scenario::{Body, Dialect, Scenario};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Switchboard load harness (k6-style scenarios)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario file.
    Run(Box<RunArgs>),
    /// Run the standard suite against the baseline, standalone mode and a
    /// local cluster, and write the table into docs/BENCHMARKS.md.
    Bench(loadtest::bench::BenchArgs),
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The scenario file (`loadtest/scenarios/*.toml`).
    scenario: PathBuf,
    /// WebSocket base URLs, comma-separated (overrides the file's `targets`).
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Server API base URL (overrides the file's `api`).
    #[arg(long)]
    api: Option<String>,
    /// HS256 secret the edge verifies tokens with (`--secret` is the
    /// same flag).
    #[arg(
        long = "jwt-secret",
        alias = "secret",
        env = "SWITCHBOARD_JWT_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// Server API key.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Overrides `vus`.
    #[arg(long)]
    vus: Option<usize>,
    /// Overrides `duration` (10s, 5m, …).
    #[arg(long, value_parser = switchboard_common::config::duration)]
    duration: Option<Duration>,
    /// Overrides `message.rate`.
    #[arg(long)]
    rate: Option<f64>,
    /// Overrides `message.size`.
    #[arg(long)]
    size: Option<usize>,
    /// Overrides the dialect (`raw` drives the baseline server).
    #[arg(long)]
    dialect: Option<String>,
    /// Offer permessage-deflate on every socket and inflate compressed
    /// messages (overrides the file's `compression`).
    #[arg(long)]
    compression: bool,
    /// Overrides `message.body`: `pad` or `json` (a realistic JSON document).
    #[arg(long, value_parser = parse_body)]
    body: Option<Body>,
    /// Write the summary as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run as this many processes (each with its own open-file limit).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Sample this server process's memory (RSS) during the run.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// The edge's admin metrics page (`http://127.0.0.1:9090/metrics`):
    /// its close and refusal counters are read around the abuse window.
    #[arg(long)]
    metrics: Option<String>,
    /// Run the scenario's abuse window without its abusers.
    #[arg(long)]
    no_abuse: bool,
    /// Run the scenario this many times with its abusers and as many
    /// without, alternately, and compare them (`--out` gets the comparison).
    #[arg(long, default_value_t = 0)]
    pairs: usize,
    #[arg(long, hide = true, value_parser = parse_shard)]
    shard: Option<Shard>,
    #[arg(long, hide = true)]
    run_id: Option<String>,
    #[arg(long, hide = true)]
    barrier: bool,
    #[arg(long, hide = true)]
    emit_summary: bool,
}

fn parse_body(text: &str) -> Result<Body, String> {
    match text {
        "pad" => Ok(Body::Pad),
        "json" => Ok(Body::Json),
        _ => Err(format!("`{text}` is not pad or json")),
    }
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    let (index, count) = text.split_once('/').ok_or("shard is i/n")?;
    let index: usize = index.parse().map_err(|_| "shard index")?;
    let count: usize = count.parse().map_err(|_| "shard count")?;
    if count == 0 || index >= count {
        return Err("shard i/n needs i < n".into());
    }
    Ok(Shard { index, count })
}

impl RunArgs {
    /// The overrides, as arguments for child processes.
    fn passthrough(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push(flag.to_owned());
                out.push(value);
            }
        };
        push(
            "--target",
            (!self.target.is_empty()).then(|| self.target.join(",")),
        );
        push("--api", self.api.clone());
        push("--vus", self.vus.map(|v| v.to_string()));
        push(
            "--duration",
            self.duration.map(|d| format!("{}ms", d.as_millis())),
        );
        push("--rate", self.rate.map(|r| r.to_string()));
        push("--size", self.size.map(|s| s.to_string()));
        push("--dialect", self.dialect.clone());
        push("--metrics", self.metrics.clone());
        push(
            "--body",
            self.body.map(|b| match b {
                Body::Pad => "pad".to_owned(),
                Body::Json => "json".to_owned(),
            }),
        );
        if self.compression {
            out.push("--compression".to_owned());
        }
        if self.no_abuse {
            out.push("--no-abuse".to_owned());
        }
        out
    }

    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = Scenario::load(&self.scenario)?;
        if !self.target.is_empty() {
            s.targets = self.target.clone();
        }
        if self.api.is_some() {
            s.api = self.api.clone();
        }
        if let Some(vus) = self.vus {
            s.vus = vus;
            // Stages written for the file's socket count are capped at the new one.
            let sockets = s.sockets();
            for stage in &mut s.stages {
                stage.target = stage.target.min(sockets);
            }
        }
        if let Some(d) = self.duration {
            s.duration = d;
        }
        if let Some(rate) = self.rate {
            s.message.rate = rate;
        }
        if let Some(size) = self.size {
            s.message.size = size;
        }
        if let Some(body) = self.body {
            s.message.body = body;
        }
        if self.compression {
            s.compression = true;
        }
        if let Some(d) = &self.dialect {
            s.dialect =
                Some(Dialect::parse(d).ok_or_else(|| anyhow::anyhow!("unknown dialect {d}"))?);
        }
        if self.no_abuse {
            s.abuse = s.abuse.map(|a| a.without_abusers());
        }
        s.validate()?;
        Ok(s)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match loadtest::limits::raise_nofile() {
        Ok((before, after)) if before != after => {
            eprintln!("open-file limit raised from {before} to {after}");
        }
        Ok(_) => {}
        Err(e) => eprintln!("could not raise the open-file limit: {e}"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run(args) => runtime.block_on(run(*args)),
        Command::Bench(args) => match runtime.block_on(loadtest::bench::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(args: RunArgs) -> ExitCode {
    let child = args.emit_summary;
    let fail = |message: String, code: u8| {
        if child {
            println!("{ERROR_PREFIX}{message}");
        } else {
            eprintln!("loadtest: {message}");
        }
        ExitCode::from(code)
    };
    let scenario = match args.scenario() {
        Ok(s) => s,
        Err(e) => return fail(format!("{e:#}"), 1),
    };
    let thresholds = match scenario.thresholds() {
        Ok(t) => t,
        Err(e) => return fail(e.to_string(), 1),
    };
    let mut options = Options {
        secret: args.secret.clone(),
        api_key: args.api_key.clone(),
        shard: args.shard.unwrap_or(Shard::WHOLE),
        watch_pid: args.watch_pid,
        metrics: args.metrics.clone(),
        progress: !args.quiet,
        barrier: args.barrier,
        ..Options::default()
    };
    if let Some(id) = &args.run_id {
        options.run_id = id.clone();
    }
    if args.pairs > 0 {
        return pairs(&args, &scenario, &thresholds, options).await;
    }
    let mut summary = match run_once(&args, &scenario, &options).await {
        Ok(s) => s,
        Err(e @ RunError::Unsupported(_)) => return fail(e.to_string(), 3),
        Err(e) => return fail(e.to_string(), 1),
    };
    if child {
        match serde_json::to_string(&summary) {
            Ok(json) => println!("{SUMMARY_PREFIX}{json}"),
            Err(e) => return fail(format!("summary: {e}"), 1),
        }
        return ExitCode::SUCCESS;
    }
    let passed = summary.judge(&thresholds);
    print!("{}", summary.render());
    if let Some(path) = &args.out {
        let written = serde_json::to_string_pretty(&summary)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(e) = written {
            return fail(format!("write {}: {e}", path.display()), 1);
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(99)
    }
}

async fn run_once(
    args: &RunArgs,
    scenario: &Scenario,
    options: &Options,
) -> Result<loadtest::summary::Summary, RunError> {
    if args.procs > 1 {
        let mut passthrough = args.passthrough();
        // A pair's second half has no abusers, whatever the command line said.
        if scenario
            .abuse
            .as_ref()
            .is_some_and(|a| a.abusers().is_empty())
            && !passthrough.iter().any(|a| a == "--no-abuse")
        {
            passthrough.push("--no-abuse".to_owned());
        }
        loadtest::procs::run(&args.scenario, &passthrough, args.procs, scenario, options).await
    } else {
        loadtest::run::run(scenario, options).await
    }
}

/// `--pairs N`: with and without abusers, alternately, then compared.
async fn pairs(
    args: &RunArgs,
    scenario: &Scenario,
    thresholds: &[loadtest::threshold::Threshold],
    options: Options,
) -> ExitCode {
    use loadtest::abuse::pairs::{Comparison, RunFigures};
    let Some(abuse) = &scenario.abuse else {
        eprintln!("loadtest: --pairs needs a scenario with an [abuse] table");
        return ExitCode::FAILURE;
    };
    let quiet = Scenario {
        abuse: Some(abuse.without_abusers()),
        ..scenario.clone()
    };
    let mut figures = Vec::new();
    let mut abused = Vec::new();
    let mut passed = true;
    for pair in 0..args.pairs {
        for (with, s) in [(true, scenario), (false, &quiet)] {
            if let Some(pid) = args.watch_pid {
                // The previous run's sockets are still being torn down.
                loadtest::rss::settle(&[pid], Duration::from_secs(30)).await;
            }
            let options = Options {
                run_id: loadtest::run::run_id(),
                ..options.clone()
            };
            eprintln!(
                "pair {}/{}, {} abusers",
                pair + 1,
                args.pairs,
                if with { "with" } else { "without" }
            );
            let mut summary = match run_once(args, s, &options).await {
                Ok(summary) => summary,
                Err(e @ RunError::Unsupported(_)) => {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(3);
                }
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    return ExitCode::FAILURE;
                }
            };
            passed &= summary.judge(thresholds);
            print!("{}", summary.render());
            figures.push(RunFigures::of(&summary, with));
            if with {
                abused.push(summary);
            }
        }
    }
    let comparison = Comparison::new(figures, &abused.iter().collect::<Vec<_>>());
    print!("{}", comparison.render());
    if let Some(path) = &args.out {
        let written = serde_json::to_string_pretty(&comparison)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(e) = written {
            eprintln!("loadtest: write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_flag_is_named_as_on_the_edge() {
        for flag in ["--jwt-secret", "--secret"] {
            let cli = Cli::try_parse_from(["loadtest", "run", "s.toml", flag, "s3cret"])
                .unwrap_or_else(|e| panic!("{flag}: {e}"));
            let Command::Run(args) = cli.command else {
                panic!("the run subcommand")
            };
            assert_eq!(args.secret.as_deref(), Some("s3cret"), "{flag}");
        }
    }
}
