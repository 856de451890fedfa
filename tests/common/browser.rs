//! A small cookie-keeping client that walks pagegate's forms the way a browser does: it follows
//! nothing by itself, so each redirect can be asserted, and it reads hidden form fields back.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http_body_util::Full;

use super::client::{self, Answer};

pub struct Browser {
    pub addr: SocketAddr,
    pub host: String,
    /// Cookie name → value, as the browser would send them back.
    pub cookies: BTreeMap<String, String>,
    /// Extra headers sent with every request.
    pub extra: Vec<(String, String)>,
}

impl Browser {
    pub fn new(addr: SocketAddr, host: &str) -> Browser {
        Browser {
            addr,
            host: host.to_string(),
            cookies: BTreeMap::new(),
            extra: Vec::new(),
        }
    }

    /// The `Cookie` header the browser would send, if it holds any cookie.
    pub fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn keep_cookies(&mut self, answer: &Answer) {
        for value in answer.headers.get_all("set-cookie") {
            let text = value.to_str().expect("ascii cookie");
            let pair = text.split(';').next().expect("pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            let expired = text.contains("Max-Age=0");
            if expired {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: Option<(&str, String)>) -> Answer {
        let mut req = client::request(method, &self.host, path);
        if let Some(c) = self.cookie_header() {
            req = req.header("cookie", c);
        }
        for (k, v) in &self.extra {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = match body {
            Some((content_type, text)) => req
                .header("content-type", content_type)
                .body(Full::from(text)),
            None => req.body(Full::default()),
        }
        .expect("request");
        let answer = client::send(self.addr, req).await;
        self.keep_cookies(&answer);
        answer
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            "POST",
            path,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
    }

    /// Opens the email form for `next` and returns its CSRF token.
    pub async fn open_login(&mut self, next: &str) -> String {
        let target = format!(
            "/_pagegate/login?next={}",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        let form = self.get(&target).await;
        assert_eq!(form.status, 200, "{}", form.body);
        hidden(&form.body, "csrf").expect("the form has a CSRF token")
    }

    /// Whether the browser holds a pagegate session cookie.
    pub fn has_session(&self) -> bool {
        self.cookies
            .keys()
            .any(|k| k.contains("pagegate-") && !k.contains("csrf"))
    }
}

/// The value of a hidden (or any) input named `name` in an HTML page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value_at = tag.find("value=\"")? + 7;
    let value = &tag[value_at..];
    Some(
        value[..value.find('"')?]
            .replace("&amp;", "&")
            .replace("&#x2f;", "/")
            .replace("&#47;", "/"),
    )
}
