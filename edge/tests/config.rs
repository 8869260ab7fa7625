//! Settings reach the running binary from a config file, environment
//! variables and flags, in that order of strength.

use serde_json::json;
use switchboard_testkit::switchboard::{self, join_group};
use switchboard_testkit::ws::Event;

struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "switchboard-edge-config-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends a 2 KiB echo and tells whether it came back (else: closed 1009).
async fn two_kib_passes(edge: std::net::SocketAddr) -> bool {
    let mut ws = join_group(edge, "t1", "room", "alice", None).await;
    let message = json!({"msg_type":"msg","target":"echo","msg":"z".repeat(2048)});
    ws.send_json(&message).await;
    match ws.recv(std::time::Duration::from_secs(5)).await {
        Some(Event::Text(_)) => true,
        Some(Event::Close(1009, _)) => false,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn file_settings_apply() {
    let file = TempFile::new("max-message-size = 1024\nlog_format = \"text\"\n");
    let edge = switchboard::standalone(&["--config", file.path()]);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    assert!(
        !two_kib_passes(edge.addr("edge")).await,
        "the file's 1 KiB limit applies"
    );
}

#[tokio::test]
async fn env_beats_file_and_flag_beats_env() {
    let file = TempFile::new("max-message-size = 1024\n");
    let env = [("SWITCHBOARD_MAX_MESSAGE_SIZE", "8192".to_owned())];
    let edge = switchboard::standalone_with_env(&["--config", file.path()], &env);
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    assert!(
        two_kib_passes(edge.addr("edge")).await,
        "env 8 KiB beats the file's 1 KiB"
    );

    let edge = switchboard::standalone_with_env(
        &["--config", file.path(), "--max-message-size", "1500"],
        &env,
    );
    switchboard::wait_ready(edge.addr("edge-admin")).await;
    assert!(
        !two_kib_passes(edge.addr("edge")).await,
        "the flag's 1500 bytes beat env"
    );
}

/// Standalone mode is the `switchboard` binary: an edge asked for it, by
/// flag, env var or config file key, refuses to start and says where it
/// went.
#[test]
fn the_edge_refuses_standalone_mode_and_names_the_switchboard_binary() {
    let file = TempFile::new("standalone = true\n");
    // (flags, environment)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        (&["--standalone"], &[]),
        (&[], &[("SWITCHBOARD_STANDALONE", "true")]),
        (&["--config", file.path()], &[]),
    ];
    for (args, env) in cases {
        let out = std::process::Command::new(switchboard_testkit::binary("edge"))
            .args(args)
            .env("SWITCHBOARD_JWT_SECRET", switchboard::SECRET)
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .output()
            .expect("run edge");
        assert!(!out.status.success(), "{args:?} {env:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("`switchboard`") && stderr.contains("make run"),
            "{args:?} {env:?}: {stderr}"
        );
    }
}
