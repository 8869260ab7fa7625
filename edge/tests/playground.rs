//! The playground page (`GET /`) in a real headless Chromium, at a phone's
//! width (390 px): each dialect's tab connects to a standalone process,
//! sends, and shows the answer; refused tokens are explained on the page.
//!
//! Needs `chromium`; skipped without it unless `SWITCHBOARD_REQUIRE_TOOLS`
//! is set. Each test leaves a screenshot of the tab as it ended under
//! `target/playground-artifacts/<test>.png`; a failed wait leaves the
//! screenshot, the page's HTML and its console there (`<test>.*`).

use switchboard_testkit::browser::{Browser, Page};
use switchboard_testkit::http;
use switchboard_testkit::im::{self, ImClient};
use switchboard_testkit::switchboard::{Standalone, app_token, token};

/// A phone's viewport.
const WIDTH: u32 = 390;
const HEIGHT: u32 = 844;

/// A standalone process, a browser and a tab on the playground, or `None`
/// when the test is skipped.
async fn open(test: &str, tab: &str) -> Option<(Standalone, Browser, Page)> {
    let browser = Browser::start_or_skip(test)?;
    let env = Standalone::memory(&[]).await;
    let mut page = browser.page(test, WIDTH, HEIGHT).await;
    page.goto(&format!("http://{}/#{tab}", env.edge())).await;
    page.wait_for(
        &format!("!document.getElementById('tab-{tab}').hidden"),
        "the tab to show",
    )
    .await;
    Some((env, browser, page))
}

/// Nothing is wider than the viewport: no sideways scrolling on a phone.
async fn fits_the_width(page: &mut Page) {
    let width = page
        .eval("document.documentElement.scrollWidth")
        .await
        .as_u64()
        .unwrap_or(u64::MAX);
    if width > u64::from(WIDTH) {
        page.fail(&format!("the page is {width} px wide at {WIDTH} px"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_tab_joins_and_echoes() {
    let Some((_env, _browser, mut page)) = open("group_tab_joins_and_echoes", "group").await else {
        return;
    };
    fits_the_width(&mut page).await;
    let token = token("demo_client", "client", "default", None);
    page.fill("#group-token", &token).await;
    page.click("#group-connect").await;
    page.wait_text("#group-state", "connected").await;
    page.wait_text("#group-log", r#""event":"join""#).await;
    page.click(r#"[data-example*='"echo","msg"']"#).await;
    page.wait_text("#group-log", r#""msg":"Ping!""#).await;
    page.wait_text("#group-log", r#""from_id":"demo_client""#)
        .await;
    fits_the_width(&mut page).await;
    page.save_screenshot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_tab_sets_and_gets_an_app_key() {
    let Some((_env, _browser, mut page)) =
        open("jsonrpc_tab_sets_and_gets_an_app_key", "rpc").await
    else {
        return;
    };
    page.fill("#rpc-kind", "app").await;
    page.fill("#rpc-app", "demo_app").await;
    page.fill("#rpc-token", &app_token("demo_app", "default"))
        .await;
    page.click("#rpc-connect").await;
    page.wait_text("#rpc-state", "connected").await;

    page.fill("#rpc-method", "redis.set").await;
    page.click("#rpc-send").await;
    page.wait_text("#rpc-log", r#""result":{"code":200"#).await;
    page.fill("#rpc-method", "redis.get").await;
    page.click("#rpc-send").await;
    page.wait_text("#rpc-log", r#""value":"hello""#).await;
    page.click("#rpc-ping").await;
    page.wait_text("#rpc-log", "← pong").await;
    fits_the_width(&mut page).await;
    page.save_screenshot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_tab_subscribes_and_gets_a_pushed_event() {
    let Some((env, _browser, mut page)) =
        open("iot_tab_subscribes_and_gets_a_pushed_event", "iot").await
    else {
        return;
    };
    page.fill("#iot-token", &token("demo_user", "user", "default", None))
        .await;
    page.click("#iot-connect").await;
    page.wait_text("#iot-state", "connected").await;
    page.wait_text("#iot-log", "connectID").await;
    page.click("#iot-subscribe").await;
    page.wait_text("#iot-log", "down.subRet").await;

    // The button shows the command to run against the router's API port.
    let service = token("demo_backend", "service", "default", None);
    page.fill("#iot-api", &format!("http://{}", env.api()))
        .await;
    page.fill("#iot-service-token", &service).await;
    page.click("#iot-push").await;
    let command = page.wait_text("#iot-curl", "/api/v1/iot/events").await;
    assert!(command.contains(&service), "{command}");
    if which("curl") {
        let out = std::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("run the page's curl command");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(answer.contains(r#""delivered":1"#), "{command}\n{answer}");
    } else {
        // The same event, posted without curl.
        let event = page.eval("JSON.stringify(iotEvent())").await;
        let event: serde_json::Value = serde_json::from_str(event.as_str().unwrap()).unwrap();
        let auth = format!("Bearer {service}");
        let reply = http::post_json(
            env.api(),
            "/api/v1/iot/events",
            &[("authorization", &auth)],
            &event,
        )
        .await;
        assert_eq!(reply.json()["delivered"], 1);
    }
    page.wait_text("#iot-log", "down.pub").await;
    page.wait_text("#iot-log", r#""temperature":21.5"#).await;
    fits_the_width(&mut page).await;
    page.save_screenshot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_tab_logs_in_sends_and_exchanges_receipts() {
    let Some((env, _browser, mut page)) =
        open("im_tab_logs_in_sends_and_exchanges_receipts", "im").await
    else {
        return;
    };
    let mut bob = ImClient::connect(env.edge(), "default", "bob", None).await;
    page.fill("#im-token", &token("demo_user", "user", "default", None))
        .await;
    page.click("#im-login").await;
    page.wait_text("#im-state", "registered as demo_user").await;

    // The page's text reaches bob, and bob's receipt reaches the page.
    page.fill("#im-to", "bob").await;
    page.fill("#im-text", "Hello bob").await;
    page.click("#im-send").await;
    page.wait_text("#im-log", "SUCCESS").await;
    let got = bob.recv_message().await;
    assert_eq!(got["body"], "Hello bob", "{got}");
    let id = got["id"].as_str().unwrap().to_owned();
    bob.ws
        .send_json(&im::receipt(&id, "bob", "demo_user"))
        .await;
    page.wait_text("#im-log", r#""type":9101"#).await;

    // Bob's text reaches the page, and the page's receipt reaches bob.
    bob.send_text("from-bob-1", "demo_user", "Hi back").await;
    page.wait_text("#im-log", "Hi back").await;
    page.click("#im-receipt").await;
    let receipt = bob.recv_message().await;
    assert_eq!(receipt["type"], 9101, "{receipt}");
    assert_eq!(receipt["id"], "from-bob-1", "{receipt}");
    fits_the_width(&mut page).await;
    page.save_screenshot().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_explained() {
    let Some((env, _browser, mut page)) = open("refused_tokens_are_explained", "group").await
    else {
        return;
    };
    // Group refuses before the upgrade: the browser sees 1006 and the page
    // asks the server why.
    page.fill("#group-token", "not-a-token").await;
    page.click("#group-connect").await;
    page.wait_text("#group-state", "closed").await;
    page.wait_text("#group-why", "HTTP 401").await;

    // A token of another kind: a user token on a group route.
    let user = token("demo_client", "user", "default", None);
    page.fill("#group-token", &user).await;
    page.click("#group-connect").await;
    page.wait_text("#group-why", "not a user token").await;

    // JSON-RPC accepts the upgrade and closes with 4401 and a reason.
    page.click("[data-tab=rpc]").await;
    page.fill("#rpc-token", "not-a-token").await;
    page.click("#rpc-connect").await;
    page.wait_text("#rpc-state", "4401").await;
    page.wait_text("#rpc-why", "refused the token").await;

    // IoT refuses before the upgrade, with its own body shape.
    page.click("[data-tab=iot]").await;
    page.fill("#iot-token", "not-a-token").await;
    page.click("#iot-connect").await;
    page.wait_text("#iot-why", "HTTP 401").await;

    // IM: the login is refused with a readable body.
    page.click("[data-tab=im]").await;
    page.fill("#im-token", "not-a-token").await;
    page.click("#im-login").await;
    page.wait_text("#im-why", "Login refused. HTTP 401").await;

    // An empty token is caught before anything is sent.
    page.click("[data-tab=group]").await;
    page.fill("#group-token", "").await;
    page.click("#group-connect").await;
    page.wait_text("#group-why", "No token").await;
    page.save_screenshot().await;
    drop(env);
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
