//! A private `nats-server` for one test, on an ephemeral port, killed on
//! drop: open ([`NatsServer::start`]), or from a configuration file with
//! users ([`NatsServer::shipped`] runs the repository's
//! `deploy/nats/nats-server.conf`), and clients that connect as its users
//! and see what the server refuses them ([`NatsUser`]).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// The user routers and edges share in the shipped configuration.
pub const CLUSTER_USER: &str = "switchboard";

/// Test passwords for the shipped configuration's users (it reads them
/// from the environment). Each starts with a letter, as the server needs.
pub const CLUSTER_PASSWORD: &str = "pw-cluster-test";

/// The shipped configuration's backend user of `tenant` and its test password.
pub fn backend_user(tenant: &str) -> (String, String) {
    (
        format!("backend-{tenant}"),
        format!("pw-backend-{tenant}-test"),
    )
}

/// Tenants the shipped configuration has backend users for.
pub const SHIPPED_TENANTS: [&str; 2] = ["default", "acme"];

pub struct NatsServer {
    child: Child,
    /// The address it listens on (loopback unless started with [`NatsServer::start_on`]).
    ip: String,
    port: u16,
    /// How it was started, so [`NatsServer::restart`] starts it the same way.
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn program() -> &'static str {
    [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|p| Command::new(p).arg("--version").output().is_ok())
    .expect("nats-server must be installed (.ci/run installs it)")
}

fn spawn_child(args: &[String], env: &[(String, String)], ip: &str, port: u16) -> Child {
    Command::new(program())
        .args(args)
        .args(["-a", ip, "-p", &port.to_string()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server")
}

impl NatsServer {
    /// Starts `nats-server` (from PATH, or Debian's /usr/sbin) without
    /// authentication and waits for it.
    pub async fn start() -> Self {
        Self::spawn(&[], &[], "127.0.0.1").await
    }

    /// Like [`NatsServer::start`], listening on `ip` (a test host's link).
    pub async fn start_on(ip: &str) -> Self {
        Self::spawn(&[], &[], ip).await
    }

    /// Starts `nats-server -c config` with `env` (the variables the file
    /// reads); the port on the command line overrides the file's.
    pub async fn with_config(config: &Path, env: &[(String, String)]) -> Self {
        let config = config.to_str().expect("UTF-8 config path");
        Self::spawn(&["-c", config], env, "127.0.0.1").await
    }

    /// Starts the repository's `deploy/nats/nats-server.conf`, with the
    /// test passwords of [`CLUSTER_PASSWORD`] and [`backend_user`].
    pub async fn shipped() -> Self {
        let config = crate::manifests::repo_root().join("deploy/nats/nats-server.conf");
        let mut env = vec![(
            "SWITCHBOARD_NATS_PASSWORD".to_owned(),
            CLUSTER_PASSWORD.to_owned(),
        )];
        for tenant in SHIPPED_TENANTS {
            env.push((
                format!(
                    "SWITCHBOARD_NATS_BACKEND_{}_PASSWORD",
                    tenant.to_uppercase()
                ),
                backend_user(tenant).1,
            ));
        }
        Self::with_config(&config, &env).await
    }

    async fn spawn(args: &[&str], env: &[(String, String)], ip: &str) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        for _ in 0..5 {
            let port = crate::free_port();
            let child = spawn_child(&args, env, ip, port);
            let mut server = Self {
                child,
                ip: ip.to_owned(),
                port,
                args: args.clone(),
                env: env.to_vec(),
            };
            if server.wait_ready(Duration::from_secs(10)).await {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("nats-server did not start");
    }

    /// Kills the server; [`NatsServer::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again, as before and on the same port, and waits
    /// for it.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            self.child = spawn_child(&self.args, &self.env, &self.ip, self.port);
            if self.wait_ready(Duration::from_secs(5)).await {
                return;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nats-server did not restart on port {}", self.port);
    }

    /// The URL without credentials.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.ip, self.port)
    }

    /// The URL with `user` and `password` in it.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@{}:{}", self.ip, self.port)
    }

    /// The URL routers and edges use with the shipped configuration.
    pub fn cluster_url(&self) -> String {
        self.url_as(CLUSTER_USER, CLUSTER_PASSWORD)
    }

    /// A client logged in as `user`, its inboxes under `inbox_prefix`.
    pub async fn connect_as(&self, user: &str, password: &str, inbox_prefix: &str) -> NatsUser {
        let (errors_tx, errors) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            password.to_owned(),
        )
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .connect(self.url())
        .await
        .unwrap_or_else(|e| panic!("connect to NATS as {user}: {e}"));
        NatsUser { client, errors }
    }

    /// The shipped configuration's backend user of `tenant`, replies on
    /// its private inbox prefix `_INBOX.<tenant>`.
    pub async fn backend(&self, tenant: &str) -> NatsUser {
        let (user, password) = backend_user(tenant);
        self.connect_as(&user, &password, &format!("_INBOX.{tenant}"))
            .await
    }

    /// The shipped configuration's cluster user, as routers and edges
    /// connect (inboxes inside the internal tree).
    pub async fn cluster_member(&self) -> NatsUser {
        self.connect_as(CLUSTER_USER, CLUSTER_PASSWORD, "switchboard.internal.inbox")
            .await
    }

    async fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut stream) =
                tokio::net::TcpStream::connect((self.ip.as_str(), self.port)).await
            {
                let mut greeting = [0u8; 4];
                if stream.read_exact(&mut greeting).await.is_ok() && &greeting == b"INFO" {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A NATS client logged in as one user, with the errors the server sent it.
pub struct NatsUser {
    pub client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl NatsUser {
    /// Waits for the server's permissions violation naming `subject` (for
    /// a publish or a subscription): proof the server refused it.
    pub async fn refused(&mut self, subject: &str) -> String {
        let quoted = format!("\"{subject}\"");
        loop {
            let error = tokio::time::timeout(Duration::from_secs(10), self.errors.recv())
                .await
                .unwrap_or_else(|_| panic!("the server never refused {subject}"))
                .expect("the client's event stream ended");
            if error.to_lowercase().contains("permissions violation") && error.contains(&quoted) {
                return error;
            }
        }
    }

    /// A request with a JSON body, its JSON answer.
    pub async fn request_json(&self, subject: &str, body: &Value) -> Value {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.client
                .request(subject.to_owned(), body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer on {subject}"))
        .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
        serde_json::from_slice(&reply.payload).expect("a JSON answer")
    }

    /// Publishes a JSON body and flushes, so the server has it.
    pub async fn publish_json(&self, subject: &str, body: &Value) {
        self.client
            .publish(subject.to_owned(), body.to_string().into())
            .await
            .expect("publish");
        self.client.flush().await.expect("flush");
    }
}

/// NATS headers that prove `secret` for `purpose` by `peer`, bound to
/// `body`, as edges and routers send them (Hello, forwards, announcements).
pub fn proven_headers(
    secret: &switchboard_common::trust::ClusterSecret,
    purpose: switchboard_common::trust::Purpose,
    peer: &str,
    body: &[u8],
) -> async_nats::HeaderMap {
    use switchboard_common::trust::{PEER_HEADER, PROOF_HEADER, bound_peer};
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(PEER_HEADER, peer);
    headers.insert(
        PROOF_HEADER,
        secret.prove(purpose, &bound_peer(peer, body)).as_str(),
    );
    headers
}
