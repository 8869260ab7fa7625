//! A router's NATS connection authenticates: with a token, with user and
//! password in the URL, over TLS (`tls://`) with a private CA and a client
//! certificate when the server verifies clients. Membership
//! runs over NATS, so a router that counts itself among the live routers
//! has connected and been allowed to publish and subscribe. A router with
//! a wrong password is refused and never prints the password.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard_testkit::cluster::scrape;
use switchboard_testkit::http::metric;
use switchboard_testkit::nats::{CLUSTER_PASSWORD, CLUSTER_USER};
use switchboard_testkit::switchboard;
use switchboard_testkit::{NatsServer, Process, binary};

/// A private directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-nats-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Waits until the router counts itself live: its NATS connection works.
async fn wait_self_in_view(router: &Process) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(router.addr("router-admin")).await;
        if metric(&text, "switchboard_live_routers") == 1.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the router never joined over NATS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn router_on(url: String, env: &[(&str, String)]) -> Process {
    let mut all = vec![
        ("SWITCHBOARD_NATS_URL", url),
        ("SWITCHBOARD_ROUTER_ID", "router-a".to_owned()),
    ];
    all.extend(env.iter().cloned());
    switchboard::router(&[], &all)
}

#[tokio::test]
async fn a_token_authenticates() {
    let dir = scratch("token");
    let config = dir.join("token.conf");
    std::fs::write(&config, "authorization { token: $NATS_TEST_TOKEN }\n").unwrap();
    let token = "tok-router-test".to_owned();
    let nats = NatsServer::with_config(&config, &[("NATS_TEST_TOKEN".into(), token.clone())]).await;
    let router = router_on(nats.url(), &[("SWITCHBOARD_NATS_TOKEN", token)]);
    wait_self_in_view(&router).await;
}

#[tokio::test]
async fn user_and_password_in_the_url_authenticate() {
    let nats = NatsServer::shipped().await;
    let router = router_on(nats.cluster_url(), &[]);
    wait_self_in_view(&router).await;
}

/// PEM files made by `openssl` for one test.
struct Certificates {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate,
/// both signed by it.
fn certificates(dir: &Path) -> Certificates {
    let openssl = |line: &str| {
        let status = Command::new("openssl")
            .args(line.split_whitespace())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed");
        assert!(status.success(), "openssl {line}");
    };
    openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem",
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=router")] {
        openssl(&format!(
            "req -newkey rsa:2048 -nodes -subj {subject} -keyout {name}.key -out {name}.csr"
        ));
        openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
             -extfile {name}.ext -out {name}.pem"
        ));
    }
    let pair = |name: &str| {
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    };
    Certificates {
        ca: dir.join("ca.pem"),
        server: pair("server"),
        client: pair("client"),
    }
}

fn tls_config(dir: &Path, certs: &Certificates, verify_clients: bool) -> PathBuf {
    let config = dir.join("tls.conf");
    let verify = if verify_clients {
        format!(", ca_file: \"{}\", verify: true", certs.ca.display())
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\"{verify} }}\n",
            certs.server.0.display(),
            certs.server.1.display()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn tls_urls_use_tls_with_a_private_ca() {
    let dir = scratch("tls");
    let certs = certificates(&dir);
    let nats = NatsServer::with_config(&tls_config(&dir, &certs, false), &[]).await;
    let url = nats.url().replace("nats://", "tls://");
    let router = router_on(
        url,
        &[("SWITCHBOARD_NATS_TLS_CA", certs.ca.display().to_string())],
    );
    wait_self_in_view(&router).await;
}

#[tokio::test]
async fn a_client_certificate_satisfies_a_verifying_server() {
    let dir = scratch("mtls");
    let certs = certificates(&dir);
    let nats = NatsServer::with_config(&tls_config(&dir, &certs, true), &[]).await;
    let url = nats.url().replace("nats://", "tls://");
    let router = router_on(
        url,
        &[
            ("SWITCHBOARD_NATS_TLS_CA", certs.ca.display().to_string()),
            (
                "SWITCHBOARD_NATS_TLS_CERT",
                certs.client.0.display().to_string(),
            ),
            (
                "SWITCHBOARD_NATS_TLS_KEY",
                certs.client.1.display().to_string(),
            ),
        ],
    );
    wait_self_in_view(&router).await;
}

/// Started by hand to read its log (stderr): the server refuses the wrong
/// password, the router says so, and the password appears nowhere.
#[tokio::test]
async fn a_wrong_password_is_refused_and_never_logged() {
    let nats = NatsServer::shipped().await;
    let wrong = "pw-wrong-and-secret";
    assert_ne!(wrong, CLUSTER_PASSWORD);
    let mut child = Command::new(binary("router"))
        .args(switchboard::ROUTER_ARGS)
        .envs(switchboard::common_env())
        .env("SWITCHBOARD_ROUTER_ID", "router-w")
        .env("SWITCHBOARD_NATS_URL", nats.url_as(CLUSTER_USER, wrong))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start router");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let refused = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let refused = line.to_lowercase().contains("authorization violation");
                seen.push(line);
                if refused {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    // Whatever else was printed by then.
    seen.extend(rx.try_iter());
    assert!(refused, "no authorization violation logged: {seen:#?}");
    assert!(
        seen.iter().all(|line| !line.contains(wrong)),
        "the password was logged: {seen:#?}"
    );
}
