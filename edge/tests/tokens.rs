//! Token rules against a real standalone process, on every route that reads
//! a token here (group, IoT, IM login, server API): the operator's
//! audience, issuer and longest lifetime, JWKS key rotation, the one kind
//! each route takes, and the `edge token` subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use switchboard_common::auth::{Audience, Claims, Minter, Verifier, claims};
use switchboard_testkit::im::LOGIN;
use switchboard_testkit::process::binary;
use switchboard_testkit::switchboard::{self, SECRET, Standalone, token};
use switchboard_testkit::{WsClient, http};

const IOT_ROUTE: &str = "/api/v1/system/common/websocket/connect";
const AUDIENCE: &str = "switchboard";
const ISSUER: &str = "https://idp.example";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../common/tests/fixtures")
        .join(name)
}

fn hs256(claims: &Claims) -> String {
    Minter::hs256(SECRET.as_bytes()).mint(claims)
}

/// What each route answers a token with: (status, reason). 101 is an
/// accepted upgrade, 200 an accepted request.
struct Answers {
    group: (u16, String),
    iot: (u16, String),
    im_login: (u16, String),
    api: (u16, String),
}

/// Presents `token` (minted for `sub`) to every route; the token's kind is
/// the caller's business, so each route gets the token it is given.
async fn group_answer(edge: SocketAddr, sub: &str, token: &str) -> (u16, String) {
    let url = switchboard::group_url(edge, "room", sub, token);
    match WsClient::connect(&url).await {
        Ok(_) => (101, String::new()),
        Err(refused) => (refused.status, reason(&refused.body)),
    }
}

async fn iot_answer(edge: SocketAddr, token: &str) -> (u16, String) {
    let url = format!("ws://{edge}{IOT_ROUTE}?app-code=console&token={token}");
    match WsClient::connect(&url).await {
        Ok(_) => (101, String::new()),
        Err(refused) => (refused.status, reason(&refused.body)),
    }
}

async fn im_login_answer(edge: SocketAddr, token: &str) -> (u16, String) {
    let reply = switchboard_testkit::im::login(edge, LOGIN, "web", token).await;
    (reply.status, reason(&reply.json()))
}

async fn api_answer(api: SocketAddr, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let reply = http::post_json(
        api,
        "/api/v1/groups/room/messages",
        &[("authorization", &auth)],
        &json!({"msg_type":"msg","target":"group","msg":"hi"}),
    )
    .await;
    (reply.status, reason(&reply.json()))
}

/// The refusal's words: `msg` (IoT, IM) or `error.message` (group, API).
fn reason(body: &Value) -> String {
    body["msg"]
        .as_str()
        .or_else(|| body["error"]["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// One token per route, each of the route's kind, all shaped by `shape`.
async fn answers(env: &Standalone, shape: impl Fn(&mut Claims)) -> Answers {
    let minted = |sub: &str, kind: &str| {
        let mut c = claims(sub, kind, "t1", None, 1800);
        shape(&mut c);
        hs256(&c)
    };
    Answers {
        group: group_answer(env.edge(), "c1", &minted("c1", "client")).await,
        iot: iot_answer(env.edge(), &minted("u1", "user")).await,
        im_login: im_login_answer(env.edge(), &minted("u1", "user")).await,
        api: api_answer(env.api(), &minted("backend", "service")).await,
    }
}

fn assert_all_refused(answers: &Answers, words: &str) {
    for (route, (status, reason)) in [
        ("group", &answers.group),
        ("iot", &answers.iot),
        ("im login", &answers.im_login),
        ("api", &answers.api),
    ] {
        assert_eq!(*status, 401, "{route}: {reason}");
        assert!(
            reason.contains(words),
            "{route}: {reason:?} should name {words}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_issuer_and_lifetime_on_every_route() {
    let env = Standalone::memory(&[
        "--jwt-audience",
        AUDIENCE,
        "--jwt-issuer",
        ISSUER,
        "--jwt-max-lifetime",
        "1h",
    ])
    .await;
    let stamp = |c: &mut Claims| {
        c.aud = Some(Audience::One(AUDIENCE.into()));
        c.iss = Some(ISSUER.into());
    };
    let good = answers(&env, stamp).await;
    assert_eq!(good.group.0, 101, "{}", good.group.1);
    assert_eq!(good.iot.0, 101, "{}", good.iot.1);
    assert_eq!(good.im_login.0, 200, "{}", good.im_login.1);
    assert_eq!(good.api.0, 200, "{}", good.api.1);

    let no_audience = answers(&env, |c| c.iss = Some(ISSUER.into())).await;
    assert_all_refused(&no_audience, "audience");
    let other_audience = answers(&env, |c| {
        stamp(c);
        c.aud = Some(Audience::One("billing".into()));
    })
    .await;
    assert_all_refused(&other_audience, "audience");
    let other_issuer = answers(&env, |c| {
        stamp(c);
        c.iss = Some("https://evil.example".into());
    })
    .await;
    assert_all_refused(&other_issuer, "issuer");
    let long_lived = answers(&env, |c| {
        stamp(c);
        c.exp = c.iat.unwrap_or_default() + 7200;
    })
    .await;
    assert_all_refused(&long_lived, "lifetime");
    let long_lived_without_iat = answers(&env, |c| {
        stamp(c);
        c.iat = None;
        c.exp += 7200;
    })
    .await;
    assert_all_refused(&long_lived_without_iat, "lifetime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_without_kid_and_kid_pinning() {
    let old_pem = std::fs::read(fixture("rsa_private.pem")).unwrap();
    let new_pem = std::fs::read(fixture("rsa2_private.pem")).unwrap();
    let signed = |pem: &[u8], kid: Option<&str>| {
        Minter::rs256_pem(pem, kid)
            .unwrap()
            .mint(&claims("c1", "client", "t1", None, 600))
    };
    // Two keys without ids: a token of either is accepted.
    let unnamed = fixture("jwks_rotation_unnamed.json");
    let env = Standalone::memory(&["--jwt-jwks", unnamed.to_str().unwrap()]).await;
    for pem in [&old_pem, &new_pem] {
        let answer = group_answer(env.edge(), "c1", &signed(pem, None)).await;
        assert_eq!(answer.0, 101, "{}", answer.1);
    }
    // The shared secret no longer opens anything.
    let hs = hs256(&claims("c1", "client", "t1", None, 600));
    assert_eq!(group_answer(env.edge(), "c1", &hs).await.0, 401);
    drop(env);

    // Named keys: a kid pins its key.
    let named = fixture("jwks_rotation_named.json");
    let env = Standalone::memory(&["--jwt-jwks", named.to_str().unwrap()]).await;
    for (pem, kid) in [(&old_pem, "old"), (&new_pem, "new")] {
        let answer = group_answer(env.edge(), "c1", &signed(pem, Some(kid))).await;
        assert_eq!(answer.0, 101, "{kid}: {}", answer.1);
    }
    let answer = group_answer(env.edge(), "c1", &signed(&new_pem, Some("old"))).await;
    assert_eq!(answer.0, 401, "the new key's token naming the old key");
    assert!(answer.1.contains("signature"), "{}", answer.1);
    let answer = group_answer(env.edge(), "c1", &signed(&new_pem, None)).await;
    assert_eq!(
        answer.0, 101,
        "without kid every key is tried: {}",
        answer.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_takes_its_kind_and_names_the_wrong_one() {
    let env = Standalone::memory(&[]).await;
    let (edge, api) = (env.edge(), env.api());
    for kind in ["user", "service", "app", "device", "clients"] {
        let answer = group_answer(edge, "c1", &token("c1", kind, "t1", None)).await;
        assert_eq!(answer.0, 401, "group, {kind}");
        assert!(answer.1.contains(kind), "group, {kind}: {}", answer.1);
    }
    for kind in ["client", "service", "userx"] {
        let t = token("u1", kind, "t1", None);
        for (route, answer) in [
            ("iot", iot_answer(edge, &t).await),
            ("im login", im_login_answer(edge, &t).await),
        ] {
            assert_eq!(answer.0, 401, "{route}, {kind}");
            assert!(answer.1.contains(kind), "{route}, {kind}: {}", answer.1);
        }
    }
    for kind in ["user", "client"] {
        let answer = api_answer(api, &token("backend", kind, "t1", None)).await;
        assert_eq!(answer.0, 401, "api, {kind}");
        assert!(answer.1.contains(kind), "api, {kind}: {}", answer.1);
    }
    // A token without kind counts as the route's kind on user and client
    // routes; the server API takes only tokens that say `service`.
    let kindless = |sub: &str| {
        let mut c = claims(sub, "x", "t1", None, 600);
        c.kind = None;
        hs256(&c)
    };
    assert_eq!(group_answer(edge, "c1", &kindless("c1")).await.0, 101);
    assert_eq!(iot_answer(edge, &kindless("u1")).await.0, 101);
    assert_eq!(im_login_answer(edge, &kindless("u1")).await.0, 200);
    let answer = api_answer(api, &kindless("backend")).await;
    assert_eq!(answer.0, 401, "a kindless token never acts as a backend");
    assert!(answer.1.contains("no kind"), "{}", answer.1);
    assert_eq!(
        api_answer(api, &token("backend", "service", "t1", None))
            .await
            .0,
        200
    );
    // Refusals are counted by route and reason, never by anything a token says.
    let text = switchboard_testkit::cluster::scrape(env.process.addr("edge-admin")).await;
    let series = r#"switchboard_edge_tokens_refused_total{route="group",reason="kind"}"#;
    assert_eq!(http::metric(&text, series), 5.0, "{text}");
    let labels: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("switchboard_edge_tokens_refused_total{"))
        .collect();
    assert!(
        labels
            .iter()
            .all(|l| !l.contains("clients") && !l.contains("t1")),
        "a token's contents never become a label: {labels:?}"
    );
}

fn edge_token(args: &[&str]) -> std::process::Output {
    Command::new(binary("edge"))
        .arg("token")
        .args(args)
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .output()
        .expect("run edge token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_subcommand_mints_what_the_edge_accepts() {
    // Settings after the subcommand, as its error message suggests.
    let out = edge_token(&[
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-issuer",
        ISSUER,
        "--sub",
        "c1",
        "--kind",
        "client",
        "--tenant",
        "t1",
        "--ttl",
        "30m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = Verifier::hs256(SECRET.as_bytes()).verify(&minted).unwrap();
    assert_eq!(
        (claims.kind.as_deref(), claims.tenant()),
        (Some("client"), "t1")
    );
    let env = Standalone::memory(&["--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER]).await;
    let answer = group_answer(env.edge(), "c1", &minted).await;
    assert_eq!(answer.0, 101, "{}", answer.1);

    let out = edge_token(&["--jwt-secret", SECRET, "--sub", "c1", "--kind", "clients"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`clients`"), "{stderr}");
    let out = edge_token(&[
        "--jwt-secret",
        SECRET,
        "--jwt-max-lifetime",
        "1h",
        "--sub",
        "c1",
        "--ttl",
        "2h",
    ]);
    assert!(!out.status.success(), "a token the gateway would refuse");
    let out = edge_token(&["--sub", "c1"]);
    assert!(!out.status.success(), "no secret");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
}
