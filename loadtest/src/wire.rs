//! What virtual users put on the wire, per dialect, and what they make of
//! what comes back. Every measured message carries its send time as `t`
//! (µs since the epoch) so each receipt can be timed.

use serde_json::{Value, json};

use crate::scenario::{Body, Dialect};

/// Padding that brings a message near `size` bytes.
pub fn pad(size: usize, overhead: usize) -> String {
    "x".repeat(size.saturating_sub(overhead))
}

/// Bytes a stamped message spends on things other than padding.
const STAMP_OVERHEAD: usize = 60;

/// Group dialect (`spec/30-groups.md`).
pub mod group {
    use super::*;

    pub fn path(group: &str, client: &str, token: &str) -> String {
        format!("/v3/ws/group/{group}/client/{client}?token={token}")
    }

    /// A message to the sender's group.
    pub fn to_group(stamp: u64, fill: &Fill) -> String {
        json!({"msg_type":"msg","target":"group","payload":fill.payload(stamp)}).to_string()
    }

    /// A message the edge sends back to the sending socket only: the
    /// product's own round trip, with the same validation and completion
    /// as any other message but no routing.
    pub fn echo(stamp: u64, fill: &Fill) -> String {
        json!({"msg_type":"msg","target":"echo","payload":fill.payload(stamp)}).to_string()
    }

    pub fn direct(to: &str, stamp: u64, fill: &Fill) -> String {
        json!({"msg_type":"msg","target":"direct","to_id":to,"payload":fill.payload(stamp)})
            .to_string()
    }

    pub fn heartbeat() -> String {
        r#"{"msg_type":"heartbeat","target":"echo"}"#.to_owned()
    }

    /// The server-API body for `POST /api/v1/groups/{group}/messages`.
    pub fn api_message(stamp: u64, fill: &Fill) -> Value {
        json!({"msg_type":"msg","target":"group","payload":fill.payload(stamp)})
    }
}

/// The baseline's bare frames: JSON only because the client stamps it.
pub mod raw {
    use super::Fill;

    pub fn echo_path() -> String {
        "/echo".to_owned()
    }

    pub fn room_path(room: &str) -> String {
        format!("/broadcast/{room}")
    }

    pub fn message(stamp: u64, fill: &Fill) -> String {
        match fill {
            Fill::Pad(padding) => format!(r#"{{"t":{stamp},"pad":"{padding}"}}"#),
            Fill::Json { text, .. } => format!(r#"{{"t":{stamp},"data":{text}}}"#),
        }
    }

    pub fn heartbeat() -> String {
        r#"{"hb":1}"#.to_owned()
    }
}

/// IoT subscriptions (`spec/20-iot.md`).
pub mod iot {
    use super::*;

    pub fn path(token: &str) -> String {
        format!("/api/v1/system/common/websocket/connect?app-code=bench&token={token}")
    }

    /// Subscribes to one device's published events.
    pub fn subscribe(product: &str, device: &str) -> String {
        json!({"type":"up.sub","body":{"code":"devicePublish","params":{"productID":product,"deviceName":device}}})
            .to_string()
    }

    pub fn ping() -> String {
        r#"{"type":"up.ping"}"#.to_owned()
    }

    /// The server-API body for `POST /api/v1/iot/events`.
    pub fn event(product: &str, device: &str, stamp: u64, fill: &Fill) -> Value {
        let mut body = fill.payload(stamp);
        body["device"] = json!({"productID":product,"deviceName":device});
        json!({"code":"devicePublish","body":body})
    }
}

/// JSON-RPC app sockets (`spec/10-jsonrpc.md`).
pub mod jsonrpc {
    use super::*;

    pub fn app_path(app: &str, tool: &str, token: &str) -> String {
        format!("/v3/wss/{app}/{tool}?token={token}")
    }

    /// A user socket (token `kind=user`).
    pub fn user_path(token: &str) -> String {
        format!("/v3/wss?token={token}")
    }

    pub fn subscribe(channel: &str, id: &str) -> String {
        json!({"jsonrpc":"2.0","method":"subscribe","params":{"channel":channel},"id":id})
            .to_string()
    }

    /// `redis.publish`; the request id is the send time, so the reply
    /// times the publish itself.
    pub fn publish(channel: &str, stamp: u64, fill: &Fill) -> String {
        json!({"jsonrpc":"2.0","method":"redis.publish",
            "params":{"channel":channel,"message":fill.payload(stamp)},
            "id":stamp.to_string()})
        .to_string()
    }
}

/// Instant messages (`spec/40-im.md`).
pub mod im {
    use super::*;

    pub fn login_path(client_name: &str) -> String {
        format!("/api/websocket/client/login/{client_name}")
    }

    pub fn socket_path() -> String {
        "/websocket".to_owned()
    }

    /// The register message (type 1000) for a session.
    pub fn register(user: &str, session: &str) -> String {
        json!({"id":format!("r-{user}"),"type":1000,"isSystem":false,"from":user,"to":user,
            "body":json!({"sessionId":session}).to_string()})
        .to_string()
    }

    /// A text message (2001); its id starts with the send time, so the
    /// send status and the receipt that name it can be timed.
    pub fn text(from: &str, to: &str, seq: u64, stamp: u64, fill: &Fill) -> String {
        json!({"id":format!("{stamp}-{from}-{seq}"),"type":2001,"isSystem":false,
            "from":from,"to":to,"body":fill.text()})
        .to_string()
    }

    /// The receive status (9101) for a received text message.
    pub fn receipt(id: &str, me: &str, sender: &str) -> String {
        json!({"id":id,"type":9101,"isSystem":false,"from":me,"to":sender,
            "body":json!({"code":200,"status":"SUCCESS","msg":"received"}).to_string()})
        .to_string()
    }
}

/// A stamped message with `size` bytes in all, per dialect builder.
pub fn padding_for(size: usize) -> String {
    pad(size, STAMP_OVERHEAD)
}

/// What a publisher puts beside each stamp, built once per publisher.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// Padding, as `"pad":"xxx…"`.
    Pad(String),
    /// A JSON document, as `"data":{…}`, with its text.
    Json { value: Value, text: String },
}

impl From<&str> for Fill {
    fn from(padding: &str) -> Self {
        Fill::Pad(padding.to_owned())
    }
}

impl Fill {
    /// The fill that brings a stamped message near `size` bytes.
    pub fn new(body: Body, size: usize) -> Self {
        match body {
            Body::Pad => Fill::Pad(padding_for(size)),
            Body::Json => {
                let value = json_document(size.saturating_sub(STAMP_OVERHEAD));
                let text = value.to_string();
                Fill::Json { value, text }
            }
        }
    }

    /// The stamped object a dialect's message carries.
    pub fn payload(&self, stamp: u64) -> Value {
        match self {
            Fill::Pad(padding) => json!({"t":stamp,"pad":padding}),
            Fill::Json { value, .. } => json!({"t":stamp,"data":value}),
        }
    }

    /// As a string, for dialects whose message body is text (IM).
    pub fn text(&self) -> &str {
        match self {
            Fill::Pad(padding) => padding,
            Fill::Json { text, .. } => text,
        }
    }
}

/// A JSON document of about `size` bytes shaped like an order event: an
/// account, order lines from a small catalogue, tags and timestamps. The
/// same `size` always gives the same document. It compresses like real
/// JSON (repeated keys, a limited vocabulary, varied numbers and ids),
/// unlike padding; no key is `t`, so the stamp is the only `"t":`.
pub fn json_document(size: usize) -> Value {
    const PRODUCTS: [(&str, f64); 12] = [
        ("Espresso beans, 1 kg", 18.5),
        ("Oat milk, barista edition", 2.49),
        ("Ceramic pour-over dripper", 24.0),
        ("Paper filters (100)", 4.75),
        ("Burr grinder, manual", 59.9),
        ("Gooseneck kettle 1 l", 42.0),
        ("Decaf blend, 500 g", 11.2),
        ("Travel mug, steel", 16.99),
        ("Descaling tablets", 7.5),
        ("Milk frother", 29.95),
        ("Cold brew bottle", 21.0),
        ("Tasting notebook", 6.4),
    ];
    const STATUSES: [&str; 4] = ["paid", "packed", "shipped", "delivered"];
    const TAGS: [&str; 6] = [
        "priority",
        "gift",
        "subscription",
        "eu-west",
        "repeat",
        "promo",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ size as u64;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut doc = json!({
        "event": "order.updated",
        "id": format!("ord_{:08}", next(100_000_000)),
        "account": {
            "id": format!("acct_{:06}", next(1_000_000)),
            "name": "Northwind Traders",
            "tier": "gold",
            "region": "eu-west-1",
        },
        "status": STATUSES[next(4) as usize],
        "currency": "EUR",
        "lines": [],
        "tags": [TAGS[next(6) as usize], TAGS[next(6) as usize]],
        "created_at": format!("2026-11-{:02}T{:02}:{:02}:{:02}Z", 1 + next(28), next(24), next(60), next(60)),
    });
    let mut total = 0.0;
    while doc.to_string().len() < size {
        let (title, price) = PRODUCTS[next(PRODUCTS.len() as u64) as usize];
        let qty = 1 + next(5);
        total += price * qty as f64;
        let line = json!({
            "sku": format!("SKU-{:05}", 10_000 + next(90_000)),
            "title": title,
            "qty": qty,
            "price": price,
        });
        if let Some(lines) = doc["lines"].as_array_mut() {
            lines.push(line);
        }
        doc["total"] = json!((total * 100.0).round() / 100.0);
    }
    doc
}

/// The `"t":<digits>` stamp in a frame, escaped or not; the first wins.
/// Every received frame is searched, so the search is memchr's.
pub fn stamp(text: &[u8]) -> Option<u64> {
    for needle in [&b"\"t\":"[..], &b"\\\"t\\\":"[..]] {
        if let Some(at) = memchr::memmem::find(text, needle) {
            return digits(&text[at + needle.len()..]);
        }
    }
    None
}

fn digits(text: &[u8]) -> Option<u64> {
    let end = text
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

/// The stamp at the start of an id such as `1700000000000000-u1-3`.
pub fn id_stamp(id: &str) -> Option<u64> {
    digits(id.as_bytes())
}

/// What one received frame means to the scenario.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// A measured message, sent at this stamp.
    Stamped(u64),
    /// The server acknowledged something sent at this stamp.
    Ack(u64),
    /// IM: the recipient's receive status for a message sent at this stamp.
    Receipt(u64),
    /// IM: a text message to answer with a receipt.
    ImText { stamp: Option<u64>, reply: String },
    /// The server said something went wrong.
    Error(String),
    /// Anything else: presence, heartbeats, acks of subscriptions.
    Other,
}

/// Whether a frame is the one a fresh socket waits for before it counts
/// as ready (its subscription is in place).
pub fn is_ready(dialect: Dialect, text: &[u8]) -> bool {
    let has = |needle: &str| contains(text, needle.as_bytes());
    match dialect {
        // The first frame of a group socket is its own presence join.
        Dialect::Group => true,
        Dialect::Raw => true,
        Dialect::Iot => has("down.subRet"),
        Dialect::Jsonrpc => has("\"result\"") || has("\"error\""),
        Dialect::Im => has("9001"),
    }
}

fn contains(text: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(text, needle).is_some()
}

/// Reads one frame of `dialect` for socket `me` (the IM user id).
pub fn classify(dialect: Dialect, text: &[u8], me: &str) -> Seen {
    match dialect {
        Dialect::Raw => stamp(text).map_or(Seen::Other, Seen::Stamped),
        Dialect::Group => {
            // Deliveries carry the stamp; error replies never do.
            if let Some(stamp) = stamp(text) {
                return Seen::Stamped(stamp);
            }
            if contains(text, br#""msg_type":"error""#) {
                return Seen::Error(String::from_utf8_lossy(text).into_owned());
            }
            Seen::Other
        }
        Dialect::Iot => {
            if contains(text, b"\"down.pub\"") {
                return stamp(text).map_or(Seen::Other, Seen::Stamped);
            }
            if contains(text, b"\"code\":200") {
                Seen::Other
            } else {
                Seen::Error(String::from_utf8_lossy(text).into_owned())
            }
        }
        Dialect::Jsonrpc => classify_jsonrpc(text),
        Dialect::Im => classify_im(text, me),
    }
}

fn classify_jsonrpc(text: &[u8]) -> Seen {
    if text == b"pong" {
        return Seen::Other;
    }
    let Ok(value) = serde_json::from_slice::<Value>(text) else {
        return Seen::Error(String::from_utf8_lossy(text).into_owned());
    };
    if value["method"] == "_notify" {
        return value["params"]["data"]["message"]["t"]
            .as_u64()
            .map_or(Seen::Other, Seen::Stamped);
    }
    if value.get("error").is_some() {
        return Seen::Error(value["error"].to_string());
    }
    match value["id"].as_str().and_then(id_stamp) {
        Some(stamp) => Seen::Ack(stamp),
        None => Seen::Other,
    }
}

fn classify_im(text: &[u8], me: &str) -> Seen {
    let Ok(value) = serde_json::from_slice::<Value>(text) else {
        return Seen::Error(String::from_utf8_lossy(text).into_owned());
    };
    let id = value["id"].as_str().unwrap_or_default();
    match value["type"].as_i64() {
        Some(2001) => {
            let sender = value["from"].as_str().unwrap_or_default();
            Seen::ImText {
                stamp: id_stamp(id),
                reply: im::receipt(id, me, sender),
            }
        }
        Some(9001) => {
            let body: Value = value["body"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            if body["code"] != 200 {
                return Seen::Error(value.to_string());
            }
            id_stamp(id).map_or(Seen::Other, Seen::Ack)
        }
        Some(9101) => id_stamp(id).map_or(Seen::Other, Seen::Receipt),
        _ => Seen::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn group_messages_follow_the_v3_schema() {
        let m = parse(&group::to_group(42, &"xx".into()));
        assert_eq!(
            m,
            json!({"msg_type":"msg","target":"group","payload":{"t":42,"pad":"xx"}})
        );
        assert_eq!(parse(&group::echo(1, &"".into()))["target"], "echo");
        let d = parse(&group::direct("bob", 7, &"".into()));
        assert_eq!(
            (d["target"].as_str(), d["to_id"].as_str()),
            (Some("direct"), Some("bob"))
        );
        assert_eq!(
            parse(&group::heartbeat()),
            json!({"msg_type":"heartbeat","target":"echo"})
        );
        assert_eq!(
            group::path("g", "c", "T"),
            "/v3/ws/group/g/client/c?token=T"
        );
    }

    #[test]
    fn stamps_are_found_plain_and_escaped() {
        let delivered = r#"{"version":"3","msg_type":"msg","target":"group","from_id":"a","group_id":"g","payload":{"t":1700000000123456,"pad":"x"},"sent_at":"…"}"#;
        assert_eq!(stamp(delivered.as_bytes()), Some(1_700_000_000_123_456));
        assert_eq!(stamp(br#"{"body":"{\"t\":99}"}"#), Some(99));
        assert_eq!(stamp(br#"{"target":"group"}"#), None);
        assert_eq!(stamp(br#"{"t":"#), None);
        assert_eq!(id_stamp("123-u1-4"), Some(123));
        assert_eq!(id_stamp("r-u1"), None);
    }

    #[test]
    fn group_frames_are_classified() {
        let error = r#"{"version":"3","msg_type":"error","target":"echo","msg":"bad","payload":{"code":"validation_error"}}"#;
        assert!(matches!(
            classify(Dialect::Group, error.as_bytes(), ""),
            Seen::Error(_)
        ));
        let presence = r#"{"version":"3","msg_type":"presence","target":"group","payload":{"event":"join","client_id":"a","count":1}}"#;
        assert_eq!(
            classify(Dialect::Group, presence.as_bytes(), ""),
            Seen::Other
        );
        assert_eq!(
            classify(Dialect::Raw, raw::message(5, &"x".into()).as_bytes(), ""),
            Seen::Stamped(5)
        );
        assert_eq!(
            parse(&raw::message(5, &"ab".into())),
            json!({"t":5,"pad":"ab"})
        );
    }

    #[test]
    fn iot_requests_and_pushes() {
        let sub = parse(&iot::subscribe("p", "d"));
        assert_eq!(sub["type"], "up.sub");
        assert_eq!(
            sub["body"]["params"],
            json!({"productID":"p","deviceName":"d"})
        );
        let event = iot::event("p", "d", 9, &"".into());
        assert_eq!(event["body"]["device"]["deviceName"], "d");
        let push = json!({"code":200,"msg":"成功","type":"down.pub","path":"devicePublish","body":event["body"]});
        assert_eq!(
            classify(Dialect::Iot, push.to_string().as_bytes(), ""),
            Seen::Stamped(9)
        );
        let ok = r#"{"code":200,"msg":"成功","type":"down.subRet"}"#;
        assert_eq!(classify(Dialect::Iot, ok.as_bytes(), ""), Seen::Other);
        assert!(is_ready(Dialect::Iot, ok.as_bytes()));
        let refused = r#"{"code":429,"msg":"too many","type":"down.subRet"}"#;
        assert!(matches!(
            classify(Dialect::Iot, refused.as_bytes(), ""),
            Seen::Error(_)
        ));
    }

    #[test]
    fn jsonrpc_requests_and_notifications() {
        let sub = parse(&jsonrpc::subscribe("ch", "s1"));
        assert_eq!(
            sub,
            json!({"jsonrpc":"2.0","method":"subscribe","params":{"channel":"ch"},"id":"s1"})
        );
        let publish = parse(&jsonrpc::publish("ch", 77, &"p".into()));
        assert_eq!(publish["method"], "redis.publish");
        assert_eq!(publish["params"]["message"]["t"], 77);
        assert_eq!(publish["id"], "77");
        let notify = json!({"jsonrpc":"2.0","method":"_notify","params":{"type":"message","data":{"channel":"ch","message":{"t":77,"pad":"p"}}}});
        assert_eq!(
            classify(Dialect::Jsonrpc, notify.to_string().as_bytes(), ""),
            Seen::Stamped(77)
        );
        let reply = json!({"jsonrpc":"2.0","result":{"code":200,"data":{"channel":"ch","receivers":3},"message":"成功"},"id":"77"});
        assert_eq!(
            classify(Dialect::Jsonrpc, reply.to_string().as_bytes(), ""),
            Seen::Ack(77)
        );
        let error =
            json!({"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"77"});
        assert!(matches!(
            classify(Dialect::Jsonrpc, error.to_string().as_bytes(), ""),
            Seen::Error(_)
        ));
        assert!(is_ready(Dialect::Jsonrpc, reply.to_string().as_bytes()));
    }

    #[test]
    fn im_messages_statuses_and_receipts() {
        let register = parse(&im::register("u1", "S"));
        assert_eq!(register["type"], 1000);
        assert_eq!(
            parse(register["body"].as_str().unwrap()),
            json!({"sessionId":"S"})
        );
        for key in ["id", "type", "isSystem", "from", "to", "body"] {
            assert!(register.get(key).is_some(), "register lacks {key}");
        }
        let text = parse(&im::text("u1", "u2", 3, 555, &"hi".into()));
        assert_eq!(text["id"], "555-u1-3");
        assert_eq!(
            (text["type"].as_i64(), text["to"].as_str()),
            (Some(2001), Some("u2"))
        );
        // u2 receives it and owes a receipt to u1.
        let Seen::ImText { stamp, reply } =
            classify(Dialect::Im, text.to_string().as_bytes(), "u2")
        else {
            panic!("a text message")
        };
        assert_eq!(stamp, Some(555));
        let receipt = parse(&reply);
        assert_eq!(
            (
                receipt["type"].as_i64(),
                receipt["id"].as_str(),
                receipt["from"].as_str(),
                receipt["to"].as_str()
            ),
            (Some(9101), Some("555-u1-3"), Some("u2"), Some("u1"))
        );
        assert_eq!(
            parse(receipt["body"].as_str().unwrap())["status"],
            "SUCCESS"
        );
        assert_eq!(
            classify(Dialect::Im, reply.as_bytes(), "u1"),
            Seen::Receipt(555)
        );
        let ok = json!({"id":"555-u1-3","type":9001,"isSystem":true,"from":"SYSTEM","to":"u1","body":"{\"code\":200,\"status\":\"SUCCESS\",\"msg\":\"ok\"}"});
        assert_eq!(
            classify(Dialect::Im, ok.to_string().as_bytes(), "u1"),
            Seen::Ack(555)
        );
        let bad = json!({"id":"r-u1","type":9001,"isSystem":true,"from":"SYSTEM","to":"u1","body":"{\"code\":402,\"status\":\"SESSION_ERROR\",\"msg\":\"no\"}"});
        assert!(matches!(
            classify(Dialect::Im, bad.to_string().as_bytes(), "u1"),
            Seen::Error(_)
        ));
        assert_eq!(im::login_path("web.1"), "/api/websocket/client/login/web.1");
    }

    #[test]
    fn padding_reaches_the_size() {
        let padding = padding_for(256);
        let m = group::to_group(1_700_000_000_000_000, &Fill::Pad(padding));
        assert!((200..=300).contains(&m.len()), "{}", m.len());
        assert_eq!(padding_for(10), "");
    }

    #[test]
    fn json_fills_reach_the_size_and_keep_the_stamp_findable() {
        let stamp = 1_700_000_000_000_000;
        let fill = Fill::new(Body::Json, 1024);
        assert_eq!(
            fill,
            Fill::new(Body::Json, 1024),
            "the same size, the same document"
        );
        for (dialect, message) in [
            (Dialect::Group, group::to_group(stamp, &fill)),
            (Dialect::Raw, raw::message(stamp, &fill)),
        ] {
            assert!((900..=1200).contains(&message.len()), "{}", message.len());
            let value = parse(&message);
            assert_eq!(
                classify(dialect, message.as_bytes(), ""),
                Seen::Stamped(stamp)
            );
            let data = if dialect == Dialect::Raw {
                &value["data"]
            } else {
                &value["payload"]["data"]
            };
            assert_eq!(data["event"], "order.updated");
            assert!(data["lines"].as_array().is_some_and(|l| l.len() >= 5));
        }
        // Only the stamp is a `"t":`.
        let Fill::Json { text, .. } = &fill else {
            panic!("a JSON fill")
        };
        assert_eq!(stamp_of_text(text), None);
        // Realistic: it compresses, but nowhere near as far as padding does.
        let ratio = |text: &str| {
            use std::io::Write;
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(3));
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap().len() as f64 / text.len() as f64
        };
        let json_ratio = ratio(text);
        assert!((0.2..0.8).contains(&json_ratio), "{json_ratio}");
        assert!(ratio(&padding_for(1024)) < 0.05);
    }

    fn stamp_of_text(text: &str) -> Option<u64> {
        stamp(text.as_bytes())
    }
}
