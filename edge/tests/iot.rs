//! The IoT dialect end to end: a real WebSocket client subscribes, the
//! server API (HTTP, and NATS in a cluster) pushes events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_testkit::http::{self, Reply};
use switchboard_testkit::switchboard::{self, token};
use switchboard_testkit::{Process, WsClient};

const ROUTE: &str = "/api/v1/system/common/websocket/connect";
/// Numbers each sentinel device, so no two sentinels match each other.
static SENTINELS: AtomicUsize = AtomicUsize::new(0);

struct Env {
    process: Process,
}

impl Env {
    async fn start() -> Self {
        let process = switchboard::standalone(&[]);
        switchboard::wait_ready(process.addr("edge-admin")).await;
        Self { process }
    }

    fn edge(&self) -> SocketAddr {
        self.process.addr("edge")
    }

    fn api(&self) -> SocketAddr {
        self.process.addr("router-api")
    }

    async fn connect(&self, tenant: &str, project: Option<&str>) -> WsClient {
        connect(self.edge(), tenant, project).await
    }

    async fn push(&self, tenant: &str, event: &Value) -> Reply {
        let auth = format!("Bearer {}", token("iot_backend", "service", tenant, None));
        http::post_json(
            self.api(),
            "/api/v1/iot/events",
            &[("authorization", &auth)],
            event,
        )
        .await
    }
}

/// Connects and reads the handshake.
async fn connect(edge: SocketAddr, tenant: &str, project: Option<&str>) -> WsClient {
    let token = token("user_1", "user", tenant, None);
    let mut url = format!("ws://{edge}{ROUTE}?app-code=console&token={token}");
    if let Some(project) = project {
        url.push_str(&format!("&project-id={project}"));
    }
    let mut ws = WsClient::open(&url).await;
    let hello = ws.recv_json().await;
    assert_eq!(hello["code"], 200, "{hello}");
    ws
}

async fn request(ws: &mut WsClient, kind: &str, body: Value) -> Value {
    ws.send_json(&json!({"type": kind, "body": body, "handler": {"req": kind}}))
        .await;
    let reply = ws.recv_json().await;
    assert_eq!(
        reply["handler"],
        json!({"req": kind}),
        "handler echoed: {reply}"
    );
    reply
}

async fn subscribe(ws: &mut WsClient, code: &str, params: Value) {
    let reply = request(ws, "up.sub", json!({"code": code, "params": params})).await;
    assert_eq!(
        (reply["code"].as_u64(), reply["type"].as_str()),
        (Some(200), Some("down.subRet")),
        "{reply}"
    );
}

fn device_event(code: &str, extra: Value) -> Value {
    let mut body =
        json!({"device":{"productID":"prod_1","deviceName":"dev_1"},"timestamp":"1700000000000"});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    json!({"code": code, "projectID": "proj_1", "areaID": "area_1", "body": body})
}

/// Proves that `ws` (of `tenant`) got nothing since it was last read: it
/// subscribes to a device of its own, an event of that device is pushed
/// through the server API (the path a leak would take), and that event
/// must be the first thing it receives.
async fn sentinel(env: &Env, tenant: &str, ws: &mut WsClient) {
    let device = format!("sentinel_{}", SENTINELS.fetch_add(1, Ordering::Relaxed));
    let params = json!({"productID":"sentinel","deviceName":device});
    ws.send_json(&json!({"type":"up.sub","body":{"code":"deviceOtaReport","params":params}}))
        .await;
    let first = ws.recv_json().await;
    assert_eq!(
        (first["type"].as_str(), first["code"].as_u64()),
        (Some("down.subRet"), Some(200)),
        "received something before its sentinel: {first}"
    );
    let event = json!({"code":"deviceOtaReport","body":{"device":params,"step":"sentinel"}});
    assert_eq!(env.push(tenant, &event).await.json()["delivered"], 1);
    let first = ws.recv_json().await;
    assert_eq!(
        (
            first["path"].as_str(),
            first["body"]["device"]["deviceName"].as_str()
        ),
        (Some("deviceOtaReport"), Some(device.as_str())),
        "received something before its sentinel: {first}"
    );
}

#[tokio::test]
async fn handshake_and_connect_refusals() {
    let env = Env::start().await;
    let edge = env.edge();
    let good = token("user_1", "user", "t1", None);
    let hello = {
        let url = format!("ws://{edge}{ROUTE}?app-code=c&token={good}");
        let mut ws = WsClient::open(&url).await;
        ws.recv_json().await
    };
    assert_eq!(hello["msg"], "成功");
    let trace = hello["handler"]["Traceparent"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    let connect_id = hello["handler"]["connectID"].as_str().unwrap().to_owned();
    let token_again = token("user_1", "user", "t1", None);
    let mut again = WsClient::open(&format!(
        "ws://{edge}{ROUTE}?app-code=c&token={token_again}"
    ))
    .await;
    let second = again.recv_json().await;
    assert!(connect_id.starts_with("standalone-"), "{connect_id}");
    assert_ne!(
        second["handler"]["connectID"].as_str(),
        Some(connect_id.as_str()),
        "ids are unique"
    );
    assert_ne!(
        second["handler"]["Traceparent"],
        hello["handler"]["Traceparent"]
    );

    let cases = [
        (format!("ws://{edge}{ROUTE}?token={good}"), 400),
        (format!("ws://{edge}{ROUTE}?app-code=c"), 400),
        (format!("ws://{edge}{ROUTE}?app-code=c&token=bad"), 401),
        (
            format!("ws://{edge}{ROUTE}?app-code=c&token={good}&tenant-code=other"),
            401,
        ),
    ];
    for (url, status) in cases {
        let refused = WsClient::connect(&url).await.err().expect("refused");
        assert_eq!(refused.status, status, "{url}");
        assert_eq!(refused.body["code"], status, "{url}: {:?}", refused.body);
        assert!(refused.body["msg"].is_string());
    }
}

#[tokio::test]
async fn parameters_from_headers_and_traceparent() {
    let env = Env::start().await;
    let token = token("user_1", "user", "t1", None);
    let url = format!("ws://{}{ROUTE}", env.edge());
    let headers = [
        ("app-code", "console"),
        ("token", token.as_str()),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let mut socket = WsClient::connect_with_headers(&url, &headers)
        .await
        .expect("upgrade");
    let hello = socket.recv_json().await;
    assert_eq!(
        hello["handler"]["Traceparent"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[tokio::test]
async fn every_code_and_shape_delivers() {
    let env = Env::start().await;
    let shapes = [
        json!({"productID":"prod_1","deviceName":"dev_1"}),
        json!({"projectID":"proj_1"}),
        json!({"projectID":"proj_1","areaID":"area_1"}),
    ];
    for code in [
        "devicePropertyReport",
        "devicePropertyReportV2",
        "devicePublish",
        "deviceActionReport",
        "deviceConn",
        "deviceOtaReport",
    ] {
        for (n, shape) in shapes.iter().enumerate() {
            // A tenant per case: the socket of the case before may still be
            // subscribed at the router for a moment after it closed, and
            // the same event matches every shape.
            let tenant = format!("t-{code}-{n}");
            let mut ws = env.connect(&tenant, None).await;
            subscribe(&mut ws, code, shape.clone()).await;
            let event = device_event(code, json!({"identifier":"power","params":{"power":1}}));
            let reply = env.push(&tenant, &event).await;
            assert_eq!(reply.json(), json!({"delivered": 1}), "{code} {shape}");
            let push = ws.recv_json().await;
            assert_eq!(push["type"], "down.pub");
            assert_eq!(push["path"], code);
            assert_eq!(push["code"], 200);
            assert_eq!(push["body"], event["body"]);
        }
    }
}

#[tokio::test]
async fn property_shape_matches_identifier_and_v2_param_keys() {
    let env = Env::start().await;
    let mut power = env.connect("t1", None).await;
    subscribe(
        &mut power,
        "devicePropertyReport",
        json!({"productID":"prod_1","deviceName":"dev_1","identifier":"power"}),
    )
    .await;
    let mut color = env.connect("t1", None).await;
    subscribe(
        &mut color,
        "devicePropertyReport",
        json!({"productID":"prod_1","deviceName":"dev_1","identifier":"color"}),
    )
    .await;
    let reply = env
        .push(
            "t1",
            &device_event(
                "devicePropertyReport",
                json!({"identifier":"power","param":{"power":1}}),
            ),
        )
        .await;
    assert_eq!(reply.json()["delivered"], 1);
    assert_eq!(power.recv_json().await["body"]["identifier"], "power");
    sentinel(&env, "t1", &mut color).await;

    let mut v2 = env.connect("t1", None).await;
    subscribe(
        &mut v2,
        "devicePropertyReportV2",
        json!({"productID":"prod_1","deviceName":"dev_1","identifier":"brightness"}),
    )
    .await;
    let reply = env
        .push(
            "t1",
            &device_event(
                "devicePropertyReportV2",
                json!({"params":{"color":1,"brightness":32}}),
            ),
        )
        .await;
    assert_eq!(reply.json()["delivered"], 1);
    assert_eq!(v2.recv_json().await["body"]["params"]["brightness"], 32);
    let reply = env
        .push(
            "t1",
            &device_event("devicePropertyReportV2", json!({"params":{"color":2}})),
        )
        .await;
    assert_eq!(reply.json()["delivered"], 0);
}

#[tokio::test]
async fn one_copy_per_socket_and_no_double_subscriptions() {
    let env = Env::start().await;
    let mut ws = env.connect("t1", None).await;
    let code = "devicePropertyReport";
    subscribe(
        &mut ws,
        code,
        json!({"productID":"prod_1","deviceName":"dev_1"}),
    )
    .await;
    subscribe(
        &mut ws,
        code,
        json!({"productID":"prod_1","deviceName":"dev_1"}),
    )
    .await;
    subscribe(
        &mut ws,
        code,
        json!({"productID":"prod_1","deviceName":"dev_1","identifier":"power"}),
    )
    .await;
    subscribe(&mut ws, code, json!({"projectID":"proj_1"})).await;
    subscribe(
        &mut ws,
        code,
        json!({"projectID":"proj_1","areaID":"area_1"}),
    )
    .await;
    let reply = env
        .push("t1", &device_event(code, json!({"identifier":"power"})))
        .await;
    assert_eq!(reply.json(), json!({"delivered": 1}));
    assert_eq!(ws.recv_json().await["type"], "down.pub");
    sentinel(&env, "t1", &mut ws).await;
}

#[tokio::test]
async fn unsubscribe_and_close_remove_subscriptions() {
    let env = Env::start().await;
    let mut ws = env.connect("t1", None).await;
    let params = json!({"productID":"prod_1","deviceName":"dev_1"});
    subscribe(&mut ws, "deviceConn", params.clone()).await;
    let reply = request(
        &mut ws,
        "up.unSub",
        json!({"code":"deviceConn","params":params}),
    )
    .await;
    assert_eq!(
        (reply["code"].as_u64(), reply["type"].as_str()),
        (Some(200), Some("down.unSubRet"))
    );
    let event = device_event("deviceConn", json!({}));
    assert_eq!(env.push("t1", &event).await.json()["delivered"], 0);
    sentinel(&env, "t1", &mut ws).await;

    let mut gone = env.connect("t1", None).await;
    subscribe(&mut gone, "deviceConn", json!({"projectID":"proj_1"})).await;
    assert_eq!(env.push("t1", &event).await.json()["delivered"], 1);
    gone.close().await;
    drop(gone);
    // The close reaches the router in its own time: wait for its effect.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.push("t1", &event).await.json()["delivered"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed socket kept its subscriptions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn errors_of_the_spec() {
    let env = Env::start().await;
    let mut ws = env.connect("t1", Some("proj_1")).await;
    let cases = [
        (
            json!({"code":"deviceFly","params":{"projectID":"proj_1"}}),
            400,
        ),
        (json!({"code":"deviceConn","params":{"productID":"p"}}), 400),
        (
            json!({"code":"deviceConn","params":{"productID":"p","deviceName":"d","identifier":"i"}}),
            400,
        ),
        (json!({"code":"deviceConn"}), 400),
        (json!("flat"), 400),
        (
            json!({"code":"deviceConn","params":{"projectID":"proj_2"}}),
            403,
        ),
        (
            json!({"code":"deviceConn","params":{"projectID":"proj_2","areaID":"a"}}),
            403,
        ),
    ];
    for (body, code) in cases {
        let reply = request(&mut ws, "up.sub", body.clone()).await;
        assert_eq!(reply["code"], code, "{body}");
        assert_eq!(reply["type"], "down.subRet");
        assert!(reply["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for text in [
        "not json",
        "[1]",
        r#"{"type":"up.dance"}"#,
        r#"{"body":{}}"#,
    ] {
        ws.send_text(text).await;
        let reply = ws.recv_json().await;
        assert_eq!(reply["code"], 400, "{text}");
        assert!(reply.get("type").is_none(), "{text}: {reply}");
    }
    let pong = request(&mut ws, "up.ping", Value::Null).await;
    assert_eq!(
        (pong["code"].as_u64(), pong["type"].as_str()),
        (Some(200), Some("down.pong"))
    );
    // Its own project is fine, and so are device shapes.
    subscribe(&mut ws, "deviceConn", json!({"projectID":"proj_1"})).await;
    subscribe(
        &mut ws,
        "deviceConn",
        json!({"productID":"p","deviceName":"d"}),
    )
    .await;
}

#[tokio::test]
async fn subscription_limit_is_429() {
    let process = switchboard::standalone(&["--max-subscriptions", "2"]);
    switchboard::wait_ready(process.addr("edge-admin")).await;
    let mut ws = connect(process.addr("edge"), "t1", None).await;
    subscribe(&mut ws, "deviceConn", json!({"projectID":"a"})).await;
    subscribe(&mut ws, "deviceConn", json!({"projectID":"b"})).await;
    let reply = request(
        &mut ws,
        "up.sub",
        json!({"code":"deviceConn","params":{"projectID":"c"}}),
    )
    .await;
    assert_eq!(reply["code"], 429);
}

/// A parameter over 128 bytes is refused before anything is stored, and
/// the socket goes on: one of exactly 128 bytes is taken and delivered to.
#[tokio::test]
async fn subscription_parameters_over_128_bytes_are_refused() {
    let env = Env::start().await;
    let mut ws = env.connect("t1", None).await;
    let long = "p".repeat(129);
    let reply = request(
        &mut ws,
        "up.sub",
        json!({"code":"deviceConn","params":{"projectID": long}}),
    )
    .await;
    assert_eq!(reply["code"], 400, "{reply}");
    let edge = "q".repeat(128);
    subscribe(&mut ws, "deviceConn", json!({"projectID": edge})).await;
    let mut event = device_event("deviceConn", json!({}));
    event["projectID"] = json!(edge);
    let reply = env.push("t1", &event).await;
    assert_eq!(reply.json()["delivered"], 1);
    assert_eq!(ws.recv_json().await["path"], "deviceConn");
}

#[tokio::test]
async fn tenants_are_isolated() {
    let env = Env::start().await;
    let mut a = env.connect("tenant_a", None).await;
    let mut b = env.connect("tenant_b", None).await;
    for ws in [&mut a, &mut b] {
        subscribe(ws, "deviceConn", json!({"projectID":"proj_1"})).await;
    }
    let reply = env
        .push("tenant_a", &device_event("deviceConn", json!({})))
        .await;
    assert_eq!(reply.json()["delivered"], 1);
    a.recv_json().await;
    sentinel(&env, "tenant_b", &mut b).await;
    sentinel(&env, "tenant_a", &mut a).await;
}

#[tokio::test]
async fn ingestion_validation_names_the_field() {
    let env = Env::start().await;
    let cases = [
        (
            json!({"body":{"device":{"productID":"p","deviceName":"d"}}}),
            "code",
        ),
        (json!({"code":"deviceConn"}), "body"),
        (
            json!({"code":"deviceConn","body":{"device":{"deviceName":"d"}}}),
            "body.device.productID",
        ),
        (
            json!({"code":"devicePropertyReport","body":{"device":{"productID":"p","deviceName":"d"}}}),
            "body.identifier",
        ),
        (
            json!({"code":"deviceConn","areaID":"a","body":{"device":{"productID":"p","deviceName":"d"}}}),
            "projectID",
        ),
    ];
    for (event, field) in cases {
        let reply = env.push("t1", &event).await;
        assert_eq!(reply.status, 400, "{event}");
        assert_eq!(reply.json()["error"]["field"], field, "{event}");
    }
}
