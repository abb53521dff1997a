//! A real browser for tests: Debian's `chromium`, driven through its `chromedriver` by the W3C
//! WebDriver protocol (JSON over HTTP, spoken here with the `reqwest` client the crate already
//! has: the handful of commands the tests need — session, navigate, execute script, keys,
//! window size, screenshot, logs — are a few lines each, and chromedriver's performance log
//! (DevTools `Network.*` events) is reached through its legacy `se/log` endpoint, which
//! WebDriver crates leave out).
//!
//! Every browser runs behind a [`Recorder`]: a proxy on 127.0.0.1 that answers nothing and
//! records every request sent to it. A proxy auto-config script sends it every http(s) and
//! WebSocket request to any host but [`CHROMIUM_OWN_HOSTS`]: chromium itself talks to those
//! in the background whatever flags it is given (on-demand component updates, account checks),
//! so they go DIRECT (and fail: no internet) rather than into the record. A page's request to
//! one of them would still show in the DevTools log, the other witness. `file:` and `data:`
//! URLs never go through a proxy, and neither does loopback under a PAC script.
//!
//! `make test` installs the browser (`make browser`); `CHROMIUM` and `CHROMEDRIVER` name other
//! binaries.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// Records the first line of every request sent to it (`GET http://… HTTP/1.1`,
/// `CONNECT host:443 HTTP/1.1`), then closes the connection.
pub struct Recorder {
    pub addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                let _ = BufReader::new(&stream).read_line(&mut line);
                log.lock().unwrap().push(line.trim().to_string());
            }
        });
        Recorder { addr, seen }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Hosts chromium contacts on its own, seen here with every background-networking flag set.
pub const CHROMIUM_OWN_HOSTS: [&str; 6] = [
    "update.googleapis.com",
    "accounts.google.com",
    "clients2.google.com",
    "optimizationguide-pa.googleapis.com",
    "start.duckduckgo.com",
    "safebrowsing.googleapis.com",
];

/// The proxy auto-config that sends everything but chromium's own hosts to `proxy`.
fn pac(proxy: &Recorder) -> String {
    let own = serde_json::to_string(&CHROMIUM_OWN_HOSTS).unwrap();
    let script = format!(
        "function FindProxyForURL(url, host) {{ return {own}.indexOf(host) >= 0 ? 'DIRECT' : \
         'PROXY {}'; }}",
        proxy.addr
    );
    format!(
        "data:application/x-ns-proxy-autoconfig;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(script)
    )
}

/// A headless chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

fn binary(variable: &str, default: &str) -> String {
    let path = std::env::var(variable).unwrap_or_else(|_| default.to_string());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: `make browser` installs Debian's chromium and chromium-driver \
         (or set {variable})"
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless chromium whose every request goes to `proxy`.
    pub fn start(proxy: &Recorder) -> Browser {
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = {
            let free = TcpListener::bind("127.0.0.1:0").unwrap();
            free.local_addr().unwrap().port()
        };
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            runtime,
            _profile: profile,
        };
        browser.wait_ready();
        // The flags that keep chromium quiet on a machine with no internet (no background
        // fetches of its own), headless as root.
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            format!("--proxy-pac-url={}", pac(proxy)),
            format!("--user-data-dir={}", browser._profile.path().display()),
            "--window-size=1100,800".into(),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
        }}});
        let created = browser.command("POST", "/session", capabilities);
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.runtime.block_on(async {
                let r = self
                    .client
                    .get(format!("{}/status", self.base))
                    .send()
                    .await
                    .ok()?;
                serde_json::from_slice::<Value>(&r.bytes().await.ok()?).ok()
            });
            if status.is_some_and(|s| s["value"]["ready"] == true) {
                return;
            }
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command; its `value`, or a panic with the driver's error.
    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let answer: Value = self.runtime.block_on(async {
            let request = match method {
                "GET" => self.client.get(&url),
                "DELETE" => self.client.delete(&url),
                _ => self
                    .client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_string()),
            };
            let response = request
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
        });
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if value.get("error").is_some() {
            panic!("{method} {path}: {value}");
        }
        value
    }

    fn session(&self, method: &str, path: &str, body: Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session("POST", "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Runs `script` whose last argument is a callback, and returns what it was called with.
    pub fn run_async(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/async",
            json!({"script": script, "args": []}),
        )
    }

    /// Presses and releases each key in turn, as a person at the keyboard (WebDriver key
    /// codes: "\u{E014}" is →, "\u{E007}" Enter, "\u{E010}" End, "\u{E011}" Home).
    pub fn keys(&self, keys: &[&str]) {
        let actions: Vec<Value> = keys
            .iter()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.session(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        );
    }

    /// Sets the window's outer size.
    pub fn window(&self, width: u32, height: u32) {
        self.session(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    /// A PNG of what the window shows.
    pub fn screenshot(&self) -> Vec<u8> {
        let text = self.session("GET", "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(text.as_str().unwrap())
            .unwrap()
    }

    /// Every URL the pages asked for since the last call, from the DevTools `Network` events
    /// chromedriver logged (`requestWillBeSent`, and data: URLs it reports as
    /// `dataReceived`-only are not requests).
    pub fn requested_urls(&self) -> Vec<String> {
        let entries = self.session("POST", "/se/log", json!({"type": "performance"}));
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|m| {
                m["message"]["params"]["request"]["url"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }

    /// The browser console's messages since the last call (script errors show here).
    pub fn console(&self) -> Vec<String> {
        let entries = self.session("POST", "/se/log", json!({"type": "browser"}));
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.runtime.block_on(async {
                self.client
                    .delete(&url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
