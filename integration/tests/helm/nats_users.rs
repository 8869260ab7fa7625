//! The in-cluster NATS's users and permissions, played against a real
//! nats-server started with the configuration and passwords the chart
//! renders: a tenant's backend user publishes to its own tenant's API
//! subjects and gets answers, and cannot publish to another tenant's API
//! subjects or the internal tree, nor subscribe to the internal tree;
//! strangers and wrong passwords are refused.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::render::{self, named, require_helm};

const WAIT: Duration = Duration::from_secs(10);

struct NatsServer {
    child: Child,
    port: u16,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_program() -> Option<&'static str> {
    [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|p| Command::new(p).arg("--version").output().is_ok())
}

/// Starts nats-server on `config` with the environment the chart gives the
/// NATS pod (each password read from the rendered Secret).
async fn start(program: &str, config: &str, env: &[(String, String)]) -> NatsServer {
    // One file per server: the tests of this module run in parallel in one
    // process, and a shared name let one test's configuration overwrite
    // another's while nats-server read it.
    let port = switchboard_testkit::free_port();
    let path = std::env::temp_dir().join(format!(
        "switchboard-chart-nats-{}-{port}.conf",
        std::process::id()
    ));
    std::fs::write(&path, config).expect("write nats.conf");
    let child = Command::new(program)
        .arg("-c")
        .arg(&path)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nats-server");
    let mut server = NatsServer { child, port };
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if server.child.try_wait().ok().flatten().is_some() {
            let mut said = String::new();
            if let Some(mut stderr) = server.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
            }
            panic!("nats-server exited: the rendered configuration does not load: {said}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

/// `nats://user:password@host:port` as the address and the credentials.
/// (async-nats 0.51 does not send credentials written in the URL itself.)
fn credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}://{host}"),
                Some((user.to_owned(), password.to_owned())),
            )
        }
        None => (url.to_owned(), None),
    }
}

type Connection = (async_nats::Client, mpsc::UnboundedReceiver<String>);

/// Connects with the URL's credentials, forwarding the server's errors
/// (permission violations) to the channel.
async fn connect(url: &str) -> Result<Connection, async_nats::ConnectError> {
    connect_with(url, async_nats::ConnectOptions::new()).await
}

async fn connect_with(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<Connection, async_nats::ConnectError> {
    let (errors, received) = mpsc::unbounded_channel();
    let (address, login) = credentials(url);
    let options = match login {
        Some((user, password)) => options.user_and_password(user, password),
        None => options,
    };
    let client = options
        .connection_timeout(WAIT)
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors.send(error.to_string());
                }
            }
        })
        .connect(address)
        .await?;
    Ok((client, received))
}

/// Waits for the server to refuse something on `subject`.
async fn refused(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let error = tokio::time::timeout(WAIT, errors.recv())
        .await
        .unwrap_or_else(|_| panic!("no permission violation for {what} {subject}"))
        .expect("connection events");
    let lower = error.to_lowercase();
    assert!(
        lower.contains("permissions violation") && lower.contains(what) && error.contains(subject),
        "{error}"
    );
}

async fn next(subscriber: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WAIT, subscriber.next())
        .await
        .expect("a message")
        .expect("subscription open")
}

/// The value of env entry `name` of the NATS pod's container.
fn password_env(nats: &Value, secret: &Value) -> Vec<(String, String)> {
    render::container(nats)["env"]
        .as_array()
        .expect("NATS env")
        .iter()
        .map(|entry| {
            let key = entry["valueFrom"]["secretKeyRef"]["key"]
                .as_str()
                .expect("from the Secret");
            let password = render::secret_data(secret, key).expect("password in the Secret");
            (entry["name"].as_str().expect("name").to_owned(), password)
        })
        .collect()
}

/// The in-cluster NATS as the chart renders it, running, and the cluster
/// user connected with the URL every edge and router gets.
struct Rendered {
    _server: NatsServer,
    address: String,
    passwords: Value,
    cluster: async_nats::Client,
    cluster_errors: mpsc::UnboundedReceiver<String>,
}

impl Rendered {
    async fn start(helm: &render::Helm, program: &str, in_cluster: Value) -> Self {
        let objects = helm.objects(&["default"], &json!({"nats": {"inCluster": in_cluster}}));
        let config = named(&objects, "ConfigMap", "switchboard-nats-config")["data"]["nats.conf"]
            .as_str()
            .expect("nats.conf")
            .to_owned();
        let passwords = named(&objects, "Secret", "switchboard-nats-users").clone();
        let nats = named(&objects, "Deployment", "switchboard-nats");
        let server = start(program, &config, &password_env(nats, &passwords)).await;
        let address = format!("127.0.0.1:{}", server.port);
        let edge = named(&objects, "Deployment", "switchboard-edge");
        let cluster_password =
            render::secret_data(&passwords, "switchboard").expect("cluster password");
        let cluster_url = render::env_value(edge, "SWITCHBOARD_NATS_URL")
            .expect("NATS URL")
            .replace("$(NATS_CLUSTER_PASSWORD)", &cluster_password)
            .replace("switchboard-nats:4222", &address);
        let (cluster, cluster_errors) = connect(&cluster_url).await.expect("cluster user connects");
        Self {
            _server: server,
            address,
            passwords,
            cluster,
            cluster_errors,
        }
    }

    fn url(&self, user: &str) -> String {
        let password = render::secret_data(&self.passwords, user).expect("password");
        format!("nats://{user}:{password}@{}", self.address)
    }
}

/// Answers the next request on `api` with `answer`.
async fn answer(cluster: &async_nats::Client, api: &mut async_nats::Subscriber, subject: &str) {
    let call = next(api).await;
    assert_eq!(call.subject.as_str(), subject);
    let reply = call.reply.expect("a reply subject");
    cluster
        .publish(reply, "answer".into())
        .await
        .expect("answer");
    cluster.flush().await.expect("flush");
}

#[tokio::test]
async fn in_cluster_nats_confines_each_backend_to_its_tenant() {
    let helm = require_helm!();
    let Some(program) = nats_program() else {
        eprintln!("skipped: nats-server is not installed");
        return;
    };
    let mut nats = Rendered::start(
        &helm,
        program,
        json!({"backendTenants": ["acme", "globex"]}),
    )
    .await;
    let (cluster, address) = (nats.cluster.clone(), nats.address.clone());
    let mut api = cluster
        .subscribe("switchboard.api.>")
        .await
        .expect("subscribe api");
    let mut internal = cluster
        .subscribe("switchboard.internal.>")
        .await
        .expect("subscribe internal");
    cluster.flush().await.expect("flush");

    let (acme, mut acme_errors) = connect_with(
        &nats.url("backend-acme"),
        async_nats::ConnectOptions::new().custom_inbox_prefix("_INBOX.acme"),
    )
    .await
    .expect("acme's backend connects");

    // Forged publishes: another tenant's API, the internal tree.
    for subject in [
        "switchboard.api.globex.notify",
        "switchboard.internal.router.r1.forward",
    ] {
        acme.publish(subject, "forged".into())
            .await
            .expect("publish");
        acme.flush().await.expect("flush");
        refused(&mut acme_errors, "publish", subject).await;
    }
    // Its own tenant's API subject arrives, and first: the forged ones never did.
    acme.publish("switchboard.api.acme.notify", "sentinel".into())
        .await
        .expect("publish");
    acme.flush().await.expect("flush");
    let first = next(&mut api).await;
    assert_eq!(first.subject.as_str(), "switchboard.api.acme.notify");
    assert_eq!(&first.payload[..], b"sentinel");
    cluster
        .publish("switchboard.internal.sentinel", "sentinel".into())
        .await
        .expect("publish");
    cluster.flush().await.expect("flush");
    assert_eq!(
        next(&mut internal).await.subject.as_str(),
        "switchboard.internal.sentinel"
    );

    // Request/reply: the backend's request reaches the cluster, the answer comes back.
    let request = tokio::spawn({
        let acme = acme.clone();
        async move {
            acme.request("switchboard.api.acme.tools.call", "call".into())
                .await
        }
    });
    answer(&cluster, &mut api, "switchboard.api.acme.tools.call").await;
    let answered = tokio::time::timeout(WAIT, request)
        .await
        .expect("answered in time")
        .expect("request task")
        .expect("request answered");
    assert_eq!(&answered.payload[..], b"answer");
    assert!(
        nats.cluster_errors.try_recv().is_err(),
        "the cluster user was refused something"
    );

    // The backend may not listen to the internal tree.
    let _eavesdrop = acme
        .subscribe("switchboard.internal.>")
        .await
        .expect("subscribe");
    acme.flush().await.expect("flush");
    refused(&mut acme_errors, "subscription", "switchboard.internal.>").await;

    // No user, a wrong password, another backend's password: refused.
    for url in [
        format!("nats://{address}"),
        format!("nats://backend-acme:wrong-password@{address}"),
        format!(
            "nats://backend-acme:{}@{address}",
            render::secret_data(&nats.passwords, "backend-globex").expect("globex password")
        ),
    ] {
        assert!(connect(&url).await.is_err(), "{url} connects");
    }
}

#[tokio::test]
async fn backend_inboxes_keep_answers_to_their_tenant() {
    let helm = require_helm!();
    let Some(program) = nats_program() else {
        eprintln!("skipped: nats-server is not installed");
        return;
    };
    let mut nats = Rendered::start(
        &helm,
        program,
        json!({"backendTenants": ["acme", "globex"]}),
    )
    .await;
    let cluster = nats.cluster.clone();
    let mut api = cluster
        .subscribe("switchboard.api.>")
        .await
        .expect("subscribe api");
    cluster.flush().await.expect("flush");

    // globex's backend tries to listen to every inbox, and to acme's.
    let (globex, mut globex_errors) = connect(&nats.url("backend-globex"))
        .await
        .expect("globex's backend connects");
    for inboxes in ["_INBOX.>", "_INBOX.acme.>"] {
        let _eavesdrop = globex.subscribe(inboxes).await.expect("subscribe");
        globex.flush().await.expect("flush");
        refused(&mut globex_errors, "subscription", inboxes).await;
    }

    // acme's backend, with its inbox prefix, asks and is answered.
    let (acme, _acme_errors) = connect_with(
        &nats.url("backend-acme"),
        async_nats::ConnectOptions::new().custom_inbox_prefix("_INBOX.acme"),
    )
    .await
    .expect("acme's backend connects");
    let request = tokio::spawn({
        let acme = acme.clone();
        async move {
            acme.request("switchboard.api.acme.tools.call", "call".into())
                .await
        }
    });
    answer(&cluster, &mut api, "switchboard.api.acme.tools.call").await;
    let answered = tokio::time::timeout(WAIT, request)
        .await
        .expect("answered in time")
        .expect("request task")
        .expect("request answered");
    assert_eq!(&answered.payload[..], b"answer");
    assert!(
        nats.cluster_errors.try_recv().is_err(),
        "the cluster user may answer a tenant's inboxes"
    );

    // With the default prefix the same backend gets no answer: it may
    // read only its tenant's inboxes.
    let (shared, mut shared_errors) = connect(&nats.url("backend-acme")).await.expect("connects");
    let pending = tokio::spawn(async move {
        shared
            .request("switchboard.api.acme.tools.call", "call".into())
            .await
    });
    refused(&mut shared_errors, "subscription", "_INBOX.").await;
    pending.abort();
}
