//! The README's examples, run in order against a fresh standalone process
//! started as `make run` starts it (no secret given: it makes one and
//! prints `export` lines), the way a new user pastes them:
//!
//! - The banner's `export` lines go into one bash session first.
//! - Every ```` ```sh ```` block runs in that session, in order (variables
//!   carry over). Each JSON value the block prints must match, in order, a
//!   `# {…}` comment of the block: every key the comment names, with the
//!   value it shows, where a string holding `…` matches any string with
//!   that start and end, and a `timestamp` or `sent_at` any value of its
//!   type (they are the time it ran).
//! - A block without a language whose first line is `websocat URL` is a
//!   transcript: the URL is opened (its `$VARS` taken from the session),
//!   each `> ` message is sent and each `< ` message must be the next one
//!   the socket receives, matched as above. Sockets stay open to the end,
//!   so later examples reach them.
//! - Other blocks (`console`, `text`, `toml`, …) are not run.
//!
//! `127.0.0.1:8080` and `127.0.0.1:8081` stand for the process's edge and
//! server API, `./target/release/` for the directory of the binaries
//! under test.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use switchboard_testkit::process::{Process, binary};
use switchboard_testkit::switchboard::STANDALONE_ARGS;
use switchboard_testkit::ws::WsClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(10);

/// A fenced block of the README: its language and its lines.
struct Block {
    lang: String,
    lines: Vec<String>,
    /// The README line the block starts on, for messages.
    at: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (number, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    lines: Vec::new(),
                    at: number + 1,
                });
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => block.lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    blocks
}

/// The first JSON value of `text`, if it starts with one.
fn leading_json(text: &str) -> Option<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// Whether `actual` is what `expected` shows (see the module docs).
fn matches(expected: &Value, actual: &Value, key: &str) -> bool {
    match (expected, actual) {
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_))
            if key == "timestamp" || key == "sent_at" =>
        {
            true
        }
        (Value::String(shown), Value::String(got)) if shown.contains('…') => {
            let (start, end) = shown.split_once('…').unwrap_or((shown, ""));
            got.starts_with(start) && got.ends_with(end) && got.len() >= start.len() + end.len()
        }
        (Value::Object(shown), Value::Object(got)) => shown
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| matches(v, g, k))),
        (Value::Array(shown), Value::Array(got)) => {
            shown.len() == got.len() && shown.iter().zip(got).all(|(s, g)| matches(s, g, key))
        }
        _ => expected == actual,
    }
}

/// One bash process the blocks run in, as a user's terminal.
struct Shell {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: BufReader<tokio::process::ChildStdout>,
    runs: usize,
}

impl Shell {
    fn start() -> Self {
        let mut child = tokio::process::Command::new("bash")
            .arg("--noprofile")
            .arg("--norc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start bash");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Self {
            child,
            stdin,
            stdout,
            runs: 0,
        }
    }

    /// Runs `script` and returns what it printed.
    async fn run(&mut self, script: &str) -> String {
        self.runs += 1;
        let marker = format!("__readme_done_{}__", self.runs);
        let text = format!("{script}\nprintf '\\n{marker}\\n'\n");
        self.stdin
            .write_all(text.as_bytes())
            .await
            .expect("write to bash");
        self.stdin.flush().await.expect("flush bash");
        let mut printed = String::new();
        let read = async {
            loop {
                let mut line = String::new();
                let n = self.stdout.read_line(&mut line).await.expect("read bash");
                assert!(n > 0, "bash exited while running:\n{script}");
                if line.trim_end() == marker {
                    return;
                }
                printed.push_str(&line);
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("bash did not finish:\n{script}"));
        printed
    }

    /// `text` with each `$NAME` replaced by the session's variable.
    async fn expand(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let name: String = rest[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                out.push('$');
            } else {
                let value = self.run(&format!("printf '%s' \"${name}\"")).await;
                assert!(
                    !value.is_empty(),
                    "${name} is not set when the README uses it"
                );
                out.push_str(value.trim_end_matches('\n'));
            }
            rest = &rest[at + 1 + name.len()..];
        }
        out.push_str(rest);
        out
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The README's addresses and paths, made this process's.
struct Places {
    edge: String,
    api: String,
    bin: String,
}

impl Places {
    fn apply(&self, line: &str) -> String {
        line.replace("127.0.0.1:8080", &self.edge)
            .replace("127.0.0.1:8081", &self.api)
            .replace("./target/release/", &self.bin)
    }
}

/// The JSON values of `printed`, in order; anything else is a failure.
fn printed_values(printed: &str, block: &Block) -> Vec<Value> {
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(printed).into_iter::<Value>() {
        match value {
            Ok(value) => values.push(value),
            Err(e) => panic!(
                "README line {}: the block printed something that is not JSON ({e}):\n{printed}",
                block.at
            ),
        }
    }
    values
}

/// The `# {…}` answers a shell block shows, in order.
fn shown_answers(block: &Block) -> Vec<Value> {
    block
        .lines
        .iter()
        .filter_map(|line| {
            let at = line.find("# {")?;
            leading_json(&line[at + 2..])
        })
        .collect()
}

async fn run_shell_block(shell: &mut Shell, places: &Places, block: &Block) {
    let script: Vec<String> = block.lines.iter().map(|l| places.apply(l)).collect();
    let printed = shell.run(&script.join("\n")).await;
    let got = printed_values(&printed, block);
    let shown = shown_answers(block);
    assert_eq!(
        got.len(),
        shown.len(),
        "README line {}: the block printed {} answers and shows {}:\n{printed}",
        block.at,
        got.len(),
        shown.len()
    );
    for (shown, got) in shown.iter().zip(&got) {
        assert!(
            matches(shown, got, ""),
            "README line {}: shows {shown}, got {got}",
            block.at
        );
    }
}

async fn run_transcript(
    shell: &mut Shell,
    places: &Places,
    block: &Block,
    sockets: &mut Vec<WsClient>,
) {
    let first = block.lines[0].trim();
    let url = first
        .strip_prefix("websocat ")
        .expect("a transcript opens with websocat")
        .trim_matches('"');
    let url = shell.expand(&places.apply(url)).await;
    let mut ws = WsClient::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("README line {}: {url} refused: {e:?}", block.at));
    for (offset, line) in block.lines.iter().enumerate().skip(1) {
        let number = block.at + offset + 1;
        if let Some(sent) = line.strip_prefix("> ") {
            let sent = shell.expand(sent).await;
            let message = leading_json(&sent)
                .unwrap_or_else(|| panic!("README line {number}: `> ` is not JSON"));
            ws.send_json(&message).await;
        } else if let Some(shown) = line.strip_prefix("< ") {
            let shown = leading_json(shown)
                .unwrap_or_else(|| panic!("README line {number}: `< ` is not JSON"));
            let got = tokio::time::timeout(WAIT, ws.recv_json())
                .await
                .unwrap_or_else(|_| panic!("README line {number}: nothing came, {shown} shown"));
            assert!(
                matches(&shown, &got, ""),
                "README line {number}: shows {shown}, got {got}"
            );
        } else if !line.trim().is_empty() {
            panic!("README line {number}: a transcript line starts with `> ` or `< `");
        }
    }
    sockets.push(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_works_pasted_in_order() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    // As `make run` starts it: no secret given, so it makes one and says
    // how to use it.
    let process = Process::start(
        binary("switchboard"),
        &STANDALONE_ARGS,
        &[("SWITCHBOARD_LOG_FORMAT", "text".to_owned())],
        &["edge", "edge-admin", "router-api", "router-admin"],
    );
    switchboard_testkit::switchboard::wait_ready(process.addr("edge-admin")).await;
    let mut exports = Vec::new();
    while let Ok(line) = process.stdout.recv_timeout(Duration::from_secs(2)) {
        if let Some(export) = line.trim().strip_prefix("export ") {
            exports.push(format!("export {export}"));
        }
    }
    for name in [
        "SWITCHBOARD_JWT_SECRET",
        "TOKEN",
        "USER_TOKEN",
        "APP_TOKEN",
        "DEVICE_TOKEN",
        "SERVICE",
    ] {
        assert!(
            exports
                .iter()
                .any(|e| e.starts_with(&format!("export {name}="))),
            "the banner exports {name}: {exports:?}"
        );
    }
    let bin = binary("edge");
    let places = Places {
        edge: process.addr("edge").to_string(),
        api: process.addr("router-api").to_string(),
        bin: format!("{}/", bin.parent().expect("a directory").display()),
    };
    let mut shell = Shell::start();
    shell.run(&exports.join("\n")).await;
    let mut sockets = Vec::new();
    let mut ran = 0;
    for block in blocks(&readme) {
        let transcript = block
            .lines
            .first()
            .is_some_and(|l| l.trim_start().starts_with("websocat "));
        match block.lang.as_str() {
            "sh" => run_shell_block(&mut shell, &places, &block).await,
            "" if transcript => run_transcript(&mut shell, &places, &block, &mut sockets).await,
            _ => continue,
        }
        ran += 1;
    }
    assert!(ran >= 8, "only {ran} README examples ran");
}

#[test]
fn answers_match_as_the_readme_shows_them() {
    let shown = serde_json::json!({"sessionId": "9f2c…e41.default", "n": 1, "timestamp": 1});
    let got = serde_json::json!({"sessionId": "9f2cabc123e41.default", "n": 1, "timestamp": 7, "more": true});
    assert!(matches(&shown, &got, ""));
    let other = serde_json::json!({"sessionId": "xx.default", "n": 1, "timestamp": 7});
    assert!(!matches(&shown, &other, ""));
    let wrong = serde_json::json!({"sessionId": "9f2c…e41.default", "n": 2, "timestamp": 7});
    assert!(!matches(&shown, &wrong, ""));
    assert!(!matches(
        &serde_json::json!({"a": 1}),
        &serde_json::json!({}),
        ""
    ));
    assert!(!matches(
        &serde_json::json!([1, 2]),
        &serde_json::json!([1]),
        ""
    ));
}
