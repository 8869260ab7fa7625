//! The IM login endpoints: `GET /api/websocket/client/login/{clientName}`
//! (back office) and `GET /app/websocket/client/login/{clientName}` (app).
//!
//! The edge checks the token and the client name; the session itself is
//! made and kept by a router, in the store, so the edge holds nothing.
//! Answers: 200 `{"sessionId":…}`, or a [`Refusal`]: 401 (token), 400
//! (clientName), 405, 503, each with a JSON body `{"code":…,"msg":…}`.

use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;
use switchboard_common::auth::{AuthError, Kind, token_from_request};
use switchboard_common::http::{Body, json_response};
use switchboard_proto::im::{self as wire, is_valid_client_name};
use switchboard_proto::{ImLogin, Topic, im_request};

use crate::dialect::im::NOTICE_SCOPE;
use crate::dialect::{RequestBody, count_refused_token};
use crate::server::{EdgeServer, Refusal};

/// Login routes; what follows the prefix is the client name.
const PREFIXES: [&str; 2] = [
    "/api/websocket/client/login/",
    "/app/websocket/client/login/",
];

/// The raw (still percent-encoded) client name when `path` is a login route.
pub fn client_name_segment(path: &str) -> Option<&str> {
    PREFIXES.iter().find_map(|prefix| path.strip_prefix(prefix))
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Answers one login request; `segment` is the raw client name.
pub async fn handle(
    server: &EdgeServer,
    request: Request<Incoming>,
    segment: &str,
) -> Response<Body> {
    match login(server, request, segment).await {
        Ok(session_id) => {
            metrics::counter!("switchboard_edge_im_logins_total").increment(1);
            json_response(StatusCode::OK, &json!({ "sessionId": session_id }))
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Makes the session for one login request: its id, or why not.
async fn login(
    server: &EdgeServer,
    request: Request<Incoming>,
    segment: &str,
) -> Result<String, Refusal> {
    if request.method() != Method::GET {
        return Err(Refusal::LoginMethod);
    }
    let claims = match token_from_request(&request) {
        Some(token) => server.verifier.verify(&token),
        None => Err(AuthError::Missing),
    };
    let claims = match claims {
        Ok(claims) => claims,
        Err(e) => {
            count_refused_token("im_login", e.label());
            return Err(Refusal::LoginToken(e.to_string()));
        }
    };
    if let Err(e) = claims.check_kind(Kind::User) {
        count_refused_token("im_login", "kind");
        return Err(Refusal::LoginToken(e.to_string()));
    }
    let client_name = percent_decode(segment).unwrap_or_default();
    if !is_valid_client_name(&client_name) {
        return Err(Refusal::LoginClientName);
    }
    if !wire::is_valid_user(&claims.sub) || claims.sub == wire::SYSTEM {
        return Err(Refusal::LoginSub);
    }
    if server.env.draining.is_cancelled() {
        return Err(Refusal::LoginDraining);
    }
    let login = im_request::Op::Login(ImLogin {
        client_name,
        notice: claims.has_scope(NOTICE_SCOPE),
    });
    // The session is made in the token's tenant and its id names that
    // tenant; a socket registering with it joins that tenant only.
    let topic = Topic::im_user(claims.tenant(), &claims.sub);
    let session = server
        .env
        .upstream
        .call(0, topic, RequestBody::Im(Box::new(login)))
        .await;
    match session.map(switchboard_proto::Response::into_result) {
        Ok(Ok(response)) => Ok(response.im.unwrap_or_default().session_id),
        _ => Err(Refusal::LoginUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_names() {
        assert_eq!(
            client_name_segment("/api/websocket/client/login/web-1"),
            Some("web-1")
        );
        assert_eq!(
            client_name_segment("/app/websocket/client/login/"),
            Some("")
        );
        assert_eq!(client_name_segment("/websocket"), None);
        assert_eq!(percent_decode("a%2Db").as_deref(), Some("a-b"));
        assert_eq!(
            percent_decode("%E5%AE%A2").as_deref(),
            Some("客"),
            "decoded, then refused by the name rule"
        );
        assert_eq!(percent_decode("50%").as_deref(), Some("50%"));
        assert_eq!(percent_decode("%FF"), None);
    }
}
