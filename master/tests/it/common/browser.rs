//! Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket, JSON messages):
//! enough to load a page, run script in it, take a screenshot, and collect every console
//! message and uncaught exception.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::WebSocket;
use tungstenite::stream::MaybeTlsStream;

use super::{Env, Proc, tool};

pub struct Browser {
    _proc: Proc,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Console messages of level warning or error, exceptions and log errors, as text.
    pub problems: Vec<String>,
}

impl Browser {
    /// Starts Chromium (no name resolution: nothing but loopback addresses can load) with a
    /// blank page attached.
    pub fn start(env: &Env, width: u32, height: u32) -> Self {
        let mut child = Command::new(tool("LOBSTER_TEST_CHROMIUM", "chromium"))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", env.path("chromium").display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("DevTools listening on ") {
                        break u.trim().to_string();
                    }
                }
                _ => panic!("chromium exited before listening for DevTools"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let (ws, _) = tungstenite::connect(url.as_str()).expect("DevTools WebSocket");
        let mut b = Browser {
            _proc: Proc {
                child,
                name: "chromium".into(),
            },
            ws,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_string();
        let s = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = s["sessionId"].as_str().unwrap().to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({}));
        }
        b
    }

    /// Sends a command (to the page once attached) and returns its result; events read on
    /// the way are kept.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().expect("DevTools message");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled" => {
                let kind = p["type"].as_str().unwrap_or("");
                if matches!(kind, "error" | "warning" | "assert") {
                    self.problems.push(format!("console.{kind}: {}", p["args"]));
                }
            }
            "Runtime.exceptionThrown" => {
                self.problems
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            "Log.entryAdded" => {
                let level = p["entry"]["level"].as_str().unwrap_or("");
                if matches!(level, "error" | "warning") {
                    self.problems
                        .push(format!("log {level}: {}", p["entry"]["text"]));
                }
            }
            _ => {}
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The value of a script expression (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy.
    pub fn wait_for(&mut self, what: &str, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expression);
            if v.as_bool() == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still {v}; console: {:?}",
                self.problems
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the page as shown.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}
