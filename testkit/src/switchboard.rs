//! Switchboard processes for integration tests: standalone, edge, router,
//! each on ephemeral ports, with a known JWT secret and token minting.

use std::net::SocketAddr;

use switchboard_common::auth::{Minter, claims};

use crate::process::{Process, binary};

/// The secret test processes share.
pub const SECRET: &str = "switchboard-test-secret";
/// The API key test routers accept.
pub const API_KEY: &str = "switchboard-test-api-key";
/// The cluster secret every test edge and router proves.
pub const CLUSTER_SECRET: &str = "switchboard-test-cluster-secret";

/// A token for `sub` of `kind` in `tenant`, valid for an hour.
pub fn token(sub: &str, kind: &str, tenant: &str, scope: Option<&str>) -> String {
    Minter::hs256(SECRET.as_bytes()).mint(&claims(sub, kind, tenant, scope, 3600))
}

/// A token for `sub` in `tenant` shaped by `shape` (kind left out,
/// claims of another kind's token added, …), valid for an hour.
pub fn token_shaped(
    sub: &str,
    tenant: &str,
    shape: impl FnOnce(&mut switchboard_common::auth::Claims),
) -> String {
    let mut claims = claims(sub, "user", tenant, None, 3600);
    shape(&mut claims);
    Minter::hs256(SECRET.as_bytes()).mint(&claims)
}

/// A device token for `hd`, owned by `owner` when given.
pub fn device_token(hd: &str, owner: Option<&str>, tenant: &str) -> String {
    let mut claims = claims(hd, "device", tenant, None, 3600);
    claims.owner = owner.map(str::to_owned);
    Minter::hs256(SECRET.as_bytes()).mint(&claims)
}

/// An app token for `app` (its `app` claim; `sub` is a service account).
pub fn app_token(app: &str, tenant: &str) -> String {
    let mut claims = claims(&format!("{app}-svc"), "app", tenant, None, 3600);
    claims.app = Some(app.to_owned());
    Minter::hs256(SECRET.as_bytes()).mint(&claims)
}

/// `ws://edge/v3/ws/group/{group}/client/{client}?token=…`
pub fn group_url(edge: SocketAddr, group: &str, client: &str, token: &str) -> String {
    format!("ws://{edge}/v3/ws/group/{group}/client/{client}?token={token}")
}

/// `ws://edge/ws/group/{group}/client/{client}?token=…` (V2 legacy)
pub fn group_v2_url(edge: SocketAddr, group: &str, client: &str, token: &str) -> String {
    format!("ws://{edge}/ws/group/{group}/client/{client}?token={token}")
}

/// What every process the helpers start gets: secrets, API key, text logs.
pub fn common_env() -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHBOARD_JWT_SECRET", SECRET.to_owned()),
        ("SWITCHBOARD_API_KEY", API_KEY.to_owned()),
        ("SWITCHBOARD_CLUSTER_SECRET", CLUSTER_SECRET.to_owned()),
        ("SWITCHBOARD_LOG_FORMAT", "text".to_owned()),
    ]
}

/// `switchboard` (edge and router in one process) on ephemeral ports;
/// `extra` flags are appended.
pub fn standalone(extra: &[&str]) -> Process {
    standalone_with_env(extra, &[])
}

/// `switchboard` arguments with every listener on an ephemeral port (the
/// process prints the addresses it bound).
pub const STANDALONE_ARGS: [&str; 8] = [
    "--addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
    "--router-api-addr",
    "127.0.0.1:0",
    "--router-admin-addr",
    "127.0.0.1:0",
];

/// `router` arguments with every listener on an ephemeral port.
pub const ROUTER_ARGS: [&str; 6] = [
    "--grpc-addr",
    "127.0.0.1:0",
    "--api-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
];

/// [`standalone`] with extra environment variables.
pub fn standalone_with_env(extra: &[&str], env: &[(&str, String)]) -> Process {
    let mut args = STANDALONE_ARGS.to_vec();
    args.extend_from_slice(extra);
    let mut all = common_env();
    all.extend(env.iter().cloned());
    Process::start(
        binary("switchboard"),
        &args,
        &all,
        &["edge", "edge-admin", "router-api", "router-admin"],
    )
}

/// A `router` process on ephemeral ports.
pub fn router(extra: &[&str], env: &[(&str, String)]) -> Process {
    router_from(common_env(), extra, env)
}

/// [`router`] without the shared cluster secret (mutual TLS alone, or
/// `--insecure-cluster`, must then come from `extra` or `env`).
pub fn router_without_secret(extra: &[&str], env: &[(&str, String)]) -> Process {
    router_from(without_secret(), extra, env)
}

/// [`edge_with_env`] without the shared cluster secret.
pub fn edge_without_secret(extra: &[&str], env: &[(&str, String)]) -> Process {
    edge_from(without_secret(), extra, env)
}

fn without_secret() -> Vec<(&'static str, String)> {
    common_env()
        .into_iter()
        .filter(|(key, _)| *key != "SWITCHBOARD_CLUSTER_SECRET")
        .collect()
}

fn router_from(
    shared: Vec<(&'static str, String)>,
    extra: &[&str],
    env: &[(&str, String)],
) -> Process {
    let mut all: Vec<(&str, String)> = shared;
    let mut args = ROUTER_ARGS.to_vec();
    args.extend_from_slice(extra);
    all.extend(env.iter().cloned());
    Process::start(
        binary("router"),
        &args,
        &all,
        &["router-grpc", "router-api", "router-admin"],
    )
}

/// An `edge` process attached to `routers` (gRPC addresses).
pub fn edge(routers: &[SocketAddr], extra: &[&str]) -> Process {
    let list: Vec<String> = routers.iter().map(ToString::to_string).collect();
    edge_with_env(extra, &[("SWITCHBOARD_ROUTERS", list.join(","))])
}

/// An `edge` process on ephemeral ports, told where routers are by `env`.
pub fn edge_with_env(extra: &[&str], env: &[(&str, String)]) -> Process {
    edge_from(common_env(), extra, env)
}

fn edge_from(
    shared: Vec<(&'static str, String)>,
    extra: &[&str],
    env: &[(&str, String)],
) -> Process {
    let mut all: Vec<(&str, String)> = shared;
    let mut args = vec!["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    all.extend(env.iter().cloned());
    Process::start(binary("edge"), &args, &all, &["edge", "edge-admin"])
}

/// A ready standalone process on the in-memory store, or on a private
/// redis-server that lives as long as it.
pub struct Standalone {
    pub process: Process,
    pub redis: Option<crate::RedisServer>,
}

impl Standalone {
    /// `switchboard` with the in-memory store; `extra` flags appended.
    pub async fn memory(extra: &[&str]) -> Self {
        let process = standalone(extra);
        wait_ready(process.addr("edge-admin")).await;
        Self {
            process,
            redis: None,
        }
    }

    /// `switchboard` on a private redis-server.
    pub async fn redis(extra: &[&str]) -> Self {
        let redis = crate::RedisServer::start().await;
        let url = redis.url();
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend_from_slice(extra);
        let process = standalone(&args);
        wait_ready(process.addr("edge-admin")).await;
        Self {
            process,
            redis: Some(redis),
        }
    }

    pub fn edge(&self) -> SocketAddr {
        self.process.addr("edge")
    }

    pub fn api(&self) -> SocketAddr {
        self.process.addr("router-api")
    }
}

/// Declares a test file's `Env`: a ready standalone process on either
/// store (`Env::memory`, `Env::redis`) with its edge and server-API
/// addresses. The file adds its own helpers in its own `impl Env`.
#[macro_export]
macro_rules! standalone_env {
    () => {
        struct Env($crate::switchboard::Standalone);

        // Each file uses what it needs of these.
        #[allow(dead_code)]
        impl Env {
            async fn memory(extra: &[&str]) -> Self {
                Self($crate::switchboard::Standalone::memory(extra).await)
            }

            async fn redis(extra: &[&str]) -> Self {
                Self($crate::switchboard::Standalone::redis(extra).await)
            }

            fn edge(&self) -> ::std::net::SocketAddr {
                self.0.edge()
            }

            fn api(&self) -> ::std::net::SocketAddr {
                self.0.api()
            }
        }
    };
}

/// Runs each scenario `async fn name(env: Env)` twice, as
/// `memory_store::name` and `redis_store::name`, with `Env::memory(&[args])`
/// and `Env::redis(&[args])` of the calling test file.
#[macro_export]
macro_rules! against_both_stores {
    ($($name:ident $(($($arg:expr),*))?;)*) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::memory(&[$($($arg),*)?]).await).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::redis(&[$($($arg),*)?]).await).await;
                }
            )*
        }
    };
}

/// Runs each scenario `async fn name(transport: &str)` twice, as
/// `grpc::name` and `nats::name`.
#[macro_export]
macro_rules! over_both_transports {
    ($($name:ident;)*) => {
        mod grpc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("grpc").await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name("nats").await;
                }
            )*
        }
    };
}

/// `GET /api/v1/history?{query}` on `api` with the API key, acting for
/// `tenant`: the status and the JSON body.
pub async fn history(api: SocketAddr, tenant: &str, query: &str) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {API_KEY}");
    let reply = crate::http::get(
        api,
        &format!("/api/v1/history?{query}"),
        &[("authorization", auth.as_str()), ("x-tenant", tenant)],
    )
    .await;
    (reply.status, reply.json())
}

/// Waits until `GET /readyz` on `admin` answers 200.
pub async fn wait_ready(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(admin).await {
            drop(stream);
            if crate::http::get(admin, "/readyz", &[]).await.status == 200 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{admin} never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Connects the first socket of `client` to `group` and waits for its own
/// presence join, which proves the router has the socket's subscriptions.
pub async fn join_group(
    edge: SocketAddr,
    tenant: &str,
    group: &str,
    client: &str,
    scope: Option<&str>,
) -> crate::WsClient {
    let token = token(client, "client", tenant, scope);
    let mut ws = crate::WsClient::open(&group_url(edge, group, client, &token)).await;
    ws.recv_json_until(|m| {
        m["msg_type"] == "presence"
            && m["payload"]["event"] == "join"
            && m["payload"]["client_id"] == client
    })
    .await;
    ws
}

/// Sends group messages tagged `tag` from `from` until one reaches `to`,
/// for when ownership is moving and early ones may be lost; returns how
/// many were sent. Panics after 30 s.
pub async fn until_one_crosses(
    from: &mut crate::WsClient,
    to: &mut crate::WsClient,
    tag: &str,
) -> usize {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut sent = 0;
    loop {
        sent += 1;
        let text = format!("{tag}-{sent}");
        from.send_json(&serde_json::json!({"msg_type":"msg","target":"group","msg":text}))
            .await;
        if let Some(crate::ws::Event::Text(got)) = to.recv(std::time::Duration::from_secs(2)).await
            && got.contains(tag)
        {
            return sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tag}: no group message crossed"
        );
    }
}

/// Proves that group socket `ws` (in `group` of `tenant`) got nothing since
/// it was last read but its group's presence: a group message sent through
/// the server API `api` (the path a leak would take) must be the next
/// thing it receives. Every socket of that group gets the sentinel too.
pub async fn group_sentinel(
    api: SocketAddr,
    tenant: &str,
    group: &str,
    ws: &mut crate::WsClient,
) -> serde_json::Value {
    let text = format!("sentinel-{}", sentinel_number());
    let auth = format!("Bearer {API_KEY}");
    let reply = crate::http::post_json(
        api,
        &format!("/api/v1/groups/{group}/messages"),
        &[("authorization", &auth), ("x-tenant", tenant)],
        &serde_json::json!({"msg_type":"msg","target":"group","msg":text}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let first = ws
        .recv_json_skipping(|m| {
            m["msg_type"] == "presence" && m["target"] == "group" && m["group_id"] == group
        })
        .await;
    assert_eq!(
        first["msg"], text,
        "received something before its sentinel: {first}"
    );
    first
}

fn sentinel_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
