//! A real headless Chromium for end-to-end tests: Debian's `chromium` driven over WebDriver by
//! `chromedriver` (package `chromium-driver`), through fantoccini. `.ci/run` installs both; a test
//! that needs them fails (never skips) when they are missing.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tempfile::TempDir;

const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

fn installed(candidates: &[&str], package: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{package} is not installed (looked for {candidates:?}). This test drives a real \
                 headless Chromium: run .ci/run, which installs the Debian packages chromium and \
                 chromium-driver, or `apt-get install chromium chromium-driver`."
            )
        })
}

/// A running chromedriver, stopped when dropped.
pub struct ChromeDriver {
    process: tokio::process::Child,
    addr: SocketAddr,
    chromium: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver on a free local port and waits until it answers.
    pub async fn start() -> ChromeDriver {
        let chromium = installed(CHROMIUM, "chromium");
        let driver = installed(CHROMEDRIVER, "chromium-driver (chromedriver)");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let process = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return ChromeDriver {
                    process,
                    addr,
                    chromium,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not start listening on {addr}");
    }

    /// A new browser with its own empty profile (no cookies), window `width`×`height`.
    pub async fn session(&self, width: u32, height: u32) -> Chrome {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            "--lang=en-US".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium.display().to_string(),
                "args": args,
                "prefs": { "intl.accept_languages": "en-US,en" },
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{}", self.addr))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start chromium: {e}"));
        Chrome {
            client,
            _profile: profile,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.process.kill().await;
    }
}

/// One browser session.
pub struct Chrome {
    pub client: Client,
    _profile: TempDir,
}

impl Chrome {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The visible text of the page. A page being replaced (a form just submitted, a redirect)
    /// can swap its body out between finding it and reading it: then it is read again, for up
    /// to five seconds.
    pub async fn text(&self) -> String {
        let mut last_error = None;
        for _ in 0..50 {
            match self.client.find(Locator::Css("body")).await {
                Ok(body) => match body.text().await {
                    Ok(text) => return text,
                    Err(e) => last_error = Some(e),
                },
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page's body could not be read: {last_error:?}");
    }

    /// Types `text` into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.expect("clear");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// Clicks the element `css` and waits for the page it leads to, if any.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Waits until the page's path starts with `prefix`.
    pub async fn wait_for_path(&self, prefix: &str) -> String {
        for _ in 0..100 {
            let path = self.path().await;
            if path.starts_with(prefix) {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the browser stayed on {} (waiting for {prefix}): {}",
            self.path().await,
            self.text().await
        );
    }

    /// Saves a screenshot of the whole page at `width` CSS pixels (the window grows to the
    /// page's height, up to `max_height`) as `dir/name`.
    pub async fn screenshot(&self, dir: &Path, name: &str, width: u32, max_height: u32) {
        self.client
            .set_window_size(width, 500)
            .await
            .expect("window size");
        // The window is taller than the page's viewport by the browser's own bars.
        let measured = self
            .client
            .execute(
                "return [Math.ceil(document.documentElement.scrollHeight), \
                 window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await
            .expect("page height");
        let number = |i: usize| measured.get(i).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let (content, bars) = (number(0).max(400), number(1));
        self.client
            .set_window_size(width, content.min(max_height) + bars)
            .await
            .expect("window size");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }

    /// Saves a screenshot of the element `css` as `dir/name`.
    pub async fn screenshot_of(&self, css: &str, dir: &Path, name: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        let png = element.screenshot().await.expect("element screenshot");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
