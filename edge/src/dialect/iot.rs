//! IoT device-event subscriptions: `/api/v1/system/common/websocket/connect`.
//!
//! Parameters come from the query or from headers of the same name. After
//! the upgrade the socket gets a handshake naming its trace id and its
//! cluster-unique `connectID`; then `up.sub`, `up.unSub` and `up.ping`
//! requests, each answered with its `handler` echoed. Pushes (`down.pub`)
//! are encoded once by the router that takes the event.

use std::collections::HashSet;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use switchboard_common::auth::{AuthError, Kind};
use switchboard_proto::iot::{self, Shape};
use switchboard_proto::{Payload, Response, Topic, TopicKind, payload};

use super::{Accept, Action, Dialect, DialectSession, RequestBody, UpgradeRequest};
use crate::server::Refusal;

pub const ROUTE: &str = "/api/v1/system/common/websocket/connect";
const OK: &str = "成功";

pub struct IotDialect;

pub static IOT: IotDialect = IotDialect;

impl Dialect for IotDialect {
    fn index(&self) -> usize {
        2
    }

    fn label(&self) -> &'static str {
        "iot"
    }

    fn proto(&self) -> switchboard_proto::Dialect {
        switchboard_proto::Dialect::Iot
    }

    fn encode(
        &self,
        payload: &Payload,
        _position: Option<&switchboard_proto::Position>,
    ) -> Option<Bytes> {
        match payload.body.as_ref()? {
            payload::Body::Json(bytes) => Some(bytes.clone()),
            payload::Body::Presence(_) | payload::Body::ImBacklog(_) => None,
        }
    }
}

/// The trace id of a W3C `traceparent` header, when it carries a valid one.
fn trace_id_from(traceparent: Option<&str>) -> Option<String> {
    let mut parts = traceparent?.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_owned())
}

fn new_trace_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn accept(request: &UpgradeRequest<'_>) -> Option<Accept> {
    if request.path != ROUTE {
        return None;
    }
    let param = |name: &str| -> Option<String> {
        request.query.get(name).cloned().or_else(|| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
    };
    let Some(_app_code) = param("app-code").filter(|s| !s.is_empty()) else {
        return Some(Accept::Refuse(Refusal::IotMissing("app-code")));
    };
    let claims = match &request.auth {
        Ok(claims) => claims,
        Err(AuthError::Missing) => {
            return Some(Accept::Refuse(Refusal::IotMissing("token")));
        }
        Err(e) => {
            super::count_refused_token("iot", e.label());
            return Some(Accept::Refuse(Refusal::IotToken(e.to_string())));
        }
    };
    if let Err(e) = claims.check_kind(Kind::User) {
        super::count_refused_token("iot", "kind");
        return Some(Accept::Refuse(Refusal::IotToken(e.to_string())));
    }
    // The tenant is the token's (`default` without a claim); `tenant-code`
    // may only repeat it, never move the socket to another tenant. Any
    // other value, well-formed or not, is a 401.
    let tenant = claims.tenant().to_owned();
    if param("tenant-code").is_some_and(|code| !code.is_empty() && code != tenant) {
        super::count_refused_token("iot", "tenant");
        return Some(Accept::Refuse(Refusal::IotTenant));
    }
    let trace_id = trace_id_from(param("traceparent").as_deref()).unwrap_or_else(new_trace_id);
    Some(Accept::Session {
        dialect: &IOT,
        session: Box::new(IotSession {
            tenant: tenant.clone(),
            project: param("project-id").filter(|s| !s.is_empty()),
            connect_id: request.connect_id.clone(),
            trace_id: trace_id.clone(),
            subscriptions: HashSet::new(),
            max_subscriptions: request.max_subscriptions,
            answering: None,
        }),
        tenant,
        principal: claims.sub.clone(),
        trace_id: Some(trace_id),
    })
}

pub struct IotSession {
    tenant: String,
    project: Option<String>,
    connect_id: String,
    trace_id: String,
    /// Topic names this socket subscribes to.
    subscriptions: HashSet<String>,
    max_subscriptions: usize,
    /// The reply type and handler of the request being answered, for the
    /// reply sent when the router cannot take it.
    answering: Option<(&'static str, Option<Value>)>,
}

/// A reply: `code`, `msg`, the reply `type` (absent for frames that had
/// none) and the request's `handler` when it had one.
fn reply(code: u16, msg: &str, kind: Option<&str>, handler: Option<&Value>) -> Bytes {
    let mut out = Map::new();
    out.insert("code".into(), code.into());
    out.insert("msg".into(), msg.into());
    if let Some(kind) = kind {
        out.insert("type".into(), kind.into());
    }
    if let Some(handler) = handler {
        out.insert("handler".into(), handler.clone());
    }
    Bytes::from(Value::Object(out).to_string())
}

impl IotSession {
    fn subscription(
        &mut self,
        body: Option<&Value>,
        kind: &'static str,
        handler: Option<&Value>,
        subscribe: bool,
    ) -> Vec<Action> {
        let bad = |message: &str| vec![Action::Reply(reply(400, message, Some(kind), handler))];
        let Some(Value::Object(body)) = body else {
            return bad("body must be an object with code and params");
        };
        let code = match iot::parse_code(body.get("code").unwrap_or(&Value::Null)) {
            Ok(code) => code,
            Err(e) => return bad(&e.message),
        };
        let shape = match Shape::parse(code, body.get("params").unwrap_or(&Value::Null)) {
            Ok(shape) => shape,
            Err(e) => return bad(&e.message),
        };
        if let (Some(own), Some(named)) = (&self.project, shape.project())
            && own != named
        {
            return vec![Action::Reply(reply(
                403,
                "params name a project other than this connection's project-id",
                Some(kind),
                handler,
            ))];
        }
        let name = shape.topic_name(code);
        let topic = Topic::new(&self.tenant, TopicKind::Iot, &name);
        let done = Action::Reply(reply(200, OK, Some(kind), handler));
        // The reply waits for the owner to confirm, so events pushed after
        // a subRet reach the socket.
        let confirmed = |topic: Topic| {
            let handler = handler.cloned();
            Action::Request {
                topic,
                body: RequestBody::Sync,
                on_response: Box::new(move |response| {
                    let (code, msg) = match response.map(Response::into_result) {
                        Ok(Ok(_)) => (200, OK),
                        _ => (500, "router unavailable"),
                    };
                    Some(reply(code, msg, Some(kind), handler.as_ref()))
                }),
            }
        };
        if subscribe {
            if self.subscriptions.contains(&name) {
                return vec![done];
            }
            if self.subscriptions.len() >= self.max_subscriptions {
                let message = format!("subscription limit of {} reached", self.max_subscriptions);
                return vec![Action::Reply(reply(429, &message, Some(kind), handler))];
            }
            self.subscriptions.insert(name);
            let subscribe = Action::Subscribe {
                topic: topic.clone(),
                member: None,
            };
            vec![subscribe, confirmed(topic)]
        } else if self.subscriptions.remove(&name) {
            vec![
                Action::Unsubscribe {
                    topic: topic.clone(),
                },
                confirmed(topic),
            ]
        } else {
            vec![done]
        }
    }
}

impl DialectSession for IotSession {
    fn open(&mut self) -> Vec<Action> {
        let handshake = json!({
            "code": 200,
            "msg": OK,
            "handler": {"Traceparent": self.trace_id, "connectID": self.connect_id},
        });
        vec![Action::Reply(Bytes::from(handshake.to_string()))]
    }

    fn on_text(&mut self, text: &str) -> Vec<Action> {
        self.answering = None;
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                return vec![Action::Reply(reply(
                    400,
                    &format!("invalid JSON: {e}"),
                    None,
                    None,
                ))];
            }
        };
        let handler = value.get("handler").cloned();
        let kind = value.get("type").and_then(Value::as_str);
        let (reply_kind, subscribe) = match kind {
            Some("up.sub") => ("down.subRet", Some(true)),
            Some("up.unSub") => ("down.unSubRet", Some(false)),
            Some("up.ping") => ("down.pong", None),
            _ => {
                let message = match kind {
                    Some(other) => format!("unknown type `{other}`"),
                    None => "a request needs a string type".to_owned(),
                };
                return vec![Action::Reply(reply(400, &message, None, handler.as_ref()))];
            }
        };
        self.answering = Some((reply_kind, handler.clone()));
        match subscribe {
            None => vec![Action::Reply(reply(
                200,
                OK,
                Some(reply_kind),
                handler.as_ref(),
            ))],
            Some(subscribe) => {
                self.subscription(value.get("body"), reply_kind, handler.as_ref(), subscribe)
            }
        }
    }

    fn rate_limited(&self) -> Bytes {
        reply(429, "rate limit exceeded: request dropped", None, None)
    }

    fn unavailable(&self) -> Bytes {
        let (kind, handler) = match &self.answering {
            Some((kind, handler)) => (Some(*kind), handler.as_ref()),
            None => (None, None),
        };
        reply(500, "router unavailable", kind, handler)
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use switchboard_common::auth::claims;

    fn request<'a>(
        path: &'a str,
        query: &[(&str, &str)],
        headers: &'a http::HeaderMap,
        auth: Result<switchboard_common::auth::Claims, AuthError>,
    ) -> UpgradeRequest<'a> {
        UpgradeRequest {
            path,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers,
            auth,
            allow_anonymous: false,
            connect_id: "edge-1-7".into(),
            max_subscriptions: 3,
            im_path: "/websocket",
            echo_path: None,
        }
    }

    fn user() -> Result<switchboard_common::auth::Claims, AuthError> {
        Ok(claims("u1", "user", "acme", None, 60))
    }

    fn session(project: Option<&str>) -> Box<dyn DialectSession> {
        let headers = http::HeaderMap::new();
        let mut query = vec![("app-code", "app1")];
        if let Some(p) = project {
            query.push(("project-id", p));
        }
        match accept(&request(ROUTE, &query, &headers, user())) {
            Some(Accept::Session { session, .. }) => session,
            _ => panic!("expected a session"),
        }
    }

    fn refusal(accept: Option<Accept>) -> (StatusCode, Value) {
        match accept {
            Some(Accept::Refuse(refusal)) => (refusal.status(), refusal.body()),
            _ => panic!("expected a refusal"),
        }
    }

    /// Replies, with requests answered by a healthy router.
    fn replies(actions: Vec<Action>) -> Vec<Value> {
        let ok = switchboard_proto::Response::default();
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Reply(bytes) => Some(serde_json::from_slice(&bytes).unwrap()),
                Action::Request { on_response, .. } => {
                    on_response(Ok(ok.clone())).map(|b| serde_json::from_slice(&b).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connect_rules() {
        let headers = http::HeaderMap::new();
        assert!(accept(&request("/other", &[], &headers, user())).is_none());
        let (status, body) = refusal(accept(&request(ROUTE, &[], &headers, user())));
        assert_eq!(
            (status, body["code"].as_u64()),
            (StatusCode::BAD_REQUEST, Some(400))
        );
        let (status, _) = refusal(accept(&request(
            ROUTE,
            &[("app-code", "a")],
            &headers,
            Err(AuthError::Missing),
        )));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = refusal(accept(&request(
            ROUTE,
            &[("app-code", "a")],
            &headers,
            Err(AuthError::Expired),
        )));
        assert_eq!(
            (status, body["msg"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("token expired"))
        );
        let (status, _) = refusal(accept(&request(
            ROUTE,
            &[("app-code", "a"), ("tenant-code", "other")],
            &headers,
            user(),
        )));
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "tenant-code must match the token"
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("app-code", "from-header".parse().unwrap());
        assert!(matches!(
            accept(&request(ROUTE, &[], &headers, user())),
            Some(Accept::Session { .. })
        ));
    }

    #[test]
    fn a_token_without_tenant_cannot_name_another_tenant() {
        let headers = http::HeaderMap::new();
        let mut no_tenant = claims("u1", "user", "x", None, 60);
        no_tenant.tenant = None;
        let (status, body) = refusal(accept(&request(
            ROUTE,
            &[("app-code", "a"), ("tenant-code", "t9")],
            &headers,
            Ok(no_tenant.clone()),
        )));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], 401);
        assert_eq!(body["msg"], "tenant-code does not match the token's tenant");
        let (status, _) = refusal(accept(&request(
            ROUTE,
            &[("app-code", "a"), ("tenant-code", "a}b")],
            &headers,
            Ok(no_tenant.clone()),
        )));
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "a malformed tenant-code too"
        );
        // As a header too.
        let mut named = http::HeaderMap::new();
        named.insert("tenant-code", "t9".parse().unwrap());
        let (status, _) = refusal(accept(&request(
            ROUTE,
            &[("app-code", "a")],
            &named,
            Ok(no_tenant.clone()),
        )));
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Naming its own tenant, `default`, or none: the default tenant.
        for query in [
            vec![("app-code", "a"), ("tenant-code", "default")],
            vec![("app-code", "a")],
        ] {
            match accept(&request(ROUTE, &query, &headers, Ok(no_tenant.clone()))) {
                Some(Accept::Session { tenant, .. }) => assert_eq!(tenant, "default"),
                _ => panic!("expected a session"),
            }
        }
        match accept(&request(
            ROUTE,
            &[("app-code", "a"), ("tenant-code", "acme")],
            &headers,
            user(),
        )) {
            Some(Accept::Session { tenant, .. }) => assert_eq!(tenant, "acme"),
            _ => panic!("the token's own tenant is accepted"),
        }
    }

    #[test]
    fn only_user_tokens_or_kindless_ones_connect() {
        let headers = http::HeaderMap::new();
        let query = [("app-code", "a")];
        for kind in ["client", "service", "device", "app", "users"] {
            let (status, body) = refusal(accept(&request(
                ROUTE,
                &query,
                &headers,
                Ok(claims("u1", kind, "acme", None, 60)),
            )));
            assert_eq!(
                (status, body["code"].as_u64()),
                (StatusCode::UNAUTHORIZED, Some(401))
            );
            let msg = body["msg"].as_str().unwrap_or_default();
            assert!(msg.contains(kind), "{kind}: {msg}");
        }
        let mut kindless = claims("u1", "user", "acme", None, 60);
        kindless.kind = None;
        assert!(matches!(
            accept(&request(ROUTE, &query, &headers, Ok(kindless))),
            Some(Accept::Session { .. })
        ));
    }

    #[test]
    fn handshake_names_trace_and_connect_id() {
        let mut s = session(None);
        let hello = &replies(s.open())[0];
        assert_eq!(hello["code"], 200);
        assert_eq!(hello["handler"]["connectID"], "edge-1-7");
        let trace = hello["handler"]["Traceparent"].as_str().unwrap();
        assert_eq!(trace.len(), 32);
        assert!(
            trace
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn incoming_traceparent_is_kept() {
        assert_eq!(
            trace_id_from(Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ))
            .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_from(Some(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )),
            None
        );
        assert_eq!(trace_id_from(Some("garbage")), None);
    }

    #[test]
    fn ping_and_handler_echo() {
        let mut s = session(None);
        let r = replies(s.on_text(r#"{"type":"up.ping","handler":{"id":42}}"#));
        assert_eq!(
            r,
            vec![json!({"code":200,"msg":"成功","type":"down.pong","handler":{"id":42}})]
        );
        let r = replies(s.on_text(r#"{"type":"up.ping"}"#));
        assert_eq!(r, vec![json!({"code":200,"msg":"成功","type":"down.pong"})]);
    }

    #[test]
    fn malformed_frames() {
        let mut s = session(None);
        for text in ["nope", "[]", "{}", r#"{"type":"up.fly"}"#, r#"{"type":5}"#] {
            let r = replies(s.on_text(text));
            assert_eq!(r[0]["code"], 400, "{text}");
            assert!(r[0].get("type").is_none(), "{text}");
        }
    }

    #[test]
    fn subscribe_errors_and_limits() {
        let mut s = session(Some("proj_1"));
        let sub = |body: Value| json!({"type":"up.sub","body":body}).to_string();
        let r = replies(s.on_text(&sub(json!({"code":"nope","params":{"projectID":"proj_1"}}))));
        assert_eq!(
            (r[0]["code"].as_u64(), r[0]["type"].as_str()),
            (Some(400), Some("down.subRet"))
        );
        let r = replies(s.on_text(&sub(json!({"code":"deviceConn","params":{"x":1}}))));
        assert_eq!(r[0]["code"], 400);
        let r = replies(s.on_text(&sub(json!("text"))));
        assert_eq!(r[0]["code"], 400);
        let r = replies(s.on_text(&sub(
            json!({"code":"deviceConn","params":{"projectID":"other"}}),
        )));
        assert_eq!(r[0]["code"], 403);
        // Subscribing twice is one subscription.
        for _ in 0..2 {
            let actions = s.on_text(&sub(
                json!({"code":"deviceConn","params":{"projectID":"proj_1"}}),
            ));
            assert_eq!(replies(actions)[0]["code"], 200);
        }
        for device in ["d1", "d2"] {
            let actions = s.on_text(&sub(
                json!({"code":"deviceConn","params":{"productID":"p","deviceName":device}}),
            ));
            assert_eq!(replies(actions)[0]["code"], 200);
        }
        let actions = s.on_text(&sub(
            json!({"code":"deviceConn","params":{"productID":"p","deviceName":"d3"}}),
        ));
        assert_eq!(replies(actions)[0]["code"], 429, "limit of 3 in this test");
        let actions = s.on_text(&json!({"type":"up.unSub","body":{"code":"deviceConn","params":{"productID":"p","deviceName":"d1"}}}).to_string());
        assert!(matches!(actions[0], Action::Unsubscribe { .. }));
        assert_eq!(replies(actions)[0]["type"], "down.unSubRet");
    }

    #[test]
    fn unavailable_answers_the_request_in_flight() {
        let mut s = session(None);
        let _ = s.on_text(r#"{"type":"up.sub","handler":{"n":1},"body":{"code":"deviceConn","params":{"projectID":"j"}}}"#);
        let r: Value = serde_json::from_slice(&s.unavailable()).unwrap();
        assert_eq!(
            r,
            json!({"code":500,"msg":"router unavailable","type":"down.subRet","handler":{"n":1}})
        );
    }
}
