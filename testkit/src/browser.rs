//! A headless Chromium driven over the DevTools protocol, for tests of the
//! pages the edge serves.
//!
//! Chromium is started with `--remote-debugging-port=0`; the port it picked
//! is read from the `DevTools listening on ws://…` line it prints on
//! stderr. Each [`Page`] is a tab opened with `PUT /json/new` and driven on
//! its own DevTools WebSocket (tokio-tungstenite): navigate, evaluate
//! JavaScript, wait for DOM text, screenshot. A wait that times out saves a
//! screenshot and the page's HTML under [`artifacts_dir`] before it panics.
//!
//! Without a Chromium binary, [`Browser::start_or_skip`] returns `None` (the
//! test prints why and passes), unless `SWITCHBOARD_REQUIRE_TOOLS` is set,
//! then it panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`Page::wait_text`] and DevTools calls wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// Binary names tried on `PATH`, after `SWITCHBOARD_CHROMIUM` if set.
const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The Chromium to use: `SWITCHBOARD_CHROMIUM`, else the first of
/// [`CANDIDATES`] found on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHBOARD_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| CANDIDATES.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `target/playground-artifacts/`: screenshots and HTML of failed waits.
pub fn artifacts_dir() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    // target/debug → target
    dir.pop();
    dir.join("playground-artifacts")
}

/// A headless Chromium process, killed (with its helpers) on drop.
pub struct Browser {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium, or returns `None` after saying why when there is
    /// none and `SWITCHBOARD_REQUIRE_TOOLS` is unset.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match find_chromium() {
            Some(program) => Some(Self::start(&program)),
            None => {
                assert!(
                    std::env::var_os("SWITCHBOARD_REQUIRE_TOOLS").is_none(),
                    "{test}: chromium is required here (apt-get install chromium)"
                );
                eprintln!("skipped {test}: chromium is not installed (apt-get install chromium)");
                None
            }
        }
    }

    /// Starts `program` headless on a free DevTools port.
    pub fn start(program: &Path) -> Self {
        let profile = std::env::temp_dir().join(format!(
            "switchboard-chromium-{}-{}",
            std::process::id(),
            next_number()
        ));
        std::fs::create_dir_all(&profile).expect("browser profile dir");
        let mut command = Command::new(program);
        command
            .args([
                "--headless=new",
                // Root (CI containers) cannot use Chromium's sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--mute-audio",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group, so drop can end the renderers too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = devtools_port(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
                if std::env::var_os("SWITCHBOARD_BROWSER_LOG").is_some() {
                    eprintln!("chromium: {line}");
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("chromium printed no DevTools address within 20 s");
        Self {
            child,
            port,
            profile,
        }
    }

    /// A new tab with a `width`×`height` viewport (CSS pixels), on
    /// about:blank; `name` names its artefacts.
    pub async fn page(&self, name: &str, width: u32, height: u32) -> Page {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let reply = crate::http::request("PUT", addr, "/json/new?about:blank", &[], "").await;
        assert_eq!(reply.status, 200, "DevTools /json/new: {:?}", reply.body);
        let target = reply.json();
        let url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("webSocketDebuggerUrl")
            .to_owned();
        let (stream, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("DevTools socket {url}: {e}"));
        let mut page = Page {
            stream,
            next_id: 1,
            name: name.to_owned(),
            console: Vec::new(),
        };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn devtools_port(line: &str) -> Option<u16> {
    let rest = line.split("DevTools listening on ws://").nth(1)?;
    let host_port = rest.split('/').next()?;
    host_port.rsplit(':').next()?.parse().ok()
}

fn next_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One tab, driven over its DevTools WebSocket.
pub struct Page {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    name: String,
    /// Console messages and uncaught exceptions, for failure reports.
    console: Vec<String>,
}

impl Page {
    /// Calls a DevTools method and returns its `result`; events that
    /// arrive meanwhile are skipped but for console output.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.stream
            .send(Message::text(request.to_string()))
            .await
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools {method}: no answer within {WAIT:?}"));
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => panic!("DevTools {method}: socket ended: {other:?}"),
                }
            };
            let message: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("DevTools {method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.note_event(&message);
        }
    }

    fn note_event(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = event["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["value"].to_string())
                    .collect();
                self.console.push(format!(
                    "console.{}: {}",
                    event["params"]["type"].as_str().unwrap_or("log"),
                    args.join(" ")
                ));
            }
            Some("Runtime.exceptionThrown") => {
                self.console.push(format!(
                    "exception: {}",
                    event["params"]["exceptionDetails"]
                ));
            }
            _ => {}
        }
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn goto(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url})).await;
        assert!(
            result.get("errorText").is_none(),
            "navigate {url}: {result}"
        );
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            &format!("{url} to load"),
        )
        .await;
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            self.fail(&format!("{expression} threw {details}")).await;
        }
        result["result"]["value"].clone()
    }

    /// Clicks the element `selector` names (as a user would, by `click()`).
    pub async fn click(&mut self, selector: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.click(); return true; }})()",
                s = js_string(selector)
            ))
            .await;
        if found != Value::Bool(true) {
            self.fail(&format!("no element {selector} to click")).await;
        }
    }

    /// Sets the value of an input, textarea or select and fires `input`
    /// and `change`, as typing or choosing would.
    pub async fn fill(&mut self, selector: &str, value: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.value = {v}; \
                 e.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
                s = js_string(selector),
                v = js_string(value)
            ))
            .await;
        if found != Value::Bool(true) {
            self.fail(&format!("no element {selector} to fill")).await;
        }
    }

    /// The `textContent` of `selector` (empty when there is none).
    pub async fn text(&mut self, selector: &str) -> String {
        let value = self
            .eval(&format!(
                "(document.querySelector({}) || {{}}).textContent || ''",
                js_string(selector)
            ))
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the text of `selector` contains `needle`, and returns
    /// that text; on timeout saves artefacts and panics.
    pub async fn wait_text(&mut self, selector: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text(selector).await;
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!(
                    "{selector} never contained {needle:?}; it holds {text:?}"
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the JavaScript `condition` is true; on timeout saves
    /// artefacts and panics, saying it waited for `what`.
    pub async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.eval(&format!("!!({condition})")).await == Value::Bool(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                self.fail(&format!("waited {WAIT:?} for {what}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let result = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64_decode(result["data"].as_str().unwrap_or_default())
    }

    /// Saves a PNG of the viewport as `<name>.png` under [`artifacts_dir`]
    /// (what a passing test leaves, to look at); returns its path.
    pub async fn save_screenshot(&mut self) -> PathBuf {
        let dir = artifacts_dir();
        let _ = std::fs::create_dir_all(&dir);
        let png = dir.join(format!("{}.png", self.name));
        let shot = self.screenshot().await;
        let _ = std::fs::write(&png, shot);
        png
    }

    /// Saves `<name>.png`, `<name>.html` and `<name>.txt` (the reason and
    /// the console) under [`artifacts_dir`], then panics with `reason`.
    pub async fn fail(&mut self, reason: &str) -> ! {
        let png = self.save_screenshot().await;
        let dir = artifacts_dir();
        let html = self
            .call(
                "Runtime.evaluate",
                json!({"expression": "document.documentElement.outerHTML", "returnByValue": true}),
            )
            .await;
        let _ = std::fs::write(
            dir.join(format!("{}.html", self.name)),
            html["result"]["value"].as_str().unwrap_or_default(),
        );
        let report = format!("{reason}\n\n{}\n", self.console.join("\n"));
        let _ = std::fs::write(dir.join(format!("{}.txt", self.name)), &report);
        panic!(
            "{}: {reason} (screenshot {}; console: {:?})",
            self.name,
            png.display(),
            self.console
        );
    }
}

/// `text` as a JavaScript string literal.
pub fn js_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// Standard base64 (DevTools screenshots), ignoring padding.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for sixbits in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(sixbits);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk="), b"hi");
        assert_eq!(super::base64_decode("YWJj"), b"abc");
    }

    #[test]
    fn devtools_port_is_read_from_stderr() {
        assert_eq!(
            super::devtools_port("DevTools listening on ws://127.0.0.1:40123/devtools/browser/abc"),
            Some(40123)
        );
        assert_eq!(super::devtools_port("something else"), None);
    }
}
