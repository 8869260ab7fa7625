//! A private `redis-server` for one test, on an ephemeral port, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct RedisServer {
    child: Child,
    port: u16,
}

fn spawn(port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (.ci/run installs it)")
}

impl RedisServer {
    /// Starts `redis-server` (from PATH) with no persistence and waits for it.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = crate::free_port();
            let child = spawn(port);
            let mut server = Self { child, port };
            if server.wait_ready(Duration::from_secs(10)).await {
                return server;
            }
            let _ = server.child.kill();
        }
        panic!("redis-server did not start");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        crate::process::signal_pid(self.child.id(), "STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        crate::process::signal_pid(self.child.id(), "CONT");
    }

    /// Kills the server; [`RedisServer::restart`] brings up an empty one on
    /// the same port.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh, empty server on the same port and waits for it.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            self.child = spawn(self.port);
            if self.wait_ready(Duration::from_secs(5)).await {
                return;
            }
            let _ = self.child.kill();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn wait_ready(&mut self, limit: Duration) -> bool {
        wait_ready(&mut self.child, self.port, limit).await
    }

    /// Runs one command whose reply is an integer (`HLEN`, `EXISTS`, …),
    /// so tests can look at what the store left behind.
    pub async fn integer(&self, args: &[&str]) -> i64 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to redis-server");
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(command.as_bytes())
            .await
            .expect("write to redis-server");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            stream
                .read_exact(&mut byte)
                .await
                .expect("read from redis-server");
            reply.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&reply);
        text.trim_end()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{args:?} answered {text:?}, not an integer"))
    }
}

/// Waits until the server on `port` answers PING, or `child` exits.
async fn wait_ready(child: &mut Child, port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").await.is_ok()
                && stream.read_exact(&mut reply).await.is_ok()
                && &reply == b"+PONG\r\n"
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Redis Cluster of `n` masters (no replicas), for checking that
/// every multi-key operation stays in one slot. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start(n: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-redis-cluster-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..n {
            // The cluster bus listens on port + 10000.
            let port = loop {
                let port = crate::free_port();
                if port < 55_000
                    && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
                {
                    break port;
                }
            };
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (.ci/run installs it)");
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        for (child, port) in cluster.nodes.iter_mut().zip(cluster.ports.clone()) {
            let ready = wait_ready(child, port, Duration::from_secs(10)).await;
            assert!(ready, "cluster node {port} did not start");
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &cluster.ports[0].to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "cluster never became ok");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…`
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
