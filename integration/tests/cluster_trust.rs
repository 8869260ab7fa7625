//! The internal plane plays the attacker's part with real processes: a raw
//! gRPC client or NATS connection that cannot prove the cluster secret (or
//! present a certificate of the cluster's CA) gets nothing and injects
//! nothing; a second session for a live edge id is refused and the live
//! edge keeps its deliveries; processes refuse to start unprotected.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message;
use serde_json::json;
use switchboard_cluster::nats_session::{REFUSED, SESSION_HEADER, VERDICT_HEADER, hello_binding};
use switchboard_cluster::subjects::{
    announce_subject, edge_subject, forward_subject, leave_subject, router_subject,
};
use switchboard_cluster::trust::forward_binding;
use switchboard_common::trust::session::{MAC_HEADER, SEQ_HEADER};
use switchboard_common::trust::{ClusterSecret, PEER_HEADER, PROOF_HEADER, Purpose, bound_peer};
use switchboard_proto::router_client::RouterClient;
use switchboard_proto::{
    ConnectionOpened, Dialect, EdgeFrame, Heartbeat, Hello, Payload, Publish, Request, RouterFrame,
    Subscribe, Topic, edge_frame, payload, request, router_frame,
};
use switchboard_testkit::cluster::{Cluster, scrape};
use switchboard_testkit::http::metric;
use switchboard_testkit::nats::proven_headers;
use switchboard_testkit::switchboard::{self, CLUSTER_SECRET, join_group};
use switchboard_testkit::tls::TestCa;
use switchboard_testkit::{WsClient, binary};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const PREFIX: &str = "switchboard";

fn right() -> ClusterSecret {
    ClusterSecret::parse(CLUSTER_SECRET).unwrap()
}

fn wrong() -> ClusterSecret {
    ClusterSecret::parse("not-the-cluster-secret-at-all").unwrap()
}

fn refusals(text: &str, plane: &str, purpose: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!(
            "switchboard_cluster_auth_refused_total{{plane=\"{plane}\",purpose=\"{purpose}\",reason=\"{reason}\"}}"
        ),
    )
}

/// Waits until `admin`'s metrics satisfy `ok`, and returns them.
async fn metrics_until(admin: SocketAddr, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = scrape(admin).await;
        if ok(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn group_json(text: &str) -> Payload {
    Payload {
        body: Some(payload::Body::Json(
            serde_json::to_vec(
                &json!({"msg_type":"msg","target":"group","msg":text,"from_id":"x"}),
            )
            .unwrap()
            .into(),
        )),
    }
}

fn publish(tenant: &str, group: &str, text: &str) -> Request {
    Request {
        correlation_id: 0,
        body: Some(request::Body::Publish(Publish {
            topic: Some(Topic::group(tenant, group)),
            payload: Some(group_json(text)),
            from_conn: 0,
            publish_id: String::new(),
        })),
    }
}

/// What an intruder would send after `Hello`: a connection subscribed to
/// the victims' group.
fn eavesdrop_frames(tenant: &str, group: &str) -> Vec<EdgeFrame> {
    vec![
        edge_frame::Body::Opened(ConnectionOpened {
            conn_id: 1,
            tenant: tenant.into(),
            principal: "mallory".into(),
            kind: String::new(),
            dialect: Dialect::Group as i32,
        })
        .into(),
        edge_frame::Body::Subscribe(Subscribe {
            conn_id: 1,
            topic: Some(Topic::group(tenant, group)),
            presence_member: String::new(),
            confirm: 0,
        })
        .into(),
    ]
}

fn with_proof<T>(
    mut request: tonic::Request<T>,
    peer: &str,
    proof: Option<String>,
) -> tonic::Request<T> {
    request
        .metadata_mut()
        .insert(PEER_HEADER, peer.parse().unwrap());
    if let Some(proof) = proof {
        request
            .metadata_mut()
            .insert(PROOF_HEADER, proof.parse().unwrap());
    }
    request
}

async fn client(addr: SocketAddr) -> RouterClient<Channel> {
    RouterClient::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// A raw `Attach`: `Hello` with `hello_id`, then the eavesdropping frames.
async fn attach(
    client: &mut RouterClient<Channel>,
    peer: Option<&str>,
    proof: Option<String>,
    hello_id: &str,
) -> Result<tonic::Streaming<RouterFrame>, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(
        edge_frame::Body::Hello(Hello {
            edge_id: hello_id.into(),
        })
        .into(),
    )
    .await
    .unwrap();
    for frame in eavesdrop_frames("t1", "room") {
        tx.send(frame).await.unwrap();
    }
    // The sender lives on with the stream, so the router does not see it end.
    std::mem::forget(tx);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(peer) = peer {
        request = with_proof(request, peer, proof);
    }
    client
        .attach(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn next_msg(ws: &mut WsClient) -> String {
    let m = ws.recv_json_until(|m| m["msg_type"] == "msg").await;
    m["msg"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn grpc_attach_and_forward_need_a_valid_proof() {
    let router = switchboard::router(&[], &[("SWITCHBOARD_ROUTER_ID", "router-0".into())]);
    let grpc = router.addr("router-grpc");
    let admin = router.addr("router-admin");
    let edge = switchboard::edge(&[grpc], &[]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let mut alice = join_group(edge.addr("edge"), "t1", "room", "alice", None).await;
    let mut bob = join_group(edge.addr("edge"), "t1", "room", "bob", None).await;
    let mut raw = client(grpc).await;

    // No proof at all.
    let status = attach(&mut raw, None, None, "intruder").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // A proof made with another secret.
    let forged = wrong().prove(Purpose::Attach, "intruder");
    let status = attach(&mut raw, Some("intruder"), Some(forged), "intruder")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // A good proof for one id, a Hello claiming another.
    let proof = right().prove(Purpose::Attach, "insider");
    let status = attach(&mut raw, Some("insider"), Some(proof), "someone-else")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // A good proof is accepted once, and refused when replayed.
    let proof = right().prove(Purpose::Attach, "replayer");
    let first = attach(&mut raw, Some("replayer"), Some(proof.clone()), "replayer").await;
    assert!(first.is_ok(), "a valid proof attaches: {:?}", first.err());
    let status = attach(&mut raw, Some("replayer"), Some(proof), "replayer")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    let text = metrics_until(admin, |t| refusals(t, "grpc", "attach", "replayed") >= 1.0).await;
    assert_eq!(refusals(&text, "grpc", "attach", "missing"), 1.0);
    assert_eq!(refusals(&text, "grpc", "attach", "bad_mac"), 1.0);
    assert_eq!(refusals(&text, "grpc", "attach", "peer_mismatch"), 1.0);
    assert_eq!(refusals(&text, "grpc", "attach", "replayed"), 1.0);

    // Forward: injections without a valid proof are refused...
    let status = raw
        .forward(publish("t1", "room", "injected-bare"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    let forged = wrong().prove(Purpose::Forward, "router-x");
    let status = raw
        .forward(with_proof(
            tonic::Request::new(publish("t1", "room", "injected-forged")),
            "router-x",
            Some(forged),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // ...an Attach proof is no Forward proof...
    let attach_proof = right().prove(Purpose::Attach, "router-x");
    let status = raw
        .forward(with_proof(
            tonic::Request::new(publish("t1", "room", "injected-purpose")),
            "router-x",
            Some(attach_proof),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // ...a good proof covers one body for one router: lifted onto another
    // call, or made for another router, it proves nothing...
    let forward_proof = |callee: &str, body: &Request| {
        let bound = bound_peer("router-x", &forward_binding(callee, &body.encode_to_vec()));
        right().prove(Purpose::Forward, &bound)
    };
    let sentinel = publish("t1", "room", "sentinel");
    let status = raw
        .forward(with_proof(
            tonic::Request::new(publish("t1", "room", "injected-lifted")),
            "router-x",
            Some(forward_proof("router-0", &sentinel)),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    let status = raw
        .forward(with_proof(
            tonic::Request::new(sentinel.clone()),
            "router-x",
            Some(forward_proof("router-1", &sentinel)),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // ...and the call with its own valid proof delivers: it is the sentinel.
    raw.forward(with_proof(
        tonic::Request::new(sentinel.clone()),
        "router-x",
        Some(forward_proof("router-0", &sentinel)),
    ))
    .await
    .expect("a proven forward is served");
    assert_eq!(next_msg(&mut bob).await, "sentinel");
    assert_eq!(next_msg(&mut alice).await, "sentinel");
    let text = scrape(admin).await;
    assert_eq!(refusals(&text, "grpc", "forward", "missing"), 1.0);
    assert_eq!(refusals(&text, "grpc", "forward", "bad_mac"), 4.0);
}

#[tokio::test]
async fn a_second_grpc_session_for_a_live_edge_id_is_refused() {
    let router = switchboard::router(&[], &[]);
    let grpc = router.addr("router-grpc");
    let edge = switchboard::edge_with_env(
        &[],
        &[
            ("SWITCHBOARD_ROUTERS", grpc.to_string()),
            ("SWITCHBOARD_EDGE_ID", "edge-live".to_owned()),
        ],
    );
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let mut alice = join_group(edge.addr("edge"), "t1", "room", "alice", None).await;
    let mut bob = join_group(edge.addr("edge"), "t1", "room", "bob", None).await;

    // An insider's mistake: the right secret, the live edge's id.
    let mut raw = client(grpc).await;
    let proof = right().prove(Purpose::Attach, "edge-live");
    let status = attach(&mut raw, Some("edge-live"), Some(proof), "edge-live")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}");
    let text = scrape(router.addr("router-admin")).await;
    assert_eq!(
        metric(&text, "switchboard_router_edge_sessions_refused_total"),
        1.0
    );
    // The live edge still delivers to its sockets.
    alice
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"still here"}))
        .await;
    assert_eq!(next_msg(&mut bob).await, "still here");
}

/// Runs `program` with `env` (and without the cluster secret unless
/// given), expecting it to exit; returns its status and stderr.
fn run_to_exit(program: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(binary(program));
    command
        .args(args)
        .env_remove("SWITCHBOARD_CLUSTER_SECRET")
        .env("SWITCHBOARD_JWT_SECRET", switchboard::SECRET)
        .env("SWITCHBOARD_API_KEY", switchboard::API_KEY)
        .env("SWITCHBOARD_LOG_FORMAT", "text")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const EPHEMERAL: [&str; 6] = switchboard::ROUTER_ARGS;

#[test]
fn unprotected_processes_refuse_to_start() {
    let (ok, stderr) = run_to_exit("router", &EPHEMERAL, &[]);
    assert!(!ok, "a router without the secret or TLS must not start");
    for name in [
        "SWITCHBOARD_CLUSTER_SECRET",
        "SWITCHBOARD_TLS_CERT",
        "--insecure-cluster",
    ] {
        assert!(stderr.contains(name), "{name} not named: {stderr}");
    }
    let edge_args = ["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"];
    let (ok, stderr) = run_to_exit(
        "edge",
        &edge_args,
        &[("SWITCHBOARD_ROUTERS", "127.0.0.1:1")],
    );
    assert!(!ok, "an edge without the secret or TLS must not start");
    assert!(
        stderr.contains("SWITCHBOARD_CLUSTER_SECRET") && stderr.contains("SWITCHBOARD_TLS_CA"),
        "{stderr}"
    );
    // Half of TLS names the missing half, even with the insecure flag.
    let (ok, stderr) = run_to_exit(
        "router",
        &[&EPHEMERAL[..], &["--insecure-cluster"]].concat(),
        &[("SWITCHBOARD_TLS_CERT", "/nonexistent/cert.pem")],
    );
    assert!(!ok);
    assert!(
        stderr.contains("SWITCHBOARD_TLS_KEY and SWITCHBOARD_TLS_CA missing"),
        "{stderr}"
    );
    // A short secret is refused, naming the variable.
    let (ok, stderr) = run_to_exit(
        "router",
        &EPHEMERAL,
        &[("SWITCHBOARD_CLUSTER_SECRET", "short")],
    );
    assert!(!ok);
    assert!(stderr.contains("SWITCHBOARD_CLUSTER_SECRET"), "{stderr}");
    // Mutual TLS covers gRPC only: with NATS in use (membership, or the
    // NATS transport) the secret is required too, for edges and routers.
    let ca = TestCa::new("nats-needs-secret");
    for (program, args, transport) in [
        ("router", &EPHEMERAL[..], "grpc"),
        ("edge", &edge_args[..], "grpc"),
    ] {
        let tls = ca.issue(program).env();
        let mut env: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:1"));
        env.push(("SWITCHBOARD_TRANSPORT", transport));
        let (ok, stderr) = run_to_exit(program, args, &env);
        assert!(
            !ok,
            "{program} over {transport}: TLS alone with NATS started"
        );
        assert!(
            stderr.contains("SWITCHBOARD_CLUSTER_SECRET") && stderr.contains("NATS"),
            "{program} over {transport}: {stderr}"
        );
    }
}

/// Starts `program`, waits for `listener`, and returns what it logged on
/// stderr until then (the process is killed on return).
fn started_with_log(program: &str, args: &[&str], listener: &str) -> String {
    let mut child = Command::new(binary(program))
        .args(args)
        .env_remove("SWITCHBOARD_CLUSTER_SECRET")
        .env("SWITCHBOARD_JWT_SECRET", switchboard::SECRET)
        .env("SWITCHBOARD_API_KEY", switchboard::API_KEY)
        .env("SWITCHBOARD_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.push(line);
        }
        lines.join("\n")
    });
    let mut listening = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with(&format!("listening {listener} ")) {
            listening = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap();
    assert!(listening, "{program} did not start: {log}");
    log
}

#[test]
fn the_insecure_flag_starts_and_warns_and_standalone_needs_nothing() {
    let log = started_with_log(
        "router",
        &[&EPHEMERAL[..], &["--insecure-cluster"]].concat(),
        "router-admin",
    );
    assert!(
        log.contains("WARN") && log.contains("INSECURE CLUSTER"),
        "{log}"
    );
    let log = started_with_log(
        "edge",
        &[
            "--addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--routers",
            "127.0.0.1:1",
            "--insecure-cluster",
        ],
        "edge-admin",
    );
    assert!(log.contains("INSECURE CLUSTER"), "{log}");
    let log = started_with_log("switchboard", &switchboard::STANDALONE_ARGS, "router-admin");
    assert!(!log.contains("INSECURE"), "{log}");
}

fn tls_client_config(
    cert: Option<&switchboard_testkit::tls::TestCert>,
    ca_pem: &str,
) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match cert {
        Some(cert) => {
            let (cert, key, _) = cert.pems();
            config.identity(Identity::from_pem(cert, key))
        }
        None => config,
    }
}

/// A raw TLS attach; `Err` when the connection or the call is refused.
async fn tls_attach(
    addr: SocketAddr,
    config: ClientTlsConfig,
    edge_id: &str,
    proven: bool,
) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = RouterClient::new(channel);
    let proof = proven.then(|| right().prove(Purpose::Attach, edge_id));
    let mut stream = attach(&mut raw, Some(edge_id), proof, edge_id)
        .await
        .map_err(|e| e.to_string())?;
    // A session is up: the router answers a request on it. With TLS 1.3 a
    // refused client certificate may only show here.
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(Err(status))) => Err(status.to_string()),
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_cluster_delivers_and_refuses_strangers() {
    // Two routers (NATS membership, which needs the secret as well) and two
    // edges, mutual TLS on gRPC: a peer must hold both.
    let ca = TestCa::new("cluster");
    let nats = switchboard_testkit::NatsServer::start().await;
    let mut routers = Vec::new();
    for i in 0..2 {
        let mut env = ca.issue(&format!("router-{i}")).env();
        env.push(("SWITCHBOARD_NATS_URL", nats.url()));
        env.push(("SWITCHBOARD_ROUTER_ID", format!("router-{i}")));
        routers.push(switchboard::router(&[], &env));
    }
    let grpc = routers[0].addr("router-grpc");
    let mut edges = Vec::new();
    for name in ["edge-a", "edge-b"] {
        let mut env = ca.issue(name).env();
        env.push(("SWITCHBOARD_NATS_URL", nats.url()));
        env.push(("SWITCHBOARD_EDGE_ID", name.to_owned()));
        edges.push(switchboard::edge_with_env(&[], &env));
    }
    for edge in &edges {
        metrics_until(edge.addr("edge-admin"), |t| {
            metric(t, "switchboard_edge_router_links_up") == 2.0
        })
        .await;
    }
    for router in &routers {
        metrics_until(router.addr("router-admin"), |t| {
            metric(t, "switchboard_live_routers") == 2.0
        })
        .await;
    }
    let service = format!(
        "Bearer {}",
        switchboard::token("backend", "service", "t1", None)
    );
    for i in 0..6 {
        let group = format!("room_{i}");
        let mut alice = join_group(edges[0].addr("edge"), "t1", &group, "alice", None).await;
        let mut bob = join_group(edges[1].addr("edge"), "t1", &group, "bob", None).await;
        alice
            .send_json(&json!({"msg_type":"msg","target":"group","msg":"over mTLS"}))
            .await;
        assert_eq!(next_msg(&mut bob).await, "over mTLS");
        assert_eq!(next_msg(&mut alice).await, "over mTLS", "the sender's copy");
        // Through either router's API: the one that does not own the group
        // forwards over mutual TLS.
        for router in &routers {
            let reply = switchboard_testkit::http::post_json(
                router.addr("router-api"),
                &format!("/api/v1/groups/{group}/messages"),
                &[("authorization", &service)],
                &json!({"msg_type":"msg","target":"group","msg":"from api"}),
            )
            .await;
            assert_eq!(reply.json(), json!({"delivered": 2}), "{group}");
            assert_eq!(next_msg(&mut alice).await, "from api");
            assert_eq!(next_msg(&mut bob).await, "from api");
        }
    }
    let mut forwarded = 0.0;
    for router in &routers {
        let text = scrape(router.addr("router-admin")).await;
        forwarded += metric(&text, "switchboard_router_forwarded_total");
        assert_eq!(
            metric(&text, "switchboard_router_forward_errors_total"),
            0.0
        );
    }
    assert!(forwarded > 0.0, "no call crossed routers");

    let ca_pem = std::fs::read_to_string(&ca.ca).unwrap();
    // Plain text: no TLS at all.
    let mut plain = RouterClient::new(
        Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_lazy(),
    );
    assert!(attach(&mut plain, None, None, "plain").await.is_err());
    // TLS without a client certificate.
    let refused = tls_attach(grpc, tls_client_config(None, &ca_pem), "no-cert", true).await;
    assert!(refused.is_err(), "a client without a certificate attached");
    // A certificate from another CA.
    let other = TestCa::new("other");
    let stranger = other.issue("stranger");
    let refused = tls_attach(
        grpc,
        tls_client_config(Some(&stranger), &ca_pem),
        "stranger",
        true,
    )
    .await;
    assert!(refused.is_err(), "a certificate of another CA attached");
    // A certificate of the cluster's CA without a proof of the secret.
    let member = ca.issue("member");
    let refused = tls_attach(
        grpc,
        tls_client_config(Some(&member), &ca_pem),
        "member",
        false,
    )
    .await;
    assert!(refused.is_err(), "a certificate alone attached");
    // With both, the same client is let in.
    tls_attach(
        grpc,
        tls_client_config(Some(&member), &ca_pem),
        "member",
        true,
    )
    .await
    .expect("a certificate of the cluster's CA and a proof attach");
}

/// The router's frames to `edge_id` on NATS, decoded, with the verdict
/// header when there is one.
async fn next_nats(sub: &mut async_nats::Subscriber) -> (Option<RouterFrame>, Option<String>) {
    let message = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the router answers on NATS")
        .expect("subscription open");
    let verdict = message
        .headers
        .as_ref()
        .and_then(|h| h.get(VERDICT_HEADER))
        .map(|v| v.as_str().to_owned());
    if verdict.is_some() {
        return (None, verdict);
    }
    (RouterFrame::decode(message.payload).ok(), None)
}

fn is_reset(frame: &Option<RouterFrame>) -> bool {
    matches!(
        frame.as_ref().and_then(|f| f.body.as_ref()),
        Some(router_frame::Body::Reset(_))
    )
}

async fn publish_frame(
    nats: &async_nats::Client,
    subject: String,
    frame: EdgeFrame,
    headers: Option<async_nats::HeaderMap>,
) {
    let body = frame.encode_to_vec();
    match headers {
        Some(headers) => {
            nats.publish_with_headers(subject, headers, body.into())
                .await
        }
        None => nats.publish(subject, body.into()).await,
    }
    .unwrap();
    nats.flush().await.unwrap();
}

fn hello(edge_id: &str) -> EdgeFrame {
    edge_frame::Body::Hello(Hello {
        edge_id: edge_id.into(),
    })
    .into()
}

/// An unproven (or falsely proven) `Hello` opens no session: the router
/// answers the intruder's next frame with `Reset`, never a verdict or a
/// delivery.
async fn intrude(
    nats: &async_nats::Client,
    edge_id: &str,
    headers: Option<async_nats::HeaderMap>,
    alice: &mut WsClient,
    bob: &mut WsClient,
    text: &str,
) {
    let to_router = router_subject(PREFIX, "router-0", edge_id);
    let mut from_router = nats
        .subscribe(edge_subject(PREFIX, edge_id, "router-0"))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    publish_frame(nats, to_router.clone(), hello(edge_id), headers).await;
    publish_frame(
        nats,
        to_router.clone(),
        edge_frame::Body::Heartbeat(Heartbeat {}).into(),
        None,
    )
    .await;
    let (frame, verdict) = next_nats(&mut from_router).await;
    assert!(
        verdict.is_none() && is_reset(&frame),
        "no session: {frame:?} {verdict:?}"
    );
    for frame in eavesdrop_frames("t1", "room") {
        publish_frame(nats, to_router.clone(), frame, None).await;
    }
    alice
        .send_json(&json!({"msg_type":"msg","target":"group","msg":text}))
        .await;
    assert_eq!(next_msg(bob).await, text);
    // Everything up to the router's answer to this last frame is a Reset.
    publish_frame(
        nats,
        to_router,
        edge_frame::Body::Heartbeat(Heartbeat {}).into(),
        None,
    )
    .await;
    for _ in 0..3 {
        let (frame, verdict) = next_nats(&mut from_router).await;
        assert!(
            verdict.is_none() && is_reset(&frame),
            "leaked: {frame:?} {verdict:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_hellos_forwards_and_announcements_need_proofs() {
    let cluster = Cluster::start("nats", 1, 1).await;
    let router_admin = cluster.routers[0].addr("router-admin");
    let edge_admin = cluster.edges[0].addr("edge-admin");
    let mut alice = join_group(cluster.edge(0), "t1", "room", "alice", None).await;
    let mut bob = join_group(cluster.edge(0), "t1", "room", "bob", None).await;
    let nats = async_nats::connect(cluster.nats.url()).await.unwrap();

    // Hello without any proof, then with one made from the wrong secret.
    intrude(&nats, "intruder", None, &mut alice, &mut bob, "m1").await;
    let body = hello("intruder2").encode_to_vec();
    let forged = proven_headers(&wrong(), Purpose::Attach, "intruder2", &body);
    intrude(&nats, "intruder2", Some(forged), &mut alice, &mut bob, "m2").await;
    let text = scrape(router_admin).await;
    assert_eq!(refusals(&text, "nats", "attach", "missing"), 1.0);
    assert_eq!(refusals(&text, "nats", "attach", "bad_mac"), 1.0);

    // An insider's Hello with the live edge's id is refused; the live edge
    // keeps its session and its deliveries.
    let body = hello("edge-0").encode_to_vec();
    let insider_session = format!("{:032x}", 0xfeed_u128);
    let bound = hello_binding(&body, &insider_session);
    let mut headers = proven_headers(&right(), Purpose::Attach, "edge-0", &bound);
    headers.insert(SESSION_HEADER, insider_session.as_str());
    let mut verdicts = nats
        .subscribe(edge_subject(PREFIX, "edge-0", "router-0"))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    publish_frame(
        &nats,
        router_subject(PREFIX, "router-0", "edge-0"),
        hello("edge-0"),
        Some(headers),
    )
    .await;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), verdicts.next())
            .await
            .expect("a verdict")
            .unwrap();
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        if header(SESSION_HEADER).as_deref() == Some(insider_session.as_str()) {
            assert_eq!(header(VERDICT_HEADER).as_deref(), Some(REFUSED));
            break;
        }
    }
    alice
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"m3"}))
        .await;
    assert_eq!(next_msg(&mut bob).await, "m3");
    let text = scrape(router_admin).await;
    assert_eq!(
        metric(&text, "switchboard_router_edge_sessions_refused_total"),
        1.0
    );

    // A forwarded request without a proof is answered with an error and
    // delivers nothing; the sentinel after it arrives first.
    let reply = nats
        .request(
            forward_subject(PREFIX, "router-0"),
            publish("t1", "room", "injected").encode_to_vec().into(),
        )
        .await
        .unwrap();
    let response = switchboard_proto::Response::decode(reply.payload).unwrap();
    assert_ne!(response.error, 0, "an unproven forward must fail");
    assert_eq!(response.delivered, 0);
    let body = publish("t1", "room", "sentinel").encode_to_vec();
    // A good proof for another router is refused here.
    let elsewhere = proven_headers(
        &right(),
        Purpose::Forward,
        "router-x",
        &forward_binding("router-1", &body),
    );
    let reply = nats
        .request_with_headers(
            forward_subject(PREFIX, "router-0"),
            elsewhere,
            body.clone().into(),
        )
        .await
        .unwrap();
    let response = switchboard_proto::Response::decode(reply.payload).unwrap();
    assert_ne!(response.error, 0, "a forward proven for router-1 must fail");
    let headers = proven_headers(
        &right(),
        Purpose::Forward,
        "router-x",
        &forward_binding("router-0", &body),
    );
    let reply = nats
        .request_with_headers(forward_subject(PREFIX, "router-0"), headers, body.into())
        .await
        .unwrap();
    let response = switchboard_proto::Response::decode(reply.payload).unwrap();
    assert_eq!(response.error, 0, "{}", response.error_message);
    assert_eq!(next_msg(&mut bob).await, "sentinel");

    // Fake announcements and a fake goodbye change no one's view.
    let changes = |t: &str| metric(t, "switchboard_membership_changes_total");
    let router_before = scrape(router_admin).await;
    let edge_before = scrape(edge_admin).await;
    let fake = serde_json::to_vec(&json!({
        "id": "router-fake", "grpc_addr": "127.0.0.1:1", "api_addr": "",
        "pool": "default", "epoch": 1
    }))
    .unwrap();
    nats.publish(announce_subject(PREFIX), fake.clone().into())
        .await
        .unwrap();
    let forged = proven_headers(&wrong(), Purpose::Announce, "router-fake", &fake);
    nats.publish_with_headers(announce_subject(PREFIX), forged, fake.clone().into())
        .await
        .unwrap();
    // A good proof for another router id than the one announced.
    let mismatched = proven_headers(&right(), Purpose::Announce, "router-0", &fake);
    nats.publish_with_headers(announce_subject(PREFIX), mismatched, fake.into())
        .await
        .unwrap();
    nats.publish(leave_subject(PREFIX), "router-0".into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    for admin in [router_admin, edge_admin] {
        let text = metrics_until(admin, |t| {
            refusals(t, "nats", "announce", "missing") >= 2.0
                && refusals(t, "nats", "announce", "bad_mac") >= 1.0
                && refusals(t, "nats", "announce", "peer_mismatch") >= 1.0
        })
        .await;
        assert_eq!(metric(&text, "switchboard_live_routers"), 1.0, "{text}");
    }
    assert_eq!(
        changes(&scrape(router_admin).await),
        changes(&router_before)
    );
    assert_eq!(changes(&scrape(edge_admin).await), changes(&edge_before));
}

/// After a proven `Hello`, every frame of a NATS session is sealed under
/// the session's key: a stranger on the session's subjects can neither
/// inject frames into the router (a connection eavesdropping on a group, a
/// forged message) nor deliver to the edge's sockets, and a forged frame
/// does not keep a session alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_nats_sessions_frames_are_sealed() {
    let cluster = Cluster::start("nats", 1, 1).await;
    let router_admin = cluster.routers[0].addr("router-admin");
    let edge_admin = cluster.edges[0].addr("edge-admin");
    let mut alice = join_group(cluster.edge(0), "t1", "room", "alice", None).await;
    let mut bob = join_group(cluster.edge(0), "t1", "room", "bob", None).await;
    let nats = async_nats::connect(cluster.nats.url()).await.unwrap();
    let to_router = router_subject(PREFIX, "router-0", "edge-0");
    let to_edge = edge_subject(PREFIX, "edge-0", "router-0");
    // Into the router: unsealed, then with a made-up sequence number and MAC.
    let mut forged = async_nats::HeaderMap::new();
    forged.insert(SEQ_HEADER, "1000000");
    forged.insert(MAC_HEADER, "00".repeat(32).as_str());
    let mut injected = eavesdrop_frames("t1", "room");
    injected.push(edge_frame::Body::Request(publish("t1", "room", "injected-upstream")).into());
    for headers in [None, Some(forged.clone())] {
        for frame in &injected {
            publish_frame(&nats, to_router.clone(), frame.clone(), headers.clone()).await;
        }
    }
    // Into the edge: deliveries to every likely connection id.
    let delivery: RouterFrame = router_frame::Body::Delivery(switchboard_proto::Delivery {
        conn_ids: (0..64).collect(),
        payload: Some(group_json("injected-downstream")),
        ..Default::default()
    })
    .into();
    for headers in [None, Some(forged)] {
        let body = delivery.encode_to_vec();
        match headers {
            Some(h) => {
                nats.publish_with_headers(to_edge.clone(), h, body.into())
                    .await
            }
            None => nats.publish(to_edge.clone(), body.into()).await,
        }
        .unwrap();
    }
    nats.flush().await.unwrap();
    let text = metrics_until(router_admin, |t| {
        refusals(t, "nats", "attach", "missing") >= 3.0
            && refusals(t, "nats", "attach", "bad_mac") >= 3.0
    })
    .await;
    assert_eq!(refusals(&text, "nats", "attach", "missing"), 3.0, "{text}");
    metrics_until(edge_admin, |t| {
        refusals(t, "nats", "attach", "missing") >= 1.0
            && refusals(t, "nats", "attach", "bad_mac") >= 1.0
    })
    .await;
    // The session still works, and the sentinel is the first thing either
    // socket hears: nothing injected reached anyone.
    alice
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"sentinel"}))
        .await;
    assert_eq!(next_msg(&mut bob).await, "sentinel");
    assert_eq!(next_msg(&mut alice).await, "sentinel");
}

/// An edge that dies and comes back under the same id is let in again:
/// over gRPC once the router saw the stream end, over NATS once the dead
/// session expired (the refused edge stays silent meanwhile).
async fn a_restarted_edge_recovers_its_id(transport: &str) {
    let mut cluster = Cluster::start(transport, 1, 1).await;
    let mut old = join_group(cluster.edge(0), "t1", "room", "old", None).await;
    old.send_json(&json!({"msg_type":"msg","target":"group","msg":"before"}))
        .await;
    assert_eq!(next_msg(&mut old).await, "before");
    cluster.edges[0].signal("KILL");
    cluster.edges[0].wait_exit(Duration::from_secs(5));
    let edge = switchboard::edge_with_env(
        &[],
        &[
            ("SWITCHBOARD_NATS_URL", cluster.nats.url()),
            ("SWITCHBOARD_TRANSPORT", transport.to_owned()),
            ("SWITCHBOARD_EDGE_ID", "edge-0".to_owned()),
        ],
    );
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    let mut alice = join_group(edge.addr("edge"), "t1", "room", "alice", None).await;
    let mut bob = join_group(edge.addr("edge"), "t1", "room", "bob", None).await;
    alice
        .send_json(&json!({"msg_type":"msg","target":"group","msg":"after"}))
        .await;
    assert_eq!(next_msg(&mut bob).await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_grpc_edge_recovers_its_id() {
    a_restarted_edge_recovers_its_id("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nats_edge_recovers_its_id() {
    a_restarted_edge_recovers_its_id("nats").await;
}

#[test]
fn the_nats_transport_needs_the_secret_even_with_tls() {
    let ca = TestCa::new("nats-only");
    let cert = ca.issue("router");
    let env: Vec<(&str, String)> = cert.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:1"));
    env.push(("SWITCHBOARD_TRANSPORT", "nats"));
    let (ok, stderr) = run_to_exit("router", &EPHEMERAL, &env);
    assert!(!ok, "TLS does not protect NATS sessions");
    assert!(
        stderr.contains("SWITCHBOARD_TRANSPORT=nats")
            && stderr.contains("SWITCHBOARD_CLUSTER_SECRET"),
        "{stderr}"
    );
}
