//! A private `nats-server` for one test, on an ephemeral port, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

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

fn spawn(port: u16) -> Child {
    Command::new(program())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server")
}

pub struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    /// Starts `nats-server` (from PATH, or Debian's /usr/sbin) and waits for it.
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
        panic!("nats-server did not start");
    }

    /// Kills the server; [`NatsServer::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and waits for it.
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
        panic!("nats-server did not restart on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
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
