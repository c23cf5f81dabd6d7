//! The admin status page in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver), against the real binary. tests/run-all.sh installs both packages.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use crate::common::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver on a loopback port, with one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    fn start() -> Browser {
        let chromium = find_program(&["chromium", "chromium-browser"]).expect(
            "chromium is not installed: tests/run-all.sh installs Debian's chromium and \
             chromium-driver packages (apt-get install chromium chromium-driver)",
        );
        let chromedriver = find_program(&["chromedriver"])
            .expect("chromedriver is not installed: apt-get install chromium-driver");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for(Duration::from_secs(30), "chromedriver to listen", || {
            TcpStream::connect(addr).ok()
        });
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://{addr}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let r = b.post(
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_string_lossy(),
                    // Root in a container: no sandbox; /dev/shm may be small.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1100"]
                }
            }}}),
        );
        b.session = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        b
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let r = self
            .http
            .post(url)
            .json(&body)
            .send()
            .expect("WebDriver request");
        let v: Value = r.json().expect("WebDriver JSON");
        assert!(
            v["value"]["error"].is_null(),
            "WebDriver {path} failed: {v}"
        );
        v["value"].clone()
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let v: Value = self
            .http
            .get(url)
            .send()
            .expect("WebDriver request")
            .json()
            .expect("WebDriver JSON");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url}));
    }

    /// Runs `return …` in the page.
    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
    }

    fn text(&self, css: &str) -> Option<String> {
        let sel = serde_json::to_string(css).expect("selector");
        self.js(&format!(
            "const e = document.querySelector({sel}); return e ? e.textContent : null;"
        ))
        .as_str()
        .map(str::to_string)
    }

    fn element(&self, css: &str) -> String {
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// A real click, dispatched by the browser as a user's would be.
    fn click(&self, css: &str) {
        let e = self.element(css);
        self.post(&format!("/element/{e}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.post(&format!("/element/{e}/clear"), json!({}));
        self.post(&format!("/element/{e}/value"), json!({"text": text}));
    }

    fn screenshot(&self, to: &std::path::Path) {
        let b64 = self.get("/screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 screenshot"))
            .expect("screenshot decodes");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        std::fs::write(to, png).expect("write screenshot");
    }

    fn wait_text(&self, css: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = self.text(css);
            if let Some(t) = &t
                && want(t)
            {
                return t.clone();
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}: {css} reads {t:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn status_page_shows_clusters_drains_a_cluster_and_explains_in_chromium() {
    let server = Server::start(&repo_zones());
    let b = Browser::start();
    b.goto(&format!("http://{}/", server.admin));

    // Every demo cluster, healthy (the harness serves the demo VIPs), on the table and the map.
    for c in ["new-york", "houston", "los-angeles"] {
        b.wait_text(
            &format!("#clusters tr[data-cluster='{c}'] .status"),
            &format!("{c} healthy"),
            |t| t == "healthy",
        );
        assert!(
            b.js(&format!(
                "return !!document.querySelector(\"#map g[data-cluster='{c}']\")"
            )) == json!(true),
            "{c} is on the map"
        );
    }
    let meta = b.text("#meta").unwrap_or_default();
    assert!(
        meta.contains("snapshot"),
        "header shows the snapshot: {meta}"
    );
    assert!(
        meta.contains("GeoIP"),
        "header shows the GeoIP database: {meta}"
    );
    assert_eq!(b.text("#drains").as_deref(), Some("none"));

    // A drill from the page: drain Los Angeles with a reason.
    b.type_into("#drain-for", "15m");
    b.type_into("#drain-reason", "chromium drill");
    b.click("#clusters button.drain[data-cluster='los-angeles']");
    b.wait_text(
        "#clusters tr[data-cluster='los-angeles'] .status",
        "los-angeles drained",
        |t| t == "drained",
    );
    let drain_row = b.wait_text(
        "#drains tr[data-drain='los-angeles']",
        "the drain listed",
        |t| t.contains("chromium drill"),
    );
    assert!(drain_row.contains("los-angeles"), "{drain_row}");
    assert!(
        drain_row.contains("status page"),
        "who drained: {drain_row}"
    );
    b.wait_text("#events tbody", "the drain event", |t| {
        t.contains("drain") && t.contains("los-angeles") && t.contains("chromium drill")
    });
    // The page's click reached the server: San Francisco now goes to Houston.
    let m = server
        .q()
        .ecs("192.0.2.0", 24)
        .ask("web.shop.demo.svc.gslb.example.com", RecordType::A);
    assert_eq!(
        addrs(&m),
        vec!["127.20.0.1"],
        "drained cluster left the answer"
    );
    let (code, state) = server.http("GET", "/api/v1/state");
    assert_eq!(code, 200);
    let state: Value = serde_json::from_str(&state).expect("state JSON");
    assert_eq!(state["drains"]["los-angeles"]["reason"], "chromium drill");

    // "Why would this client get this answer?" from the form.
    b.type_into("#explain-name", "web.shop.demo.svc.gslb.example.com");
    b.type_into("#explain-client", "192.0.2.10");
    b.click("#explain-form button[type=submit]");
    let decision = b.wait_text("#explain-decision", "the explain decision", |t| {
        !t.is_empty()
    });
    assert!(decision.contains("houston"), "decision: {decision}");
    let text = b.text("#explain-text").unwrap_or_default();
    assert!(
        text.contains("127.20.0.1"),
        "explain shows the answer: {text}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    b.screenshot(&shot);
    eprintln!("status page screenshot: {}", shot.display());

    // Undrain from the page.
    b.click("#clusters button.undrain[data-cluster='los-angeles']");
    b.wait_text(
        "#clusters tr[data-cluster='los-angeles'] .status",
        "los-angeles back",
        |t| t == "healthy",
    );
    b.wait_text("#drains", "no drains", |t| t == "none");
}
