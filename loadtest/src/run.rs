//! Runs one scenario in this process: opens its sockets (following the
//! ramp), lets them settle, runs the measured phase, drains late
//! deliveries, closes everything and summarises.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use switchboard_common::auth::Minter;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::abuse::{AbuseEnv, AbuseRss, AbuseSummary, Tally};
use crate::client::{self, ConnectError, Received, Setup, Sources, Target, Writer};
use crate::deflate::Inflater;
use crate::http::HttpClient;
use crate::plan::{self, Message, Names, PublisherPlan, SocketPlan};
use crate::recovery::{self, Delivery, RecoverySummary, RecoveryTally, Track};
use crate::rss::RssWatch;
use crate::scenario::{Dialect, Kind, Scenario};
use crate::stats::{Stats, Trend, now_micros};
use crate::summary::Summary;
use crate::wire::{self, Seen};

/// Why a run could not produce a summary.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The target does not serve what the scenario needs (HTTP 404 on
    /// its route): reported at once rather than waited on.
    #[error("unsupported by target: {0}")]
    Unsupported(String),
    #[error("{0}")]
    Setup(String),
}

/// This process's share of a multi-process run: socket `i` belongs to
/// process `i % count`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, socket: usize) -> bool {
        socket % self.count.max(1) == self.index
    }
}

/// How to run, beside the scenario itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// HS256 secret for the tokens of the product's dialects.
    pub secret: Option<String>,
    /// Server-API key (`Authorization: Bearer`), for the server-API kinds.
    pub api_key: Option<String>,
    pub shard: Shard,
    /// Prefix of client and group names, unique per run.
    pub run_id: String,
    /// Server process whose memory is sampled.
    pub watch_pid: Option<u32>,
    /// Print the live progress line.
    pub progress: bool,
    /// Multi-process child: say `ready` on stdout once connected and wait
    /// for `go` on stdin before the measured phase.
    pub barrier: bool,
    pub connect_timeout: Duration,
    /// The edge's metrics page, read around the abuse window.
    pub metrics: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            secret: None,
            api_key: None,
            shard: Shard::WHOLE,
            run_id: run_id(),
            watch_pid: None,
            progress: false,
            barrier: false,
            connect_timeout: Duration::from_secs(10),
            metrics: None,
        }
    }
}

/// A short name unique to this moment (base 36 milliseconds).
pub fn run_id() -> String {
    let mut n = now_micros() / 1000;
    let mut out = Vec::new();
    while n > 0 {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Everything a socket task needs.
pub(crate) struct Env {
    scenario: Scenario,
    dialect: Dialect,
    targets: Vec<Target>,
    api: Option<Target>,
    api_key: Option<String>,
    pub(crate) stats: Arc<Stats>,
    sources: Sources,
    connect_timeout: Duration,
    /// `recovery`: the positions of each socket of this process that
    /// drops, by socket index, and the run's reconnect counters.
    tracks: std::collections::HashMap<usize, Arc<Track>>,
    pub(crate) recovery: RecoveryTally,
}

/// An open socket of the plan.
pub(crate) struct Open {
    pub(crate) writer: Writer,
    pub(crate) reader: JoinHandle<()>,
}

/// Runs `scenario` (this process's share of it) to its summary.
pub async fn run(scenario: &Scenario, options: &Options) -> Result<Summary, RunError> {
    let targets = scenario
        .targets
        .iter()
        .map(|t| Target::parse(t).map_err(|e| RunError::Setup(format!("target {t}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(RunError::Setup(
            "no target: set `targets` or pass --target".into(),
        ));
    }
    let api = match &scenario.api {
        Some(url) => {
            Some(Target::parse(url).map_err(|e| RunError::Setup(format!("api {url}: {e}")))?)
        }
        None => None,
    };
    if scenario.kind.needs_api() && (api.is_none() || options.api_key.is_none()) {
        return Err(RunError::Setup(format!(
            "kind {} publishes through the server API: pass --api and --api-key",
            scenario.kind.name()
        )));
    }
    let dialect = scenario.dialect();
    let minter = match (&options.secret, dialect) {
        (_, Dialect::Raw) => None,
        (Some(secret), _) => Some(Minter::hs256(secret.as_bytes())),
        (None, _) => {
            return Err(RunError::Setup(
                "pass --jwt-secret or set SWITCHBOARD_JWT_SECRET to the edge's secret".into(),
            ));
        }
    };
    let names = Names {
        run: options.run_id.clone(),
    };
    let minter = minter.map(Arc::new);
    let plan = plan::build(scenario, &names, minter.as_deref());
    let stats = Arc::new(Stats::new());
    let drops: Vec<(usize, Duration)> = plan
        .drops
        .iter()
        .copied()
        .filter(|(socket, _)| options.shard.owns(*socket))
        .collect();
    let tracks = drops
        .iter()
        .map(|(socket, _)| (*socket, Arc::new(Track::default())))
        .collect();
    let env = Arc::new(Env {
        scenario: scenario.clone(),
        dialect,
        targets,
        api,
        api_key: options.api_key.clone(),
        stats: stats.clone(),
        sources: Sources::new(scenario.source_ips, scenario.sockets()),
        connect_timeout: options.connect_timeout,
        tracks,
        recovery: RecoveryTally::default(),
    });
    let mine: Vec<SocketPlan> = plan
        .sockets
        .into_iter()
        .filter(|s| options.shard.owns(s.index))
        .collect();
    let publishers: Vec<PublisherPlan> = plan
        .publishers
        .into_iter()
        .filter(|p| match p.socket {
            Some(socket) => options.shard.owns(socket),
            None => options.shard.index == 0,
        })
        .collect();
    Stats::add(&stats.expected, mine.iter().map(|s| s.expect).sum());
    // Abusers run in the first process only: their counts are not shares.
    let abuse = scenario.abuse.as_ref().map(|spec| {
        Arc::new(AbuseEnv {
            spec: if options.shard.index == 0 {
                spec.clone()
            } else {
                spec.without_abusers()
            },
            targets: env.targets.clone(),
            sources: env.sources,
            connect_timeout: options.connect_timeout,
            minter: minter.clone(),
            tenant: scenario.tenant.clone(),
            run: names.run.clone(),
            fanout_group: names.group(0),
            tally: Arc::new(Tally::default()),
            metrics: options.metrics.clone().filter(|_| options.shard.index == 0),
            server_before: std::sync::Mutex::new(None),
        })
    });

    let rss = options.watch_pid.map(RssWatch::start);
    let phase = Arc::new(std::sync::Mutex::new("connect"));
    let stop_progress = CancellationToken::new();
    if options.progress {
        tokio::spawn(progress(
            stats.clone(),
            phase.clone(),
            stop_progress.clone(),
        ));
    }
    let set_phase = |name: &'static str| {
        *phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = name;
    };

    let mut summary = Summary {
        scenario: scenario.name.clone(),
        kind: scenario.kind.name().to_owned(),
        dialect: dialect.name().to_owned(),
        targets: scenario.targets.clone(),
        vus: scenario.vus,
        processes: options.shard.count,
        compression: scenario.compression,
        ..Summary::default()
    };

    if scenario.kind == Kind::Connect {
        let (connect_secs, result) = connect_loop(&env, &mine, options).await;
        stop_progress.cancel();
        result?;
        summary.connect_secs = connect_secs;
        summary.measure_secs = connect_secs;
        summary.collect(&stats);
        summary.rss = rss.map(|w| w.finish(0, scenario.warmup));
        return Ok(summary);
    }

    let share = mine.len() as f64 / scenario.sockets().max(1) as f64;
    let started = Instant::now();
    let plans_of_drops: std::collections::HashMap<usize, SocketPlan> = mine
        .iter()
        .filter(|s| env.tracks.contains_key(&s.index))
        .map(|s| (s.index, s.clone()))
        .collect();
    let opened = open_all(&env, mine, share).await;
    let mut opens = match opened {
        Ok(opens) => opens,
        Err(e) => {
            stop_progress.cancel();
            return Err(e);
        }
    };
    summary.connect_secs = started.elapsed().as_secs_f64();
    set_phase("settle");
    tokio::time::sleep(scenario.settle).await;
    if let Some(w) = &rss {
        w.mark("connected");
    }
    if options.barrier {
        wait_for_go().await;
    }
    if let Some(w) = &rss {
        w.mark("measure");
    }
    set_phase(if scenario.kind == Kind::Idle {
        "hold"
    } else {
        "measure"
    });
    let measure_start = Instant::now();
    let measure_wall = now_micros();
    let cpu = CpuClock::start(options.watch_pid);
    if let Some(abuse) = &abuse {
        let micros = |d: Duration| measure_wall + d.as_micros() as u64;
        stats
            .window
            .0
            .store(micros(abuse.spec.start), Ordering::Relaxed);
        stats
            .window
            .1
            .store(micros(abuse.spec.stop), Ordering::Relaxed);
    }
    let writers: std::collections::HashMap<usize, Writer> =
        opens.iter().map(|(i, o)| (*i, o.writer.clone())).collect();
    let mut tasks = JoinSet::new();
    for p in publishers {
        let writer = p.socket.and_then(|s| writers.get(&s).cloned());
        if p.socket.is_some() && writer.is_none() {
            // Its socket never opened: its messages are lost, not sent.
            continue;
        }
        tasks.spawn(publish(env.clone(), p, writer, measure_start));
    }
    if scenario.kind == Kind::Idle {
        let all: Vec<Writer> = opens.iter().map(|(_, o)| o.writer.clone()).collect();
        tasks.spawn(heartbeats(
            env.clone(),
            all,
            measure_start + scenario.duration,
        ));
    }
    if let Some(abuse) = &abuse {
        let marker = rss.as_ref().map(RssWatch::marker);
        tasks.spawn(crate::abuse::run(abuse.clone(), measure_start, marker));
    }
    tasks.spawn(tokio::time::sleep_until(
        (measure_start + scenario.duration).into(),
    ));
    let mut returns = spawn_drops(&env, &drops, &mut opens, plans_of_drops, measure_start);
    while tasks.join_next().await.is_some() {}
    // Each came back before the measured phase ended (the scenario
    // checks its timing); their new sockets are closed with the rest.
    while let Some(done) = returns.join_next().await {
        if let Ok((index, Some(open))) = done {
            opens.push((index, open));
        }
    }
    summary.measure_secs = measure_start.elapsed().as_secs_f64();
    set_phase("drain");
    let drain_until = Instant::now() + scenario.drain;
    while Stats::get(&stats.received) < Stats::get(&stats.expected) && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(w) = &rss {
        w.mark("end");
    }
    (summary.server_cpu_secs, summary.client_cpu_secs) = cpu.read();
    let last = Stats::get(&stats.last_receive);
    summary.delivery_secs = if last > measure_wall {
        ((last - measure_wall) as f64 / 1e6)
            .max(summary.measure_secs.min(scenario.duration.as_secs_f64()))
    } else {
        summary.measure_secs
    };
    summary.counts.open_at_end = Stats::get(&stats.open);
    summary.counts.planned_open = opens.len() as u64
        + Stats::get(&stats.connect_failures)
        + Stats::get(&env.recovery.reconnect_failures);
    set_phase("close");
    close_all(&stats, opens).await;
    stop_progress.cancel();
    summary.collect(&stats);
    if scenario.kind == Kind::Recovery {
        let tracks: Vec<Arc<Track>> = env.tracks.values().cloned().collect();
        summary.recovery = Some(RecoverySummary::collect(&env.recovery, &tracks));
    }
    let server = match &abuse {
        Some(a) => a.server_growth().await,
        None => Default::default(),
    };
    summary.abuse = abuse.map(|a| AbuseSummary {
        server,
        start_secs: a.spec.start.as_secs_f64(),
        stop_secs: a.spec.stop.as_secs_f64(),
        kinds: a.tally.summary(&crate::abuse::counts(&a.spec)),
        rss: rss.as_ref().and_then(|w| w.span("abuse_start", "end")).map(
            |(baseline_kib, peak_kib, after_kib)| AbuseRss {
                baseline_kib,
                peak_kib,
                after_kib,
            },
        ),
    });
    summary.rss = rss.map(|w| w.finish(summary.counts.open_at_end, scenario.warmup));
    Ok(summary)
}

/// Starts the drop-and-return task of every dropping socket that opened,
/// taking its socket out of `opens`; each task gives back the new one.
fn spawn_drops(
    env: &Arc<Env>,
    drops: &[(usize, Duration)],
    opens: &mut Vec<(usize, Open)>,
    mut plans: std::collections::HashMap<usize, SocketPlan>,
    measure_start: Instant,
) -> JoinSet<(usize, Option<Open>)> {
    let mut returns = JoinSet::new();
    let Some(spec) = &env.scenario.recovery else {
        return returns;
    };
    for &(index, at) in drops {
        let (Some(position), Some(track), Some(socket)) = (
            opens.iter().position(|(i, _)| *i == index),
            env.tracks.get(&index),
            plans.remove(&index),
        ) else {
            // It never opened: there is nothing to drop.
            continue;
        };
        let (_, open) = opens.swap_remove(position);
        returns.spawn(recovery::drop_and_return(
            env.clone(),
            socket,
            open,
            track.clone(),
            measure_start + at,
            spec.away,
        ));
    }
    returns
}

/// CPU time of the watched server and of this process from `start`.
struct CpuClock {
    server: Option<(u32, u64)>,
    client: Option<u64>,
}

/// `/proc/<pid>/stat` counts CPU time in ticks of 1/100 s.
const TICKS_PER_SEC: f64 = 100.0;

impl CpuClock {
    fn start(server: Option<u32>) -> Self {
        Self {
            server: server.and_then(|pid| Some((pid, crate::rss::cpu_ticks(pid)?))),
            client: crate::rss::cpu_ticks(std::process::id()),
        }
    }

    /// Seconds since `start`: the server's, this process's.
    fn read(&self) -> (Option<f64>, Option<f64>) {
        let since = |pid: u32, then: u64| {
            crate::rss::cpu_ticks(pid).map(|now| now.saturating_sub(then) as f64 / TICKS_PER_SEC)
        };
        (
            self.server.and_then(|(pid, then)| since(pid, then)),
            self.client.and_then(|then| since(std::process::id(), then)),
        )
    }
}

async fn wait_for_go() {
    use std::io::Write;
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "go" {
            return;
        }
    }
}

/// Opens `plans` as the ramp (scaled to this process's `share`) allows.
async fn open_all(
    env: &Arc<Env>,
    plans: Vec<SocketPlan>,
    share: f64,
) -> Result<Vec<(usize, Open)>, RunError> {
    let scenario = &env.scenario;
    let limit = Arc::new(Semaphore::new(scenario.connect_concurrency));
    let mut pending = JoinSet::new();
    let mut opens = Vec::with_capacity(plans.len());
    let started = Instant::now();
    let ramped = !scenario.stages.is_empty();
    for (n, socket) in plans.into_iter().enumerate() {
        if ramped {
            loop {
                let elapsed = started.elapsed();
                let allowed = (scenario.ramp_target(elapsed) as f64 * share).ceil() as usize;
                if allowed > n {
                    break;
                }
                if elapsed >= scenario.ramp_time() {
                    // The stages end below the plan: the rest stay closed.
                    return finish_opening(env, pending, opens).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RunError::Setup("connection limiter closed".into()))?;
        let task_env = env.clone();
        pending.spawn(async move {
            let result = open_one(&task_env, &socket).await;
            drop(permit);
            (socket, result)
        });
        while let Some(done) = pending.try_join_next() {
            settle_open(env, done, &mut opens)?;
        }
    }
    finish_opening(env, pending, opens).await
}

type Opened = Result<(SocketPlan, Result<Open, ConnectError>), tokio::task::JoinError>;

async fn finish_opening(
    env: &Arc<Env>,
    mut pending: JoinSet<(SocketPlan, Result<Open, ConnectError>)>,
    mut opens: Vec<(usize, Open)>,
) -> Result<Vec<(usize, Open)>, RunError> {
    while let Some(done) = pending.join_next().await {
        settle_open(env, done, &mut opens)?;
    }
    Ok(opens)
}

fn settle_open(env: &Env, done: Opened, opens: &mut Vec<(usize, Open)>) -> Result<(), RunError> {
    let Ok((socket, result)) = done else {
        Stats::add(&env.stats.connect_failures, 1);
        return Ok(());
    };
    match result {
        Ok(open) => opens.push((socket.index, open)),
        Err(e) => return connect_failed(env, &socket, &e),
    }
    Ok(())
}

/// Counts a failed connect; a 404 means the target lacks the dialect.
fn connect_failed(env: &Env, socket: &SocketPlan, error: &ConnectError) -> Result<(), RunError> {
    if error.status() == Some(404) {
        let route = socket.path.split('?').next().unwrap_or_default();
        return Err(RunError::Unsupported(format!(
            "the {} dialect (kind {}): {} answered 404 to {route} ({error})",
            env.dialect.name(),
            env.scenario.kind.name(),
            env.targets[socket.index % env.targets.len()].host,
        )));
    }
    Stats::add(&env.stats.connect_failures, 1);
    env.stats
        .error(|| format!("connect {}: {error}", socket.me));
    Ok(())
}

/// How long a fresh socket may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn open_one(env: &Arc<Env>, socket: &SocketPlan) -> Result<Open, ConnectError> {
    let target = &env.targets[socket.index % env.targets.len()];
    let mut hello = socket.hello.clone();
    if let Some((client_name, token)) = &socket.im_login {
        let session = im_login(target, client_name, token).await?;
        hello = Some(wire::im::register(&socket.me, &session));
    }
    let headers: Vec<(&str, &str)> = socket
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let source = env.sources.pick(socket.index, target);
    let setup = Setup {
        compression: env.scenario.compression,
        ..Setup::default()
    };
    let started = Instant::now();
    let opened = client::connect_socket(
        target,
        &socket.path,
        &headers,
        source,
        env.connect_timeout,
        setup,
    )
    .await?;
    let stats = &env.stats;
    stats.record(
        Trend::Connect,
        socket.index,
        started.elapsed().as_micros() as u64,
    );
    Stats::add(&stats.connections, 1);
    Stats::add(&stats.open, 1);
    if opened.deflate.is_some() {
        Stats::add(&stats.negotiated, 1);
    }
    let writer = opened.writer.clone();
    let (ready_tx, ready_rx) = oneshot::channel();
    let reader = tokio::spawn(read_loop(
        opened,
        stats.clone(),
        env.dialect,
        socket.index,
        socket.me.clone(),
        ready_tx,
        env.tracks
            .get(&socket.index)
            .map(|t| (t.clone(), env.clone())),
    ));
    // A group socket is ready at its own presence join; other dialects
    // once their hello (subscription, register) is answered.
    let answer_due = env.dialect == Dialect::Group || hello.is_some();
    if let Some(hello) = hello
        && let Err(e) = client::send_text(&writer, &hello).await
    {
        stats.error(|| format!("hello {}: {e}", socket.me));
    }
    if answer_due && !matches!(tokio::time::timeout(READY_WAIT, ready_rx).await, Ok(Ok(()))) {
        stats.error(|| format!("{} not ready within {READY_WAIT:?}", socket.me));
    }
    Ok(Open { writer, reader })
}

/// IM: `GET /api/websocket/client/login/{clientName}` for a session id.
async fn im_login(target: &Target, client_name: &str, token: &str) -> Result<String, ConnectError> {
    let path = wire::im::login_path(client_name);
    let refused = |status: u16, body: String| ConnectError::Refused {
        status,
        body: format!("GET {path}: {body}"),
    };
    let mut http = HttpClient::connect(target)
        .await
        .map_err(|e| refused(0, e.to_string()))?;
    let auth = format!("Bearer {token}");
    let answer = http
        .send(
            "GET",
            &path,
            &[("authorization", &auth)],
            bytes::Bytes::new(),
        )
        .await
        .map_err(|e| refused(0, e.to_string()))?;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    if answer.status != 200 {
        return Err(refused(answer.status, body));
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["sessionId"].as_str().map(str::to_owned))
        .ok_or_else(|| ConnectError::BadResponse(format!("login answer without sessionId: {body}")))
}

/// Reads `socket` to its end: counts and times what it receives, and
/// inflates what comes compressed when it agreed to permessage-deflate.
/// A socket that drops and returns (`track`) also follows its positions.
async fn read_loop(
    socket: client::Socket,
    stats: Arc<Stats>,
    dialect: Dialect,
    key: usize,
    me: String,
    ready: oneshot::Sender<()>,
    track: Option<(Arc<Track>, Arc<Env>)>,
) {
    // The harness closing a dropping socket is no unexpected close.
    let ended = |track: &Option<(Arc<Track>, Arc<Env>)>| match track {
        Some((t, _)) if t.leaving() => stats.socket_left(),
        _ => stats.socket_ended(),
    };
    let client::Socket {
        mut reader,
        writer,
        deflate,
    } = socket;
    let mut inflater = deflate.map(Inflater::new);
    let mut ready = Some(ready);
    loop {
        let message = match client::next_message(&mut reader, &writer, inflater.as_mut()).await {
            Received::Message(message) => message,
            Received::Closed(_) => {
                ended(&track);
                return;
            }
            Received::Failed { code, why } => {
                // The server broke the protocol: fail the socket.
                stats.error(|| format!("{me}: {why}"));
                client::close_with(&writer, code).await;
                ended(&track);
                return;
            }
        };
        Stats::add(&stats.wire_bytes, message.wire_bytes);
        let text = message.data;
        let sized =
            || stats.delivery_bytes(message.wire_bytes, text.len() as u64, message.compressed);
        if let Some(tx) = ready.take_if(|_| wire::is_ready(dialect, &text)) {
            let _ = tx.send(());
        }
        let delivery = match &track {
            Some((t, env)) => recovery::on_frame(t, &text, &env.recovery, &stats, key),
            None => Delivery::Live,
        };
        match wire::classify(dialect, &text, &me) {
            Seen::Stamped(_) if delivery == Delivery::Replayed => {
                stats.delivered_replayed();
                sized();
            }
            Seen::Stamped(stamp) => {
                stats.delivered(key, stamp);
                sized();
            }
            Seen::Ack(stamp) => stats.record(Trend::Ack, key, now_micros().saturating_sub(stamp)),
            Seen::Receipt(stamp) => {
                stats.record(Trend::Receipt, key, now_micros().saturating_sub(stamp))
            }
            Seen::ImText { stamp, reply } => {
                if let Some(stamp) = stamp {
                    stats.delivered(key, stamp);
                    sized();
                }
                if let Err(e) = client::send_text(&writer, &reply).await {
                    stats.error(|| format!("receipt from {me}: {e}"));
                }
            }
            Seen::Error(text) => stats.error(|| text),
            Seen::Other => {}
        }
    }
}

/// Sends a publisher's messages on schedule (late ones go at once).
async fn publish(env: Arc<Env>, p: PublisherPlan, writer: Option<Writer>, start: Instant) {
    let stats = &env.stats;
    let fill = wire::Fill::new(env.scenario.message.body, env.scenario.message.size);
    let mut http = None;
    if writer.is_none() {
        let Some(api) = &env.api else { return };
        match HttpClient::connect(api).await {
            Ok(client) => http = Some(client),
            Err(e) => return stats.error(|| format!("server API: {e}")),
        }
    }
    let auth = format!("Bearer {}", env.api_key.as_deref().unwrap_or_default());
    let tenant = env.scenario.tenant.clone();
    for n in 0..p.messages {
        let at = start + p.offset + Duration::from_secs_f64(n as f64 / p.rate);
        tokio::time::sleep_until(at.into()).await;
        let stamp = now_micros();
        let seq = p.first + n * p.stride;
        let text = match &p.message {
            Message::Group => wire::group::to_group(stamp, &fill),
            Message::Echo => wire::group::echo(stamp, &fill),
            Message::Direct(to) => wire::group::direct(to, stamp, &fill),
            Message::Raw => wire::raw::message(stamp, &fill),
            Message::RpcPublish(channel) => wire::jsonrpc::publish(channel, stamp, &fill),
            Message::ImText { from, to } => wire::im::text(from, to, seq, stamp, &fill),
            Message::ApiGroups(groups) => {
                let group = &groups[(seq % groups.len() as u64) as usize];
                let path = format!("/api/v1/groups/{group}/messages");
                let body = wire::group::api_message(stamp, &fill).to_string();
                api_post(stats, http.as_mut(), &path, body, &auth, &tenant).await;
                continue;
            }
            Message::ApiIot { product, device } => {
                let body = wire::iot::event(product, device, stamp, &fill).to_string();
                api_post(
                    stats,
                    http.as_mut(),
                    "/api/v1/iot/events",
                    body,
                    &auth,
                    &tenant,
                )
                .await;
                continue;
            }
        };
        let Some(writer) = &writer else { return };
        match client::send_text(writer, &text).await {
            Ok(()) => Stats::add(&stats.sent, 1),
            Err(e) => {
                // The socket is gone; its reader counts the close.
                return stats.error(|| format!("send: {e}"));
            }
        }
    }
}

async fn api_post(
    stats: &Stats,
    http: Option<&mut HttpClient>,
    path: &str,
    body: String,
    auth: &str,
    tenant: &str,
) {
    let Some(http) = http else { return };
    let started = Instant::now();
    let answer = http
        .send(
            "POST",
            path,
            &[("authorization", auth), ("x-tenant", tenant)],
            body.into(),
        )
        .await;
    stats.record(Trend::Request, 0, started.elapsed().as_micros() as u64);
    match answer {
        Ok(a) if a.status == 200 => Stats::add(&stats.sent, 1),
        Ok(a) => stats.error(|| {
            format!(
                "POST {path}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            )
        }),
        Err(e) => stats.error(|| format!("POST {path}: {e}")),
    }
}

/// Idle sockets' dialect heartbeats, spread evenly over each interval.
async fn heartbeats(env: Arc<Env>, writers: Vec<Writer>, until: Instant) {
    if writers.is_empty() {
        return;
    }
    let text = match env.dialect {
        Dialect::Raw => wire::raw::heartbeat(),
        Dialect::Iot => wire::iot::ping(),
        _ => wire::group::heartbeat(),
    };
    let gap = env.scenario.heartbeat.div_f64(writers.len() as f64);
    let mut next = Instant::now() + gap;
    loop {
        for writer in &writers {
            if next >= until {
                return;
            }
            tokio::time::sleep_until(next.into()).await;
            next += gap;
            // A failed write means the socket ended; its reader counts it.
            let _ = client::send_text(writer, &text).await;
        }
    }
}

/// Closes every socket normally and waits (briefly) for the ends.
async fn close_all(stats: &Stats, opens: Vec<(usize, Open)>) {
    stats.closing.store(true, Ordering::Relaxed);
    for (_, open) in &opens {
        client::close(&open.writer).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for (_, open) in opens {
        let mut reader = open.reader;
        if tokio::time::timeout_at(deadline, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// `connect`: each virtual user opens a socket, gets its upgrade, closes
/// it, and starts over, for the scenario's duration.
async fn connect_loop(
    env: &Arc<Env>,
    mine: &[SocketPlan],
    options: &Options,
) -> (f64, Result<(), RunError>) {
    if options.barrier {
        wait_for_go().await;
    }
    let started = Instant::now();
    let until = started + env.scenario.duration;
    let mut users = JoinSet::new();
    for socket in mine.iter().cloned() {
        let env = env.clone();
        users.spawn(async move {
            let target = &env.targets[socket.index % env.targets.len()];
            let mut attempt = 0usize;
            while Instant::now() < until {
                attempt += 1;
                let source = env.sources.pick(socket.index + attempt, target);
                let begun = Instant::now();
                let setup = Setup {
                    compression: env.scenario.compression,
                    ..Setup::default()
                };
                match client::connect_socket(
                    target,
                    &socket.path,
                    &[],
                    source,
                    env.connect_timeout,
                    setup,
                )
                .await
                {
                    Ok(client::Socket {
                        writer, deflate, ..
                    }) => {
                        if deflate.is_some() {
                            Stats::add(&env.stats.negotiated, 1);
                        }
                        env.stats.record(
                            Trend::Connect,
                            socket.index,
                            begun.elapsed().as_micros() as u64,
                        );
                        Stats::add(&env.stats.connections, 1);
                        client::close(&writer).await;
                    }
                    Err(e) => connect_failed(&env, &socket, &e)?,
                }
            }
            Ok(())
        });
    }
    let mut result = Ok(());
    while let Some(done) = users.join_next().await {
        if let Ok(Err(e)) = done {
            users.abort_all();
            result = Err(e);
        }
    }
    (started.elapsed().as_secs_f64(), result)
}

/// The live progress line on stderr: a `\r` line on a terminal, a plain
/// line every 5 s otherwise.
async fn progress(
    stats: Arc<Stats>,
    phase: Arc<std::sync::Mutex<&'static str>>,
    stop: CancellationToken,
) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let every = if terminal { 1 } else { 5 };
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    let mut last_received = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let received = Stats::get(&stats.received);
        let rate = (received - last_received.min(received)) / every;
        last_received = received;
        let phase = *phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let line = format!(
            "[{:>6.1}s] {phase:<8} open {:>6}  conns {:>7} (+{} failed)  sent {:>8}  recv {:>9} ({rate}/s)  errors {}  closes {}",
            started.elapsed().as_secs_f64(),
            Stats::get(&stats.open),
            Stats::get(&stats.connections),
            Stats::get(&stats.connect_failures),
            Stats::get(&stats.sent),
            received,
            Stats::get(&stats.errors),
            Stats::get(&stats.unexpected_closes),
        );
        let mut err = std::io::stderr();
        let _ = if terminal {
            write!(err, "\r{line}   ")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if terminal {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_sockets_round_robin() {
        let shards = [
            Shard { index: 0, count: 3 },
            Shard { index: 1, count: 3 },
            Shard { index: 2, count: 3 },
        ];
        for socket in 0..30 {
            assert_eq!(shards.iter().filter(|s| s.owns(socket)).count(), 1);
        }
        assert!(Shard::WHOLE.owns(12345));
        assert!(!run_id().is_empty());
    }
}
