//! A second host on this machine: a network namespace joined to the host
//! by a veth pair, for tests of what crosses a network (a process cut off
//! from its peers while both stay alive). Needs root, `ip` (iproute2) and
//! `iptables`; `.ci/run` installs them.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::process::Process;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace with one link to the host; removed on drop.
pub struct TestHost {
    name: String,
    host_link: String,
    /// The host's address on the link: what processes in the namespace dial.
    pub host_ip: String,
    /// The namespace's address on the link.
    pub ip: String,
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (needs iproute2 and iptables)"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {} (network namespaces need root)",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestHost {
    /// Makes the namespace and its link, with a /30 of 10.203.0.0/16 of
    /// its own (from this process's id and a counter, so test binaries
    /// running side by side do not collide).
    pub fn create() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let block = (pid.wrapping_mul(7) + n) % (256 * 64);
        let (third, fourth) = (block / 64, (block % 64) * 4);
        let name = format!("sbns{pid}x{n}");
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}", (pid << 8) | (n & 0xff));
        let host_link = format!("sbh{tag}");
        let ns_link = format!("sbn{tag}");
        let host_ip = format!("10.203.{third}.{}", fourth + 1);
        let ip = format!("10.203.{third}.{}", fourth + 2);
        run("ip", &["netns", "add", &name]);
        let host = Self {
            name,
            host_link,
            host_ip,
            ip,
        };
        run(
            "ip",
            &[
                "link",
                "add",
                &host.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &ns_link,
            ],
        );
        run("ip", &["link", "set", &ns_link, "netns", &host.name]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", host.host_ip),
                "dev",
                &host.host_link,
            ],
        );
        run("ip", &["link", "set", &host.host_link, "up"]);
        host.exec(&["ip", "link", "set", "lo", "up"]);
        host.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", host.ip),
            "dev",
            &ns_link,
        ]);
        host.exec(&["ip", "link", "set", &ns_link, "up"]);
        host
    }

    fn exec(&self, command: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        run("ip", &args);
    }

    /// Starts `program` inside the namespace, like [`Process::start`].
    pub fn start(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        names: &[&str],
    ) -> Process {
        let program = program.to_str().expect("UTF-8 program path");
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        Process::start("ip".into(), &all, env, names)
    }

    /// Cuts the namespace off from the host's TCP `ports` (both ways)
    /// while everything stays up; other ports still pass.
    pub fn cut(&self, ports: &[u16]) {
        for port in ports {
            let port = port.to_string();
            self.exec(&[
                "iptables",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                &self.host_ip,
                "--dport",
                &port,
                "-j",
                "DROP",
            ]);
            self.exec(&[
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "-s",
                &self.host_ip,
                "--sport",
                &port,
                "-j",
                "DROP",
            ]);
        }
    }

    /// Heals every cut.
    pub fn heal(&self) {
        self.exec(&["iptables", "-F", "OUTPUT"]);
        self.exec(&["iptables", "-F", "INPUT"]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
