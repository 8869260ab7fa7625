//! `loadtest`: quick load scenarios against a running edge.
//!
//! - `fanout`: N subscribers in one group, one publisher; reports
//!   deliveries per second and publish-to-receive latency percentiles
//!   (timestamp carried in each payload).
//! - `idle`: holds N authenticated sockets open and reports how many stayed.
//!
//! The full k6-style harness (scenario files, thresholds, baseline server)
//! grows from here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_common::auth::{Minter, claims};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "loadtest", about = "Switchboard load scenarios")]
struct Cli {
    /// Edge WebSocket address, host:port.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    edge: String,
    /// HS256 secret the edge verifies tokens with.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", global = true)]
    secret: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One publisher, N subscribers in one group.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 500)]
        messages: usize,
        /// Messages per second from the publisher.
        #[arg(long, default_value_t = 40)]
        rate: u64,
    },
    /// Hold N sockets open for a while.
    Idle {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(edge: &str, minter: &Minter, group: &str, client: &str) -> anyhow::Result<Socket> {
    let token = minter.mint(&claims(client, "client", "bench", None, 3600));
    let url = format!("ws://{edge}/v3/ws/group/{group}/client/{client}?token={token}");
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connect {client}"))?;
    Ok(socket)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn fanout(
    edge: &str,
    minter: &Minter,
    subscribers: usize,
    messages: usize,
    rate: u64,
) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let (latency_tx, mut latency_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let started_connect = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut socket = connect(edge, minter, "fanout", &format!("sub_{i}")).await?;
        let received = received.clone();
        let latency_tx = latency_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages);
            while latencies.len() < messages {
                let next = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
                let Ok(Some(Ok(Message::Text(text)))) = next else {
                    if matches!(next, Ok(Some(Ok(_)))) {
                        continue;
                    }
                    break;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(sent) = value["payload"]["t"].as_u64() {
                    latencies.push(now_micros().saturating_sub(sent));
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = latency_tx.send(latencies);
        }));
    }
    drop(latency_tx);
    println!(
        "connected {subscribers} subscribers in {:.2}s",
        started_connect.elapsed().as_secs_f64()
    );
    // Let presence joins settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The publisher is in the group too: it drains its own copies so it
    // never becomes a slow consumer.
    let publisher = connect(edge, minter, "fanout", "publisher").await?;
    let (mut sink, mut stream) = publisher.split();
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let started = Instant::now();
    for _ in 0..messages {
        tick.tick().await;
        let message = json!({"msg_type":"msg","target":"group","payload":{"t": now_micros()}});
        sink.send(Message::text(message.to_string())).await?;
    }
    let mut all = Vec::new();
    while let Some(latencies) = latency_rx.recv().await {
        all.extend(latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let expected = (subscribers * messages) as u64;
    let got = received.load(Ordering::Relaxed);
    println!("fanout: {subscribers} subscribers x {messages} messages at {rate}/s");
    println!(
        "  deliveries {got}/{expected} in {elapsed:.2}s = {:.0}/s",
        got as f64 / elapsed
    );
    println!(
        "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );
    if got < expected {
        bail!("lost {} deliveries", expected - got);
    }
    Ok(())
}

async fn idle(edge: &str, minter: &Minter, sockets: usize, hold: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut open = Vec::with_capacity(sockets);
    for i in 0..sockets {
        // Groups of 50 so presence fan-out stays small.
        let socket = connect(
            edge,
            minter,
            &format!("idle_{}", i / 50),
            &format!("idle_{i}"),
        )
        .await?;
        open.push(socket);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    println!(
        "opened {sockets} sockets in {connect_secs:.2}s ({:.0}/s)",
        sockets as f64 / connect_secs
    );
    let readers: Vec<_> = open
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(hold);
                loop {
                    match tokio::time::timeout_at(deadline, socket.next()).await {
                        Err(_) => return true,
                        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                            return false;
                        }
                        Ok(Some(Ok(_))) => {}
                    }
                }
            })
        })
        .collect();
    let mut alive = 0;
    for reader in readers {
        if reader.await.unwrap_or(false) {
            alive += 1;
        }
    }
    println!("held {alive}/{sockets} sockets for {hold}s");
    if alive < sockets {
        bail!("{} sockets dropped", sockets - alive);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secret = cli
        .secret
        .context("pass --secret or set SWITCHBOARD_JWT_SECRET to the edge's secret")?;
    let minter = Minter::hs256(secret.as_bytes());
    match cli.scenario {
        Scenario::Fanout {
            subscribers,
            messages,
            rate,
        } => fanout(&cli.edge, &minter, subscribers, messages, rate).await,
        Scenario::Idle { sockets, hold_secs } => idle(&cli.edge, &minter, sockets, hold_secs).await,
    }
}
