//! Lossless failover, played with real processes: 3 routers, 2 edges,
//! Redis and NATS, over gRPC and over NATS. While publishers send at a
//! steady rate to 50 groups spread over both edges, one router is killed
//! with SIGKILL, later started again, and a fourth one is added. Every
//! socket that stays connected stays open and receives every accepted
//! message once, in offset order; clients that drop for 5 s and come back
//! on the other edge with their positions end up with exactly the same.
//!
//! Each run prints its figures (sent, accepted, delivered, duplicates,
//! longest pause), which `docs/BENCHMARKS.md` records.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::WsClient;
use switchboard_testkit::cluster::{Cluster, scrape};
use switchboard_testkit::switchboard::{group_url, join_group, token};
use switchboard_testkit::ws::Event;
use tokio::sync::watch;
use tokio::time::Instant;

const TENANT: &str = "t1";
const GROUPS: usize = 50;
/// Groups whose extra client drops and comes back on the other edge.
const MOVERS: usize = 10;
/// Each publisher's pace: 10 messages a second, 500 in all.
const EVERY: Duration = Duration::from_millis(100);
/// The failure script, from the first publish.
const KILL_AT: Duration = Duration::from_secs(3);
const RESTART_AT: Duration = Duration::from_secs(8);
const ADD_AT: Duration = Duration::from_secs(12);
const PUBLISH_FOR: Duration = Duration::from_secs(16);
/// How long a mover stays away: it comes back just as the killed router
/// is started again, while its groups move back to it.
const AWAY: Duration = Duration::from_secs(5);
/// Quiet after the last publish before a socket's record is closed: a
/// correctness bound, far past any failover.
const SETTLE: Duration = Duration::from_secs(8);

fn group(g: usize) -> String {
    format!("group_{g}")
}

/// What one socket received of its group's messages.
#[derive(Default, Debug)]
struct Record {
    /// (offset, msg) in the order they arrived.
    got: Vec<(u64, String)>,
    epoch: String,
    longest_pause: Duration,
    /// How the socket ended before it was told to, if it did.
    ended: Option<String>,
    /// Error messages the server sent it, and what the first said.
    errors: usize,
    first_error: Option<String>,
    /// Recovery messages (movers only).
    recoveries: Vec<Value>,
}

impl Record {
    fn take(&mut self, text: &str, last: &mut Option<Instant>) {
        let Ok(m) = serde_json::from_str::<Value>(text) else {
            self.ended = Some(format!("non-JSON {text:?}"));
            return;
        };
        match m["msg_type"].as_str() {
            Some("msg") if m["target"] == "group" => {
                let now = Instant::now();
                if let Some(before) = last.replace(now) {
                    self.longest_pause = self.longest_pause.max(now - before);
                }
                if let Some(epoch) = m["epoch"].as_str() {
                    self.epoch = epoch.to_owned();
                }
                let offset = m["offset"].as_u64().unwrap_or(0);
                self.got
                    .push((offset, m["msg"].as_str().unwrap_or("").to_owned()));
            }
            Some("error") => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| m["msg"].to_string());
            }
            Some("recovery") => self.recoveries.push(m),
            _ => {}
        }
    }

    fn position(&self) -> String {
        let last = self.got.last().map_or(0, |(offset, _)| *offset);
        format!("{}:{last}", self.epoch)
    }
}

/// Reads `ws` into `record` until `stop` turns true and the socket has
/// then been quiet for `quiet`; publishes from `publish` (group `g`) at
/// [`EVERY`] until [`PUBLISH_FOR`] has passed since `start`.
async fn run_socket(
    mut ws: WsClient,
    mut record: Record,
    publish: Option<usize>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
    quiet: Duration,
) -> (WsClient, Record, usize) {
    let mut sent = 0usize;
    let mut next = start;
    let mut last_message = None;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(g) = publish
            && now >= next
            && now < start + PUBLISH_FOR
        {
            let msg = format!("p{g}-{sent}");
            ws.send_json(&json!({"msg_type":"msg","target":"group","msg":msg}))
                .await;
            sent += 1;
            next += EVERY;
        }
        let stopping = *stop.borrow_and_update();
        if stopping {
            let since = *quiet_since.get_or_insert(now);
            if now - since >= quiet {
                return (ws, record, sent);
            }
        }
        let wait = if publish.is_some() && now < start + PUBLISH_FOR {
            next.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(200)
        };
        match ws.recv(wait.max(Duration::from_millis(1))).await {
            Some(Event::Text(text)) => {
                quiet_since = None;
                record.take(&text, &mut last_message);
            }
            Some(other) => {
                record.ended = Some(format!("{other:?}"));
                return (ws, record, sent);
            }
            None => {}
        }
    }
}

fn open_mover(cluster: &Cluster, edge: usize, g: usize, since: Option<&str>) -> String {
    let client = format!("mover_{g}");
    let token = token(&client, "client", TENANT, None);
    let mut url = group_url(cluster.edge(edge), &group(g), &client, &token);
    if let Some(since) = since {
        url.push_str(&format!("&since_group={since}"));
    }
    url
}

/// What the run adds up to, over every socket.
#[derive(Debug, Default)]
struct Figures {
    sent: usize,
    refused: usize,
    delivered: usize,
    expected: usize,
    duplicates: usize,
    out_of_order: usize,
    longest_pause: Duration,
}

/// One failover run at a time: each is 6 processes, Redis and NATS, and
/// on a small machine two at once measure the machine, not the failover.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn failover(transport: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(transport, 3, 2).await;
    // Per group: a publisher on one edge, a listener on each edge.
    let mut publishers = Vec::new();
    let mut listeners = Vec::new();
    for g in 0..GROUPS {
        let edge = g % 2;
        publishers.push(
            join_group(
                cluster.edge(edge),
                TENANT,
                &group(g),
                &format!("pub_{g}"),
                None,
            )
            .await,
        );
        for side in 0..2 {
            let client = format!("sub_{g}_{side}");
            listeners.push((
                g,
                join_group(cluster.edge(side), TENANT, &group(g), &client, None).await,
            ));
        }
    }
    let mut movers = Vec::new();
    for g in 0..MOVERS {
        let ws = WsClient::open(&open_mover(&cluster, 0, g, None)).await;
        movers.push((g, ws));
    }

    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for (g, ws) in publishers.into_iter().enumerate() {
        let stop = stop.clone();
        tasks.push((
            g,
            tokio::spawn(run_socket(
                ws,
                Record::default(),
                Some(g),
                start,
                stop,
                Duration::from_secs(2),
            )),
        ));
    }
    for (g, ws) in listeners {
        let stop = stop.clone();
        tasks.push((
            g,
            tokio::spawn(run_socket(
                ws,
                Record::default(),
                None,
                start,
                stop,
                Duration::from_secs(2),
            )),
        ));
    }
    // Movers listen until they drop.
    let (away_tx, away) = watch::channel(false);
    let mut mover_tasks = Vec::new();
    for (g, ws) in movers {
        let away = away.clone();
        mover_tasks.push((
            g,
            tokio::spawn(run_socket(
                ws,
                Record::default(),
                None,
                start,
                away,
                Duration::ZERO,
            )),
        ));
    }

    tokio::time::sleep_until(start + KILL_AT).await;
    cluster.routers[0].signal("KILL");
    let _ = away_tx.send(true);
    let mut away_records = Vec::new();
    for (g, task) in mover_tasks {
        let (mut ws, record, _) = task.await.expect("mover task");
        ws.close().await;
        away_records.push((g, record));
    }
    let dropped_at = Instant::now();

    tokio::time::sleep_until(start + RESTART_AT).await;
    cluster.restart_router(0);
    // Movers come back on the other edge, from where they were.
    tokio::time::sleep_until(dropped_at + AWAY).await;
    for (g, record) in away_records {
        let since = record.position();
        let ws = WsClient::open(&open_mover(&cluster, 1, g, Some(&since))).await;
        let stop = stop.clone();
        tasks.push((
            g,
            tokio::spawn(run_socket(
                ws,
                record,
                None,
                start,
                stop,
                Duration::from_secs(2),
            )),
        ));
    }
    tokio::time::sleep_until(start + ADD_AT).await;
    cluster.add_router("default");

    tokio::time::sleep_until(start + PUBLISH_FOR + SETTLE).await;
    let _ = stop_tx.send(true);
    let mut sent_by_group = vec![0usize; GROUPS];
    let mut refused_by_group = vec![0usize; GROUPS];
    let mut records: Vec<(usize, Record)> = Vec::new();
    for (i, (g, task)) in tasks.into_iter().enumerate() {
        let (_ws, record, sent) = task.await.expect("socket task");
        if i < GROUPS {
            sent_by_group[g] = sent;
            refused_by_group[g] = record.errors;
        }
        records.push((g, record));
    }

    // What each group's history holds, as every socket should have it.
    let mut figures = Figures {
        sent: sent_by_group.iter().sum(),
        refused: refused_by_group.iter().sum(),
        ..Figures::default()
    };
    let mut problems = Vec::new();
    let mut reference: BTreeMap<usize, Vec<(u64, String)>> = BTreeMap::new();
    for (g, record) in &records {
        let mut seen = HashSet::new();
        let mut previous = 0;
        for (offset, msg) in &record.got {
            if !seen.insert(msg.clone()) {
                figures.duplicates += 1;
            }
            if *offset != previous + 1 {
                figures.out_of_order += 1;
            }
            previous = *offset;
        }
        figures.delivered += record.got.len();
        figures.longest_pause = figures.longest_pause.max(record.longest_pause);
        if let Some(ended) = &record.ended {
            problems.push(format!("a socket of group {g} ended: {ended}"));
        }
        // The longest record of a group is its reference.
        let entry = reference.entry(*g).or_default();
        if record.got.len() > entry.len() {
            *entry = record.got.clone();
        }
    }
    let listeners_per_group = |g: usize| 3 + usize::from(g < MOVERS);
    for (g, history) in &reference {
        figures.expected += history.len() * listeners_per_group(*g);
        let from_publisher = history
            .iter()
            .filter(|(_, msg)| msg.starts_with(&format!("p{g}-")))
            .count();
        let accepted = sent_by_group[*g] - refused_by_group[*g];
        if from_publisher < accepted {
            problems.push(format!(
                "group {g}: {accepted} accepted, {from_publisher} in its history"
            ));
        }
    }
    for (g, record) in &records {
        if record.got != reference[g] {
            let offsets: Vec<u64> = record.got.iter().map(|(o, _)| *o).collect();
            problems.push(format!(
                "group {g}: a socket has {} messages (offsets {:?}…), the group {}",
                record.got.len(),
                &offsets[..offsets.len().min(20)],
                reference[g].len()
            ));
        }
    }
    for (g, record) in records
        .iter()
        .filter(|(g, r)| *g < MOVERS && !r.recoveries.is_empty())
    {
        let recovery = &record.recoveries[0];
        if recovery["payload"]["recovered"] != true {
            problems.push(format!("mover of group {g} not recovered: {recovery}"));
        }
    }
    let recovered = records
        .iter()
        .filter(|(_, r)| !r.recoveries.is_empty())
        .count();
    let refusals: HashSet<&String> = records
        .iter()
        .filter_map(|(_, r)| r.first_error.as_ref())
        .collect();
    // Nobody forged anything here: a frame a process refused as unproven
    // means it misread its own peers (a subscriber left over from a
    // session that ended, say), and paid a check and a warning for each.
    for admin in cluster.admins() {
        let text = scrape(admin).await;
        let refused: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("switchboard_cluster_auth_refused_total{") && !l.ends_with(" 0")
            })
            .collect();
        if !refused.is_empty() {
            problems.push(format!(
                "{admin} refused its own cluster's frames: {refused:?}"
            ));
        }
    }
    println!("{transport}: refusals {refusals:?}");
    println!(
        "{transport}: sent {} accepted {} refused {} delivered {}/{} duplicates {} out of order {} longest pause {:?}; {recovered}/{MOVERS} movers recovered",
        figures.sent,
        figures.sent - figures.refused,
        figures.refused,
        figures.delivered,
        figures.expected,
        figures.duplicates,
        figures.out_of_order,
        figures.longest_pause,
    );
    assert_eq!(recovered, MOVERS, "every mover got its recovery message");
    assert!(problems.is_empty(), "{transport}: {problems:#?}");
    assert_eq!(figures.duplicates, 0);
    assert_eq!(figures.out_of_order, 0);
    assert!(
        figures.sent > GROUPS * 100,
        "the publishers kept their pace: {}",
        figures.sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_grpc_a_killed_router_loses_nothing() {
    failover("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_nats_a_killed_router_loses_nothing() {
    failover("nats").await;
}
