//! One abuser: connect, misbehave the way its kind does, see how the
//! server ends the connection, pause, and start over until told to leave.

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::OpCode;
use switchboard_common::auth::{Minter, claims};
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use super::frames::{self, MAX_BATCH};
use super::server::{self, Counters};
use super::tally::{Ending, Tally};
use super::{AbuseSpec, AbuserKind};
use crate::client::{self, Incoming, Reader, Sources, Target, Writer};
use crate::scenario::Dialect;
use crate::wire::{self, Seen};

/// How long an abuser waits for the server's answer to its offence (a
/// close, mostly) before it counts the socket as left open.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// How long an IM socket that never registers is held waiting for the
/// server to close it (the edge gives registration 10 s).
const UNREGISTERED_WAIT: Duration = Duration::from_secs(30);

/// What every abuser shares.
pub struct AbuseEnv {
    pub spec: AbuseSpec,
    pub targets: Vec<Target>,
    pub sources: Sources,
    pub connect_timeout: Duration,
    /// Mints the tokens of group and JSON-RPC sockets.
    pub minter: Option<Arc<Minter>>,
    pub tenant: String,
    /// The run's id, so abusers' names never meet another run's.
    pub run: String,
    /// The group the normal fan-out traffic goes to (slow sockets join it).
    pub fanout_group: String,
    pub tally: Arc<Tally>,
    /// The edge's metrics page (`http://host:port/metrics`), if given.
    pub metrics: Option<String>,
    /// Its counters when the abusers joined.
    pub server_before: std::sync::Mutex<Option<Counters>>,
}

impl AbuseEnv {
    /// Reads the edge's counters as the abusers join.
    pub async fn scrape_before(&self) {
        let Some(url) = &self.metrics else { return };
        match server::scrape(url).await {
            Ok(c) => *self.before() = Some(c),
            Err(e) => eprintln!("abuse: {e}"),
        }
    }

    /// How the edge's counters grew since [`Self::scrape_before`].
    pub async fn server_growth(&self) -> BTreeMap<String, u64> {
        let Some(url) = &self.metrics else {
            return BTreeMap::new();
        };
        let Some(before) = self.before().clone() else {
            return BTreeMap::new();
        };
        match server::scrape(url).await {
            Ok(after) => server::growth(&before, &after),
            Err(e) => {
                eprintln!("abuse: {e}");
                BTreeMap::new()
            }
        }
    }

    fn before(&self) -> std::sync::MutexGuard<'_, Option<Counters>> {
        self.server_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn token(&self, sub: &str, kind: &str) -> String {
        self.minter
            .as_ref()
            .map(|m| m.mint(&claims(sub, kind, &self.tenant, None, 3600)))
            .unwrap_or_default()
    }

    /// The route abuser `i` of `kind` connects to on its `n`-th attempt;
    /// every attempt is a new client, so none replaces another.
    fn path(&self, kind: AbuserKind, i: usize, n: u64) -> String {
        let me = format!("a{}_{}{i}_{n}", self.run, kind.name());
        match kind {
            AbuserKind::Oversized | AbuserKind::Malformed => {
                let group = format!("g{}_abuse", self.run);
                wire::group::path(&group, &me, &self.token(&me, "client"))
            }
            AbuserKind::Slow => {
                wire::group::path(&self.fanout_group, &me, &self.token(&me, "client"))
            }
            AbuserKind::Batched => wire::jsonrpc::user_path(&self.token(&me, "user")),
            AbuserKind::Unauthenticated => wire::im::socket_path(),
        }
    }

    async fn connect(&self, kind: AbuserKind, i: usize, n: u64) -> Option<(Reader, Writer)> {
        let target = &self.targets[i % self.targets.len()];
        let recv_buffer = (kind == AbuserKind::Slow).then_some(self.spec.slow_recv_buffer);
        let path = self.path(kind, i, n);
        let source = self.sources.pick(i, target);
        match client::connect_with(
            target,
            &path,
            &[],
            source,
            self.connect_timeout,
            recv_buffer,
        )
        .await
        {
            Ok(pair) => {
                self.tally.connected(kind);
                Some(pair)
            }
            Err(e) => {
                self.tally.connect_failed(kind, e.status());
                None
            }
        }
    }
}

/// Runs abuser `i` of `kind` until `stop`; what it has open is dropped.
pub async fn run(env: Arc<AbuseEnv>, kind: AbuserKind, i: usize, stop: CancellationToken) {
    let mut n = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = attempt(&env, kind, i, n) => {}
        }
        n += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(env.spec.pause) => {}
        }
    }
}

async fn attempt(env: &AbuseEnv, kind: AbuserKind, i: usize, n: u64) {
    let Some((reader, writer)) = env.connect(kind, i, n).await else {
        return;
    };
    let tally = &env.tally;
    let ending = match kind {
        AbuserKind::Oversized => oversized(tally, reader, &writer, n).await,
        AbuserKind::Malformed => malformed(tally, reader, &writer, n).await,
        AbuserKind::Batched => batched(env, reader, &writer, i).await,
        AbuserKind::Slow => slow(env, reader, &writer).await,
        AbuserKind::Unauthenticated => {
            until_closed(reader, &writer, UNREGISTERED_WAIT, |_| {
                tally.replies(AbuserKind::Unauthenticated, 0, 1)
            })
            .await
        }
    };
    tally.ended(kind, ending);
}

/// Reads nothing for `slow_hold` (sending itself echoes, if asked), then
/// reads what is left to learn how the server closed it.
async fn slow(env: &AbuseEnv, reader: Reader, writer: &Writer) -> Ending {
    let kind = AbuserKind::Slow;
    let spec = &env.spec;
    let pump = async {
        if spec.slow_echo_size == 0 {
            return std::future::pending().await;
        }
        let echo = frames::echo(spec.slow_echo_size);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.slow_echo_rate));
        loop {
            tick.tick().await;
            // A failed send: the edge has closed; the hold still runs out.
            if client::send_text(writer, &echo).await.is_err() {
                return std::future::pending().await;
            }
            env.tally.sent(kind, 1);
        }
    };
    let _ = tokio::time::timeout(spec.slow_hold, pump).await;
    until_closed(reader, writer, ANSWER_WAIT, |text| {
        count_group(&env.tally, kind, text)
    })
    .await
}

/// Even attempts send the message whole, odd ones in three fragments.
async fn oversized(tally: &Tally, reader: Reader, writer: &Writer, n: u64) -> Ending {
    let kind = AbuserKind::Oversized;
    // Send errors are not counted: the edge may close before the last
    // fragment, and the close it sends is what is recorded.
    if n.is_multiple_of(2) {
        let _ = client::send_frame(writer, true, OpCode::Text, frames::oversized()).await;
    } else {
        let parts = frames::fragments(3);
        let last = parts.len() - 1;
        for (k, part) in parts.into_iter().enumerate() {
            let opcode = if k == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            if client::send_frame(writer, k == last, opcode, part)
                .await
                .is_err()
            {
                break;
            }
        }
    }
    tally.sent(kind, 1);
    until_closed(reader, writer, ANSWER_WAIT, |text| {
        count_group(tally, kind, text)
    })
    .await
}

/// Even attempts: invalid JSON, and once its error reply is in, a binary
/// frame (sent at once, the close would drop the queued reply); odd
/// attempts: a text frame that is not UTF-8.
async fn malformed(tally: &Tally, mut reader: Reader, writer: &Writer, n: u64) -> Ending {
    let kind = AbuserKind::Malformed;
    let (opcode, bytes) = if n.is_multiple_of(2) {
        if client::send_frame(writer, true, OpCode::Text, frames::invalid_json())
            .await
            .is_ok()
        {
            tally.sent(kind, 1);
        }
        let answered = read_until(&mut reader, writer, ANSWER_WAIT, |text| {
            let error = matches!(wire::classify(Dialect::Group, text, ""), Seen::Error(_));
            tally.replies(kind, u64::from(error), u64::from(!error));
            error
        })
        .await;
        if let Err(ending) = answered {
            return ending;
        }
        (OpCode::Binary, frames::binary())
    } else {
        (OpCode::Text, frames::invalid_utf8())
    };
    if client::send_frame(writer, true, opcode, bytes)
        .await
        .is_ok()
    {
        tally.sent(kind, 1);
    }
    until_closed(reader, writer, ANSWER_WAIT, |text| {
        count_group(tally, kind, text)
    })
    .await
}

/// Rounds of a 50-call batch and a 51-call one at `batch_rate`, while
/// the server keeps the socket open.
async fn batched(env: &AbuseEnv, reader: Reader, writer: &Writer, i: usize) -> Ending {
    let kind = AbuserKind::Batched;
    let tally = &env.tally;
    let tag = format!("{}b{i}", env.run);
    let full = frames::batch(MAX_BATCH, &tag);
    let over = frames::batch(MAX_BATCH + 1, &tag);
    let every = Duration::from_secs_f64(1.0 / env.spec.batch_rate);
    let sender = async {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            for batch in [&full, &over] {
                if client::send_text(writer, batch).await.is_err() {
                    return;
                }
                tally.sent(kind, 1);
            }
        }
    };
    let answers = until_closed(reader, writer, Duration::MAX, |text| {
        let (errors, others) = frames::rpc_answers(text);
        tally.replies(kind, errors, others);
    });
    tokio::pin!(answers);
    tokio::select! {
        ending = &mut answers => ending,
        // A failed send means the socket is going: its close is still to be read.
        () = sender => tokio::time::timeout(ANSWER_WAIT, answers)
            .await
            .unwrap_or(Ending::StillOpen),
    }
}

fn count_group(tally: &Tally, kind: AbuserKind, text: &[u8]) {
    match wire::classify(Dialect::Group, text, "") {
        Seen::Error(_) => tally.replies(kind, 1, 0),
        _ => tally.replies(kind, 0, 1),
    }
}

/// Reads (answering pings) until `frame` returns true for a text frame
/// (`Ok`), or the server closes or `wait` passes (`Err` with how it
/// ended; on timeout the socket is closed from this side).
async fn read_until(
    reader: &mut Reader,
    writer: &Writer,
    wait: Duration,
    mut frame: impl FnMut(&[u8]) -> bool,
) -> Result<(), Ending> {
    let read = async {
        loop {
            match client::next_text(reader, writer).await {
                Incoming::Text(text) if frame(&text) => return Ok(()),
                Incoming::Text(_) => {}
                Incoming::Closed(Some(code)) => return Err(Ending::Closed(code)),
                Incoming::Closed(None) => return Err(Ending::Ended),
            }
        }
    };
    // `Duration::MAX` would overflow the deadline: wait without one.
    let outcome = if wait == Duration::MAX {
        Ok(read.await)
    } else {
        tokio::time::timeout(wait, read).await
    };
    match outcome {
        Ok(result) => result,
        Err(_) => {
            client::close(writer).await;
            Err(Ending::StillOpen)
        }
    }
}

/// Reads until the server closes or `wait` passes, handing every text
/// frame to `frame`.
async fn until_closed(
    mut reader: Reader,
    writer: &Writer,
    wait: Duration,
    mut frame: impl FnMut(&[u8]),
) -> Ending {
    let never = read_until(&mut reader, writer, wait, |text| {
        frame(text);
        false
    });
    match never.await {
        Err(ending) => ending,
        // The predicate never accepts a frame.
        Ok(()) => Ending::StillOpen,
    }
}
