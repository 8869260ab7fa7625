//! `baseline`: a bare WebSocket server on the edge's stack (hyper 1 +
//! fastwebsockets, one reader task and one writer task per socket behind
//! a bounded queue, a 4 KiB `BufWriter`, batched flushes) with no auth,
//! no routing and no JSON. It stands for what the WebSocket stack alone
//! can do on a machine; benchmarks report the product as a ratio to it.
//!
//! - `/echo`: every text frame comes back to its sender.
//! - `/broadcast/{room}`: every text frame goes to every socket of the
//!   room, the sender's included.
//!
//! Prints `listening baseline <addr>` once bound.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use clap::Parser;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::BufWriter;
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "baseline",
    about = "Bare WebSocket echo and broadcast server (benchmark baseline)"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Per-socket outbound queue in messages; a full queue closes the
    /// socket (as the edge does).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Capacity of each socket's write buffer in bytes (the edge uses 4096).
    #[arg(long, default_value_t = 4096)]
    write_buffer: usize,
}

/// Frames written before a flush (the edge's batch size).
const BATCH: usize = 64;

type Members = Vec<(u64, mpsc::Sender<Bytes>)>;

#[derive(Default)]
struct Rooms {
    rooms: RwLock<HashMap<String, Arc<RwLock<Members>>>>,
}

impl Rooms {
    fn join(&self, name: &str, id: u64, tx: mpsc::Sender<Bytes>) -> Arc<RwLock<Members>> {
        let mut rooms = self
            .rooms
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = rooms.entry(name.to_owned()).or_default().clone();
        room.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((id, tx));
        room
    }
}

struct Server {
    rooms: Rooms,
    next_id: AtomicU64,
    queue: usize,
    write_buffer: usize,
    open: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = loadtest::limits::raise_nofile();
    let listener = tokio::net::TcpListener::bind(&cli.addr).await?;
    println!("listening baseline {}", listener.local_addr()?);
    let server = Arc::new(Server {
        rooms: Rooms::default(),
        next_id: AtomicU64::new(1),
        queue: cli.queue.max(1),
        write_buffer: cli.write_buffer,
        open: AtomicU64::new(0),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(server, request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn handle(server: Arc<Server>, mut request: Request<Incoming>) -> Response<Empty<Bytes>> {
    let path = request.uri().path().to_owned();
    let room = if path == "/echo" {
        None
    } else if let Some(room) = path.strip_prefix("/broadcast/").filter(|r| !r.is_empty()) {
        Some(room.to_owned())
    } else {
        return status(StatusCode::NOT_FOUND);
    };
    let Ok((response, upgraded)) = fastwebsockets::upgrade::upgrade(&mut request) else {
        return status(StatusCode::BAD_REQUEST);
    };
    tokio::spawn(async move {
        if let Ok(ws) = upgraded.await {
            socket(server, ws.into_inner(), room).await;
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Empty::new())
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

async fn socket(
    server: Arc<Server>,
    io: TokioIo<hyper::upgrade::Upgraded>,
    room_name: Option<String>,
) {
    let id = server.next_id.fetch_add(1, Ordering::Relaxed);
    server.open.fetch_add(1, Ordering::Relaxed);
    let (mut raw_read, raw_write) = tokio::io::split(io);
    let (mut reader, mut writer) = fastwebsockets::after_handshake_split(
        &mut raw_read,
        BufWriter::with_capacity(server.write_buffer, raw_write),
        Role::Server,
    );
    reader.set_auto_pong(false);
    reader.set_auto_close(false);
    let (tx, mut rx) = mpsc::channel::<Bytes>(server.queue);
    let room = room_name
        .as_deref()
        .map(|name| server.rooms.join(name, id, tx.clone()));
    let write_loop = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(bytes) = next.take() {
                if writer
                    .write_frame(Frame::text(Payload::Borrowed(&bytes)))
                    .await
                    .is_err()
                {
                    return;
                }
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.write_frame(Frame::close(1000, b"")).await;
        let _ = writer.flush().await;
    });
    let mut no_obligations = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
    loop {
        let frame = match reader.read_frame(&mut no_obligations).await {
            Ok(frame) => frame,
            Err(_) => break,
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let bytes = Bytes::copy_from_slice(&frame.payload);
                match &room {
                    None => {
                        if tx.try_send(bytes).is_err() {
                            break;
                        }
                    }
                    Some(room) => {
                        let members = room
                            .read()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (_, member) in members.iter() {
                            // A full queue is a slow consumer: the frame
                            // is dropped for it (the client counts it lost).
                            let _ = member.try_send(bytes.clone());
                        }
                    }
                }
            }
            OpCode::Close => break,
            _ => {}
        }
    }
    if let Some(room) = &room {
        room.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(member, _)| *member != id);
    }
    drop(tx);
    let _ = write_loop.await;
    server.open.fetch_sub(1, Ordering::Relaxed);
}
