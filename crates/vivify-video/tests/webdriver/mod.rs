//! Headless Chromium driven through chromedriver's W3C WebDriver HTTP API, for the browser tests
//! (this crate's MP4 playback test and vivify-cli's `vivify serve` page test, which includes this
//! file by path).
#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium flags every test uses: headless, no sandbox (CI runs as root), nothing that reaches
/// the network.
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A chromedriver process with one browser session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`.
    pub session: String,
    /// The async-script timeout; an HTTP call may take 30 s more.
    timeout: Duration,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session with `extra_args` on top of the
    /// common flags; async scripts may run for `timeout`.
    pub fn start(
        chromium: &str,
        chromedriver: &str,
        extra_args: &[&str],
        timeout: Duration,
    ) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver,
            session: String::new(),
            timeout,
            _profile: profile,
        };
        let start = Instant::now();
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.extend(extra_args.iter().map(|a| a.to_string()));
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let session = browser.request(
            "POST",
            &format!("{base}/session"),
            Some(
                json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": chromium, "args": args}}}}),
            ),
        );
        let sid = session["sessionId"].as_str().expect("session id");
        browser.session = format!("{base}/session/{sid}");
        let script_ms = timeout.as_millis() as u64;
        browser.call("POST", "/timeouts", Some(json!({"script": script_ms})));
        browser
    }

    /// A WebDriver command on the session (`path` after `/session/ID`); its `value`. Fails the
    /// test on a WebDriver error.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.request(method, &format!("{}{path}", self.session), body)
    }

    /// Runs `code` as an async script (its last argument is the callback) with `args`.
    pub fn script(&self, code: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": code, "args": args})),
        )
    }

    fn request(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.timeout + Duration::from_secs(30)))
            .build()
            .into();
        let resp = match (method, body) {
            ("GET", _) => agent.get(url).call(),
            ("DELETE", _) => agent.delete(url).call(),
            (_, body) => agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let text = resp
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
            .body_mut()
            .with_config()
            .limit(50 << 20)
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
        assert!(!v["value"]["error"].is_string(), "{method} {url}: {v}");
        v["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&self.session).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
