//! Switchboard binaries as child processes on ephemeral ports.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The path of a workspace binary (`edge`, `router`, `switchboard`, …),
/// built beside the test executable. `cargo test --workspace` builds every
/// binary first.
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A running child process, killed on drop.
pub struct Process {
    child: Option<Child>,
    pub addrs: HashMap<String, SocketAddr>,
    /// Lines the process printed on stdout after its listeners.
    pub stdout: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `program` and waits until it printed `listening <name> <addr>`
    /// for every name in `listeners`.
    pub fn start(
        program: PathBuf,
        args: &[&str],
        env: &[(&str, String)],
        listeners: &[&str],
    ) -> Self {
        let mut command = Command::new(&program);
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while listeners.iter().any(|name| !addrs.contains_key(*name)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.split_whitespace();
                    if let (Some("listening"), Some(name), Some(addr)) =
                        (words.next(), words.next(), words.next())
                        && let Ok(addr) = addr.parse()
                    {
                        addrs.insert(name.to_owned(), addr);
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "{} did not print its listeners {listeners:?}; stdout: {seen:?}",
                        program.display()
                    );
                }
            }
        }
        Self {
            child: Some(child),
            addrs,
            stdout: rx,
        }
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends a signal (`TERM`, `KILL`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        signal_pid(self.pid(), signal);
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` (`TERM`, `STOP`, …) to process `pid` with `kill(1)`.
pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
