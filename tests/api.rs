//! The grant endpoint and the admin API end to end: a real gateway in front of a real upstream,
//! a real SMTP server, API keys from the config, and buyers signing in through the real flow.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::api::{ApiClient, BASE, Cred, body, error, signature, unix_now};
use common::browser::{Browser, hidden};
use common::client::Answer;
use common::process::GatewayProcess;
use common::smtp::TestSmtp;
use common::{TestGateway, TestUpstream};
use serde_json::{Value, json};

const MAIL_WAIT: Duration = Duration::from_secs(10);

/// `grant` scope, every page.
const SHOP: &str = "shop-secret-0123456789abcdef";
/// `admin` scope, every page.
const ADMIN: &str = "admin-secret-0123456789abcdef";
/// `admin` scope, limited to the site "school".
const SCHOOL_ADMIN: &str = "school-admin-secret-0123456789";
/// `grant` scope, limited to the page "course".
const COURSE_SHOP: &str = "course-shop-secret-0123456789";
/// `admin` scope, limited to the page "course".
const COURSE_ADMIN: &str = "course-admin-secret-0123456789";

/// Two sites: "school" (pages course and extra) and "club" (page members), mailing through a
/// test SMTP server, with five API keys.
struct Gate {
    upstream: TestUpstream,
    smtp: TestSmtp,
    gateway: TestGateway,
    api: ApiClient,
}

impl Gate {
    async fn open() -> Gate {
        let upstream = TestUpstream::start().await;
        let smtp = TestSmtp::start();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [[site]]\nname = \"school\"\ntitle = \"Demo School\"\nhosts = [\"school.test\"]\n\
             upstream = \"http://{up}\"\npublic_url = \"http://school.test\"\n\n\
             [[site.page]]\nid = \"course\"\ntitle = \"Video course\"\npaths = [\"/course/\"]\n\n\
             [[site.page]]\nid = \"extra\"\ntitle = \"Bonus lessons\"\npaths = [\"/extra/\"]\n\n\
             [[site]]\nname = \"club\"\ntitle = \"Chess Club\"\nhosts = [\"club.test\"]\n\
             upstream = \"http://{up}\"\npublic_url = \"http://club.test\"\n\n\
             [[site.page]]\nid = \"members\"\ntitle = \"Members\"\npaths = [\"/members/\"]\n\n\
             {mail}\n[auth]\nresend_after = \"1ms\"\n\n\
             [[api_key]]\nname = \"shop\"\nsecret = \"{SHOP}\"\nscopes = [\"grant\"]\n\n\
             [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nscopes = [\"admin\"]\n\n\
             [[api_key]]\nname = \"school-admin\"\nsecret = \"{SCHOOL_ADMIN}\"\n\
             scopes = [\"admin\"]\nsites = [\"school\"]\n\n\
             [[api_key]]\nname = \"course-shop\"\nsecret = \"{COURSE_SHOP}\"\n\
             scopes = [\"grant\"]\npages = [\"course\"]\n\n\
             [[api_key]]\nname = \"course-admin\"\nsecret = \"{COURSE_ADMIN}\"\n\
             scopes = [\"admin\"]\npages = [\"course\"]\n",
            up = upstream.addr,
            mail = smtp.mail_toml("Demo School <school@example.com>"),
        );
        let gateway = TestGateway::start(&toml).await;
        let api = ApiClient::new(gateway.addr, "school.test");
        Gate {
            upstream,
            smtp,
            gateway,
            api,
        }
    }

    fn browser(&self) -> Browser {
        Browser::new(self.gateway.addr, "school.test")
    }

    async fn grant(&self, key: &str, grant: Value) -> Answer {
        self.api.post("/grants", &Cred::Bearer(key), &grant).await
    }

    /// Emails on a page's list, as the admin API lists them.
    async fn emails(&self, page: &str) -> Vec<String> {
        self.api.emails(page, ADMIN).await
    }

    /// The whole audit log as the unlimited admin key sees it.
    async fn audit(&self, key: &str) -> Vec<Value> {
        let answer = self.api.get("/audit?limit=1000", &Cred::Bearer(key)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        body(&answer)["entries"]
            .as_array()
            .expect("entries")
            .clone()
    }

    /// Signs `email` in through the email form and the mailed code; returns the verify answer.
    async fn sign_in(&self, browser: &mut Browser, email: &str, next: &str) -> Answer {
        let before = self.smtp.messages().len();
        let csrf = browser.open_login(next).await;
        let asked = browser
            .post_form(
                "/_pagegate/login",
                &[("email", email), ("next", next), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(asked.status, 200, "{}", asked.body);
        let mail = self.smtp.wait_for(before + 1, MAIL_WAIT).await[before].clone();
        assert_eq!(mail.to, [email]);
        let code = mail.code(6).expect("a code in the sign-in mail");
        let csrf = browser.open_login(next).await;
        browser
            .post_form(
                "/_pagegate/verify",
                &[
                    ("email", email),
                    ("code", &code),
                    ("next", next),
                    ("csrf", &csrf),
                ],
            )
            .await
    }
}

fn ts(text: &Value) -> i64 {
    text.as_str()
        .expect("a timestamp")
        .parse::<jiff::Timestamp>()
        .expect("RFC 3339")
        .as_second()
}

fn grants_in(audit: &[Value]) -> Vec<&Value> {
    audit.iter().filter(|e| e["kind"] == "grant").collect()
}

#[tokio::test]
async fn a_granted_buyer_is_welcomed_by_mail_and_signs_in_through_the_real_flow() {
    let gate = Gate::open().await;
    let answer = gate
        .grant(
            SHOP,
            json!({"page": "course", "email": "Ann@Example.com", "name": "Ann Lee",
                   "days": 30, "order_id": "1001", "notify": true}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let client = body(&answer);
    assert_eq!(
        (
            &client["page"],
            &client["email"],
            &client["name"],
            &client["source"]
        ),
        (
            &json!("course"),
            &json!("ann@example.com"),
            &json!("Ann Lee"),
            &json!("grant")
        )
    );
    assert_eq!(
        (&client["created"], &client["active"]),
        (&json!(true), &json!(true))
    );
    let until = ts(&client["access_until"]);
    assert!((until - (unix_now() + 30 * 86_400)).abs() < 60, "{until}");

    let mail = gate.smtp.wait_for(1, MAIL_WAIT).await[0].clone();
    assert_eq!(mail.to, ["ann@example.com"]);
    let subject = mail.subject().expect("subject");
    assert!(
        subject.contains("Video course") && subject.contains("Demo School"),
        "{subject}"
    );
    let text = mail.text().expect("text part");
    let last_day = jiff::Timestamp::from_second(until - 1)
        .expect("time")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    assert!(text.contains("Hello Ann Lee,"), "{text}");
    assert!(text.contains("http://school.test/course/"), "{text}");
    assert!(text.contains(&last_day), "{text}");
    assert!(
        mail.html()
            .expect("html part")
            .contains("href=\"http://school.test/course/\"")
    );

    let mut browser = gate.browser();
    assert_eq!(browser.get("/course/lesson-1").await.status, 302);
    let signed_in = gate
        .sign_in(&mut browser, "ann@example.com", "/course/lesson-1")
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = browser.get("/course/lesson-1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, "hello from upstream /course/lesson-1");
    assert_eq!(
        gate.upstream.last().header("x-pagegate-name").as_deref(),
        Some("Ann Lee")
    );
}

#[tokio::test]
async fn signatures_are_checked_over_the_raw_body_and_work_once() {
    let gate = Gate::open().await;
    let grant = |email: &str| {
        serde_json::to_vec(&json!({"page": "course", "email": email, "days": 7})).expect("json")
    };
    let send = |header: String, body: Vec<u8>| {
        let api = gate.api.clone();
        async move {
            api.send(
                "POST",
                "/grants",
                &Cred::Signature(header),
                Some("application/json"),
                body,
            )
            .await
        }
    };
    let bea = grant("bea@example.com");
    let header = signature(SHOP, unix_now(), &bea);
    let first = send(header.clone(), bea.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);

    let replayed = send(header, bea.clone()).await;
    assert_eq!(
        error(&replayed),
        (401, "replayed signature".into(), String::new())
    );
    assert_eq!(
        replayed.header("www-authenticate"),
        Some("Bearer realm=\"pagegate\"")
    );

    let eve = grant("eve@example.com");
    let wrong_secret = send(
        signature("not-the-shop-secret-at-all", unix_now(), &eve),
        eve.clone(),
    )
    .await;
    assert_eq!(error(&wrong_secret).1, "invalid signature");
    let stale = send(signature(SHOP, unix_now() - 301, &eve), eve.clone()).await;
    assert_eq!(stale.status, 401);
    assert!(
        error(&stale).1.starts_with("stale timestamp"),
        "{}",
        stale.body
    );
    let tampered_body = String::from_utf8(eve.clone())
        .expect("utf-8")
        .replace("\"days\":7", "\"days\":3650");
    let tampered = send(
        signature(SHOP, unix_now(), &eve),
        tampered_body.into_bytes(),
    )
    .await;
    assert_eq!(error(&tampered).1, "invalid signature");
    // Whitespace is part of the raw body: a re-serialised body does not match.
    let mut reformatted = eve.clone();
    reformatted.push(b'\n');
    let reformatted = send(signature(SHOP, unix_now(), &eve), reformatted).await;
    assert_eq!(reformatted.status, 401);
    let malformed = send("v1=abc".into(), eve.clone()).await;
    assert_eq!(malformed.status, 401);

    // A clock a little ahead is fine; a signature is not accepted by the admin API.
    let cy = grant("cy@example.com");
    let ahead = send(signature(SHOP, unix_now() + 120, &cy), cy).await;
    assert_eq!(ahead.status, 201, "{}", ahead.body);
    let admin_signed = gate
        .api
        .send(
            "GET",
            "/pages",
            &Cred::Signature(signature(ADMIN, unix_now(), b"")),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(admin_signed.status, 401);

    assert_eq!(
        gate.emails("course").await,
        ["bea@example.com", "cy@example.com"]
    );
    assert_eq!(grants_in(&gate.audit(ADMIN).await).len(), 2);
}

/// A captured signed grant stays spent across a restart: the real binary is stopped and started
/// again on the same data directory, and the very same request, sent again within its five
/// minutes, is refused as before the restart.
#[tokio::test]
async fn a_signature_spent_before_a_restart_stays_spent_after_it() {
    let upstream = TestUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [[site]]\nname = \"school\"\nhosts = [\"school.test\"]\n\
             upstream = \"http://{}\"\npublic_url = \"http://school.test\"\n\n\
             [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\n\
             [[api_key]]\nname = \"shop\"\nsecret = \"{SHOP}\"\nscopes = [\"grant\"]\n\n\
             [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nscopes = [\"admin\"]\n",
            upstream.addr
        ),
    );
    let grant =
        serde_json::to_vec(&json!({"page": "course", "email": "ann@example.com", "days": 7}))
            .expect("json");
    let t = unix_now();
    let captured = signature(SHOP, t, &grant);
    let send = |addr, header: String| {
        let body = grant.clone();
        async move {
            ApiClient::new(addr, "school.test")
                .send(
                    "POST",
                    "/grants",
                    &Cred::Signature(header),
                    Some("application/json"),
                    body,
                )
                .await
        }
    };

    let mut gateway = GatewayProcess::serve(&config);
    let first = send(gateway.addr, captured.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    gateway.stop();

    let gateway = GatewayProcess::serve(&config);
    let replayed = send(gateway.addr, captured).await;
    assert_eq!(
        error(&replayed),
        (401, "replayed signature".into(), String::new())
    );
    // The shop's own retry, signed anew, is a new delivery and goes through.
    let resigned = send(gateway.addr, signature(SHOP, t + 1, &grant)).await;
    assert_eq!(resigned.status, 200, "{}", resigned.body);
    let audit = ApiClient::new(gateway.addr, "school.test")
        .get("/audit", &Cred::Bearer(ADMIN))
        .await;
    assert_eq!(
        grants_in(body(&audit)["entries"].as_array().expect("entries")).len(),
        2
    );
}

#[tokio::test]
async fn grants_extend_access_and_never_shorten_it() {
    let gate = Gate::open().await;
    let until = |answer: &Answer| body(answer)["access_until"].clone();
    let grant = |extra: Value| {
        let mut g = json!({"page": "course", "email": "cy@example.com"});
        g.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        gate.grant(SHOP, g)
    };
    let first = grant(json!({"name": "Cy", "days": 30})).await;
    assert_eq!(first.status, 201);
    let shorter = grant(json!({"days": 10})).await;
    assert_eq!(shorter.status, 200, "{}", shorter.body);
    assert_eq!(body(&shorter)["created"], false);
    assert_eq!(
        until(&shorter),
        until(&first),
        "a shorter grant changes nothing"
    );
    let later = grant(json!({"until": "2099-12-31"})).await;
    assert_eq!(until(&later), "2100-01-01T00:00:00Z", "a later end wins");
    let unlimited = grant(json!({})).await;
    assert_eq!(until(&unlimited), Value::Null);
    let after = grant(json!({"days": 5, "name": ""})).await;
    assert_eq!(until(&after), Value::Null, "unlimited stays unlimited");
    assert_eq!(body(&after)["name"], "Cy", "an empty name keeps the name");
}

#[tokio::test]
async fn a_retried_order_grants_once_and_answers_the_same() {
    let gate = Gate::open().await;
    let order =
        json!({"page": "course", "email": "dan@example.com", "days": 30, "order_id": "A-7"});
    let first = gate.grant(SHOP, order.clone()).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    // A day later by the gateway's clock, a fresh grant would end a day later: the retry's
    // answer is the first one's.
    gate.gateway.clock().advance(Duration::from_secs(24 * 3600));
    let retry = gate.grant(SHOP, order.clone()).await;
    assert_eq!(retry.status, 201);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);

    let other_email = gate
        .grant(
            SHOP,
            json!({"page": "course", "email": "eve@example.com", "order_id": "A-7"}),
        )
        .await;
    assert_eq!(
        error(&other_email).0,
        409,
        "the same order for someone else"
    );
    assert_eq!(error(&other_email).2, "order_id");

    // Order ids are per key: another shop's order A-7 is another order.
    let other_shop = gate
        .grant(
            COURSE_SHOP,
            json!({"page": "course", "email": "eli@example.com", "order_id": "A-7"}),
        )
        .await;
    assert_eq!(other_shop.status, 201, "{}", other_shop.body);

    let audit = gate.audit(ADMIN).await;
    let grants = grants_in(&audit);
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert_eq!(
        (&grants[0]["actor"], &grants[0]["email"]),
        (&json!("shop"), &json!("dan@example.com"))
    );
    assert!(
        grants[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("order A-7")),
        "{grants:?}"
    );
    assert_eq!(
        gate.emails("course").await,
        ["dan@example.com", "eli@example.com"]
    );
}

#[tokio::test]
async fn concurrent_retries_of_one_order_grant_exactly_once() {
    let gate = Gate::open().await;
    let order = json!({"page": "course", "email": "fay@example.com", "name": "Fay",
                       "days": 30, "order_id": "C-1"});
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, order) = (gate.api.clone(), order.clone());
            tokio::spawn(async move { api.post("/grants", &Cred::Bearer(SHOP), &order).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    assert!(answers.iter().all(|a| a.status == 201), "{answers:?}");
    let applied = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(applied, 1, "exactly one retry applies the grant");
    let bodies: BTreeSet<&str> = answers.iter().map(|a| a.body.as_str()).collect();
    assert_eq!(bodies.len(), 1, "every retry gets the same answer");
    assert_eq!(gate.emails("course").await, ["fay@example.com"]);
    assert_eq!(grants_in(&gate.audit(ADMIN).await).len(), 1);
}

#[tokio::test]
async fn refused_requests_name_their_problem_and_change_nothing() {
    let gate = Gate::open().await;
    let base = json!({"page": "course", "email": "gil@example.com"});
    let with = |extra: Value| {
        let mut g = base.clone();
        g.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        g
    };
    for (grant, status, field) in [
        (json!({"email": "gil@example.com"}), 400, "page"),
        (json!({"page": "course"}), 400, "email"),
        (with(json!({"email": "gil@"})), 400, "email"),
        (with(json!({"days": 0})), 400, "days"),
        (with(json!({"days": "30"})), 400, "days"),
        (with(json!({"days": 36_501})), 400, "days"),
        (with(json!({"until": "2020-01-01"})), 400, "until"),
        (with(json!({"until": "31.01.2099"})), 400, "until"),
        (
            with(json!({"until": "2099-01-31", "days": 3})),
            400,
            "until",
        ),
        (with(json!({"order_id": ""})), 400, "order_id"),
        (with(json!({"order_id": "x".repeat(201)})), 400, "order_id"),
        (with(json!({"name": "a\u{7}b"})), 400, "name"),
        (with(json!({"notify": "yes"})), 400, "notify"),
        (with(json!({"coupon": "FREE"})), 400, "coupon"),
        (with(json!({"page": "nope"})), 404, ""),
    ] {
        let answer = gate.grant(SHOP, grant.clone()).await;
        let (got_status, message, got_field) = error(&answer);
        assert_eq!((got_status, got_field.as_str()), (status, field), "{grant}");
        assert!(!message.is_empty());
    }
    let not_json = gate
        .api
        .send(
            "POST",
            "/grants",
            &Cred::Bearer(SHOP),
            Some("application/json"),
            b"{\"page\": ".to_vec(),
        )
        .await;
    assert_eq!(error(&not_json).2, "body");
    let huge = with(json!({"name": "x".repeat(70 * 1024)}));
    let too_large = gate.grant(SHOP, huge).await;
    assert_eq!(
        (error(&too_large).0, error(&too_large).2.as_str()),
        (413, "body")
    );

    // A chunked body announces no length: it is cut off at the limit all the same.
    let mut chunked = format!(
        "POST {BASE}/grants HTTP/1.1\r\nHost: school.test\r\nAuthorization: Bearer {SHOP}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..70 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let raw = common::client::raw(gate.gateway.addr, &chunked).await;
    assert_eq!(common::client::raw_status(&raw), 413, "{raw}");

    // Credentials: none, wrong, a key without the scope, a key limited to another page.
    let none = gate.api.post("/grants", &Cred::None, &base).await;
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some());
    assert_eq!(
        gate.grant("wrong-secret-0123456789abcdef", base.clone())
            .await
            .status,
        401
    );
    assert_eq!(gate.grant(SHOP, base.clone()).await.status, 201);
    let admin_by_shop = gate.api.get("/pages", &Cred::Bearer(SHOP)).await;
    assert_eq!(admin_by_shop.status, 403, "{}", admin_by_shop.body);
    let other_page = gate
        .grant(COURSE_SHOP, with(json!({"page": "extra"})))
        .await;
    assert_eq!(other_page.status, 403, "{}", other_page.body);

    // Unknown routes and methods.
    let unknown = gate.api.get("/nope", &Cred::Bearer(ADMIN)).await;
    assert_eq!(unknown.status, 404);
    assert!(body(&unknown)["error"].is_string());
    let wrong_method = gate.api.get("/grants", &Cred::Bearer(SHOP)).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));

    // Of all of that, only the one valid grant was written.
    assert_eq!(gate.emails("course").await, ["gil@example.com"]);
    assert!(gate.emails("extra").await.is_empty());
    assert_eq!(gate.audit(ADMIN).await.len(), 1);
}

#[tokio::test]
async fn admin_keys_list_add_search_edit_and_remove_clients() {
    let gate = Gate::open().await;
    let admin = Cred::Bearer(ADMIN);
    let pages = body(&gate.api.get("/pages", &admin).await);
    let ids: Vec<&str> = pages["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["course", "extra", "members"]);
    assert_eq!(pages["pages"][0]["url"], "http://school.test/course/");
    assert_eq!(pages["pages"][2]["site"], "club");

    let clients = "/pages/course/clients";
    let added = gate
        .api
        .post(
            clients,
            &admin,
            &json!({"email": "Ann@Example.com", "name": "Ann", "days": 30}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(body(&added)["source"], "admin");
    let replaced = gate
        .api
        .post(
            clients,
            &admin,
            &json!({"email": "ann@example.com", "until": "2099-12-31"}),
        )
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(
        (&body(&replaced)["name"], &body(&replaced)["access_until"]),
        (&json!("Ann"), &json!("2100-01-01T00:00:00Z"))
    );
    for (email, name) in [
        ("bob@example.com", "Bob Stone"),
        ("carl@example.com", "Carl"),
    ] {
        let a = gate
            .api
            .post(clients, &admin, &json!({"email": email, "name": name}))
            .await;
        assert_eq!(a.status, 201);
    }

    let all = body(&gate.api.get(clients, &admin).await);
    assert_eq!(all["total"], 3);
    let search = body(&gate.api.get(&format!("{clients}?q=STONE"), &admin).await);
    assert_eq!(
        (&search["total"], &search["clients"][0]["email"]),
        (&json!(1), &json!("bob@example.com"))
    );
    let paged = body(
        &gate
            .api
            .get(&format!("{clients}?offset=2&limit=2"), &admin)
            .await,
    );
    assert_eq!(paged["total"], 3);
    assert_eq!(paged["clients"].as_array().expect("clients").len(), 1);
    assert_eq!(paged["clients"][0]["email"], "carl@example.com");
    // Keyset paging: each answer names the `after` of the next page, null on the last.
    let first = body(&gate.api.get(&format!("{clients}?limit=2"), &admin).await);
    assert_eq!(
        (&first["total"], &first["total_is_exact"], &first["next"]),
        (&json!(3), &json!(true), &json!("bob@example.com"))
    );
    let next = format!("{clients}?limit=2&after=bob%40example.com");
    let rest = body(&gate.api.get(&next, &admin).await);
    assert_eq!(
        (&rest["clients"][0]["email"], &rest["next"], &rest["total"]),
        (&json!("carl@example.com"), &Value::Null, &json!(3))
    );
    let searched = body(
        &gate
            .api
            .get(
                &format!("{clients}?q=example&limit=1&after=ann%40example.com"),
                &admin,
            )
            .await,
    );
    assert_eq!(
        (&searched["clients"][0]["email"], &searched["next"]),
        (&json!("bob@example.com"), &json!("bob@example.com"))
    );
    let past_the_end = body(&gate.api.get(&format!("{clients}?after=zz"), &admin).await);
    assert_eq!(past_the_end["clients"], json!([]));
    let bad_limit = gate.api.get(&format!("{clients}?limit=0"), &admin).await;
    assert_eq!(error(&bad_limit).2, "limit");

    let ann = format!("{clients}/ann%40example.com");
    assert_eq!(body(&gate.api.get(&ann, &admin).await)["name"], "Ann");
    let patch = |path: String, change: Value| {
        let api = gate.api.clone();
        async move {
            api.json("PATCH", &path, &Cred::Bearer(ADMIN), &change)
                .await
        }
    };
    let edited = patch(ann.clone(), json!({"name": "Ann Lee", "unlimited": true})).await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(
        (&body(&edited)["name"], &body(&edited)["access_until"]),
        (&json!("Ann Lee"), &Value::Null)
    );
    let taken = patch(ann.clone(), json!({"email": "bob@example.com"})).await;
    assert_eq!((error(&taken).0, error(&taken).2.as_str()), (409, "email"));
    let moved = patch(ann.clone(), json!({"email": "anna@example.com"})).await;
    assert_eq!(body(&moved)["email"], "anna@example.com");
    assert_eq!(gate.api.get(&ann, &admin).await.status, 404);
    let anna = format!("{clients}/anna@example.com");
    assert_eq!(body(&gate.api.get(&anna, &admin).await)["name"], "Ann Lee");
    let both = patch(anna.clone(), json!({"days": 1, "unlimited": true})).await;
    assert_eq!(error(&both).2, "unlimited");
    let unknown_field = patch(anna.clone(), json!({"colour": "red"})).await;
    assert_eq!(error(&unknown_field).2, "colour");
    let missing = patch(
        format!("{clients}/nobody@example.com"),
        json!({"name": "X"}),
    )
    .await;
    assert_eq!(missing.status, 404);

    let carl = format!("{clients}/carl@example.com");
    assert_eq!(gate.api.delete(&carl, &admin).await.status, 204);
    assert_eq!(gate.api.delete(&carl, &admin).await.status, 404);
    assert_eq!(
        gate.api.get("/pages/nope/clients", &admin).await.status,
        404
    );
    assert_eq!(
        gate.emails("course").await,
        ["anna@example.com", "bob@example.com"]
    );

    let kinds: Vec<String> = gate
        .audit(ADMIN)
        .await
        .iter()
        .filter(|e| e["actor"] == "admin")
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "client_added",
            "client_updated",
            "client_added",
            "client_added",
            "client_updated",
            "client_updated",
            "client_removed"
        ]
    );
}

#[tokio::test]
async fn removed_or_revoked_clients_are_locked_out_at_once() {
    let gate = Gate::open().await;
    for email in ["ann@example.com", "bob@example.com"] {
        let g = gate
            .grant(SHOP, json!({"page": "course", "email": email}))
            .await;
        assert_eq!(g.status, 201);
    }
    let mut ann = gate.browser();
    let mut bob = gate.browser();
    for (browser, email) in [(&mut ann, "ann@example.com"), (&mut bob, "bob@example.com")] {
        assert_eq!(gate.sign_in(browser, email, "/course/").await.status, 303);
        assert_eq!(browser.get("/course/").await.status, 200);
    }

    let admin = Cred::Bearer(ADMIN);
    let removed = gate
        .api
        .delete("/pages/course/clients/ann@example.com", &admin)
        .await;
    assert_eq!(removed.status, 204);
    assert_eq!(ann.get("/course/").await.status, 302, "removed: locked out");

    let revoked = gate
        .api
        .send(
            "POST",
            "/pages/course/clients/bob@example.com/revoke",
            &admin,
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(body(&revoked), json!({"revoked": 1}));
    assert_eq!(bob.get("/course/").await.status, 302, "revoked: signed out");
    assert_eq!(gate.emails("course").await, ["bob@example.com"]);
    assert_eq!(
        gate.sign_in(&mut bob, "bob@example.com", "/course/")
            .await
            .status,
        303
    );
    assert_eq!(bob.get("/course/").await.status, 200, "still a client");
    assert!(
        gate.audit(ADMIN)
            .await
            .iter()
            .any(|e| e["kind"] == "sessions_revoked" && e["email"] == "bob@example.com")
    );
}

#[tokio::test]
async fn csv_import_applies_good_rows_reports_bad_ones_and_exports_back() {
    let gate = Gate::open().await;
    let admin = Cred::Bearer(ADMIN);
    let csv_path = "/pages/course/clients.csv";
    let import = |text: String| {
        let api = gate.api.clone();
        async move {
            api.send(
                "POST",
                csv_path,
                &Cred::Bearer(ADMIN),
                Some("text/csv"),
                text.into_bytes(),
            )
            .await
        }
    };
    let file = "name,email,until\n\
                Ann,ann@example.com,2099-12-31\n\
                Bob,bob@example.com,\n\
                Bad,not-an-email,\n\
                Cy,cy@example.com,31.12.2099\n\
                Ann again,ANN@example.com,\n\
                ,dee@example.com,\n";
    let report = import(file.to_string()).await;
    assert_eq!(report.status, 200, "{}", report.body);
    let report = body(&report);
    assert_eq!(
        (&report["accepted"], &report["created"], &report["updated"]),
        (&json!(3), &json!(3), &json!(0))
    );
    let rejected: Vec<(i64, String)> = report["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["line"].as_i64().expect("line"),
                r["error"].as_str().expect("error").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert!(rejected[0].1.starts_with("email:"), "{rejected:?}");
    assert!(rejected[1].1.starts_with("until:"), "{rejected:?}");
    assert!(rejected[2].1.contains("already on line 2"), "{rejected:?}");
    assert_eq!(
        gate.emails("course").await,
        ["ann@example.com", "bob@example.com", "dee@example.com"]
    );

    let export = gate.api.get(csv_path, &admin).await;
    assert_eq!(export.status, 200);
    assert_eq!(
        export.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        export.header("content-disposition"),
        Some("attachment; filename=\"course-clients.csv\"")
    );
    assert_eq!(export.header("x-content-type-options"), Some("nosniff"));
    let lines: Vec<&str> = export.body.lines().collect();
    assert_eq!(lines.len(), 4, "{}", export.body);
    assert_eq!(
        lines[0],
        "\"name\",\"email\",\"until\",\"active\",\"source\",\"created_at\",\"last_login\""
    );
    assert!(
        lines[1].starts_with("\"Ann\",\"ann@example.com\",\"2099-12-31\",\"true\",\"import\","),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("\"Bob\",\"bob@example.com\",\"\",\"true\",\"import\","));

    let again = body(&import(export.body.clone()).await);
    assert_eq!(
        (&again["accepted"], &again["updated"], &again["rejected"]),
        (&json!(3), &json!(3), &json!([])),
        "an export imports back unchanged"
    );
    assert_eq!(
        gate.api.get(csv_path, &admin).await.body.lines().nth(1),
        Some(lines[1])
    );

    let bad_header = import("mail,name\nann@example.com,Ann\n".into()).await;
    assert_eq!(
        (error(&bad_header).0, error(&bad_header).2.as_str()),
        (400, "header")
    );
    let huge = format!(
        "email\n{}",
        "x@example.com\n".repeat(2 * 1024 * 1024 / 14 + 1)
    );
    assert_eq!(import(huge).await.status, 413);
    assert_eq!(
        gate.emails("course").await.len(),
        3,
        "refused files change nothing"
    );
}

/// A session belongs to a site, so ending one reaches every page of that site: a key may end
/// only the sessions of its own page's clients, and a visitor who is no client of that page
/// keeps theirs.
#[tokio::test]
async fn a_revocation_reaches_only_the_clients_of_the_page_it_names() {
    let gate = Gate::open().await;
    for (page, email) in [("course", "ann@example.com"), ("extra", "zed@example.com")] {
        let granted = gate
            .grant(SHOP, json!({"page": page, "email": email}))
            .await;
        assert_eq!(granted.status, 201, "{}", granted.body);
    }
    let mut ann = gate.browser();
    assert_eq!(
        gate.sign_in(&mut ann, "ann@example.com", "/course/")
            .await
            .status,
        303
    );
    let mut zed = gate.browser();
    assert_eq!(
        gate.sign_in(&mut zed, "zed@example.com", "/extra/")
            .await
            .status,
        303
    );
    assert_eq!(zed.get("/extra/").await.status, 200);
    let revoke = |key: &'static str, page: &str, email: &str| {
        let (api, path) = (
            gate.api.clone(),
            format!("/pages/{page}/clients/{email}/revoke"),
        );
        async move {
            api.send("POST", &path, &Cred::Bearer(key), None, Vec::new())
                .await
        }
    };

    // Zed is on the same site but no client of the course: the course's key cannot reach him,
    // neither through its own page nor through his.
    let through_course = revoke(COURSE_ADMIN, "course", "zed@example.com").await;
    assert_eq!(
        error(&through_course),
        (
            404,
            "zed@example.com is not a client of course".into(),
            String::new()
        )
    );
    assert_eq!(
        revoke(COURSE_ADMIN, "extra", "zed@example.com")
            .await
            .status,
        403
    );
    // Nor can a key that covers every page, through a page he is not on.
    assert_eq!(revoke(ADMIN, "course", "zed@example.com").await.status, 404);
    assert_eq!(
        zed.get("/extra/").await.status,
        200,
        "zed is still signed in"
    );

    // Its own page's client: her session ends.
    let ended = revoke(COURSE_ADMIN, "course", "ann@example.com").await;
    assert_eq!(body(&ended), json!({"revoked": 1}));
    assert_eq!(ann.get("/course/").await.status, 302, "ann is signed out");
    let revocations: Vec<Value> = gate
        .audit(ADMIN)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "sessions_revoked")
        .collect();
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert_eq!(
        (&revocations[0]["email"], &revocations[0]["actor"]),
        (&json!("ann@example.com"), &json!("course-admin"))
    );
}

#[tokio::test]
async fn keys_limited_to_a_site_or_page_see_and_touch_only_that() {
    let gate = Gate::open().await;
    assert_eq!(
        gate.grant(SHOP, json!({"page": "course", "email": "ann@example.com"}))
            .await
            .status,
        201
    );
    assert_eq!(
        gate.grant(SHOP, json!({"page": "members", "email": "zed@example.com"}))
            .await
            .status,
        201
    );
    let school = Cred::Bearer(SCHOOL_ADMIN);
    let pages = body(&gate.api.get("/pages", &school).await);
    let ids: Vec<&str> = pages["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["course", "extra"]);
    assert_eq!(
        gate.api.get("/pages/course/clients", &school).await.status,
        200
    );
    for path in [
        "/pages/members/clients",
        "/pages/members/clients.csv",
        "/pages/members/clients/zed@example.com",
    ] {
        assert_eq!(gate.api.get(path, &school).await.status, 403, "{path}");
    }
    let delete = gate
        .api
        .delete("/pages/members/clients/zed@example.com", &school)
        .await;
    assert_eq!(delete.status, 403);
    assert_eq!(gate.emails("members").await, ["zed@example.com"]);

    let seen: Vec<Value> = gate.audit(SCHOOL_ADMIN).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["page"], "course");
    assert_eq!(gate.audit(ADMIN).await.len(), 2);

    let course_shop = |page: &str| {
        gate.grant(
            COURSE_SHOP,
            json!({"page": page, "email": "kim@example.com"}),
        )
    };
    assert_eq!(course_shop("extra").await.status, 403);
    assert_eq!(course_shop("members").await.status, 403);
    assert_eq!(course_shop("course").await.status, 201);
    // An admin key may grant too.
    assert_eq!(
        gate.grant(ADMIN, json!({"page": "extra", "email": "kim@example.com"}))
            .await
            .status,
        201
    );
}

/// A buyer's name reaches the export as the shop sent it. Excel with a `;` list separator (as
/// in Russian, German or French settings) splits a cell at `;`, so every place a spreadsheet
/// could start a cell must be defused, not only the cell's start.
#[tokio::test]
async fn a_buyer_name_never_becomes_a_spreadsheet_formula_in_an_export() {
    let gate = Gate::open().await;
    let names = [
        "x;=HYPERLINK(\"http://evil\",\"click\")",
        "Ann, +1 555 0100",
        "a|@SUM(1)",
        "=1+1",
        "'-2",
        "Bob ; '=cmd",
    ];
    for (i, name) in names.iter().enumerate() {
        let email = format!("buyer{i}@example.com");
        let granted = gate
            .grant(
                SHOP,
                json!({"page": "course", "email": email, "name": name}),
            )
            .await;
        assert_eq!(granted.status, 201, "{}", granted.body);
    }
    let admin = Cred::Bearer(ADMIN);
    let export = gate.api.get("/pages/course/clients.csv", &admin).await;
    assert_eq!(export.status, 200);
    assert!(
        export
            .body
            .contains("\"x;'=HYPERLINK(\"\"http://evil\"\",\"\"click\"\")\""),
        "{}",
        export.body
    );
    for line in export.body.lines() {
        assert!(line.starts_with('"') && line.ends_with('"'), "{line}");
        // However a spreadsheet splits the line, no piece starts a formula.
        for piece in line.split([',', ';', '|', '\t']) {
            let start = piece.trim_start_matches([' ', '"']);
            assert!(
                !start.starts_with(['=', '+', '-', '@']),
                "{piece:?} of {line}"
            );
        }
    }

    // Read back, the export changes nobody.
    let again = gate
        .api
        .send(
            "POST",
            "/pages/course/clients.csv",
            &admin,
            Some("text/csv"),
            export.body.clone().into_bytes(),
        )
        .await;
    assert_eq!(
        (&body(&again)["accepted"], &body(&again)["rejected"]),
        (&json!(names.len()), &json!([]))
    );
    for (i, name) in names.iter().enumerate() {
        let client = gate
            .api
            .get(
                &format!("/pages/course/clients/buyer{i}@example.com"),
                &admin,
            )
            .await;
        assert_eq!(body(&client)["name"], *name);
    }
    assert_eq!(
        gate.api.get("/pages/course/clients.csv", &admin).await.body,
        export.body,
        "exported again, the same file"
    );
}

#[tokio::test]
async fn the_audit_log_reads_on_from_where_it_stopped() {
    let gate = Gate::open().await;
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        gate.grant(SHOP, json!({"page": "course", "email": email}))
            .await;
    }
    let admin = Cred::Bearer(ADMIN);
    let mut after = 0;
    let mut emails = Vec::new();
    loop {
        let page = body(
            &gate
                .api
                .get(&format!("/audit?after={after}&limit=2"), &admin)
                .await,
        );
        for e in page["entries"].as_array().expect("entries") {
            emails.push(e["email"].as_str().expect("email").to_string());
            assert!(ts(&e["at"]) > 0);
        }
        after = page["next"].as_u64().expect("next");
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(emails, ["a@example.com", "b@example.com", "c@example.com"]);
    let none = body(&gate.api.get(&format!("/audit?after={after}"), &admin).await);
    assert_eq!(
        (&none["entries"], &none["next"]),
        (&json!([]), &json!(after))
    );
    assert_eq!(
        error(&gate.api.get("/audit?limit=x", &admin).await).2,
        "limit"
    );
}

/// The served OpenAPI document lists exactly the router's routes, and every operation, called
/// with its documented example, succeeds.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let gate = Gate::open().await;
    let served = gate.api.get("/openapi.json", &Cred::None).await;
    assert_eq!(served.status, 200);
    let doc = body(&served);
    assert_eq!(doc["servers"][0]["url"], BASE);

    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if method != "parameters" {
                operations.push((method.to_uppercase(), path.clone(), item, operation));
            }
        }
    }
    let documented: BTreeSet<(String, String)> = operations
        .iter()
        .map(|(m, p, _, _)| (m.clone(), p.clone()))
        .collect();
    let routed: BTreeSet<(String, String)> = pagegate::api::web::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);

    // Creating calls first, removing last, so the example client exists when it must.
    let rank = |method: &str, path: &str| match method {
        "POST" if path.ends_with("/revoke") => 3,
        "POST" => 0,
        "GET" => 1,
        "PATCH" => 2,
        _ => 4,
    };
    operations.sort_by_key(|(m, p, _, _)| (rank(m, p), p.clone()));
    for (method, path, item, operation) in operations {
        let mut concrete = path.clone();
        for param in item["parameters"].as_array().into_iter().flatten() {
            let name = param["name"].as_str().expect("name");
            let example = param["example"].as_str().expect("a path parameter example");
            concrete = concrete.replace(&format!("{{{name}}}"), example);
        }
        let content = &operation["requestBody"]["content"];
        let (content_type, request) = if let Some(json) = content.get("application/json") {
            (
                Some("application/json"),
                serde_json::to_vec(&json["example"]).expect("json"),
            )
        } else if let Some(csv) = content.get("text/csv") {
            (
                Some("text/csv"),
                csv["example"]
                    .as_str()
                    .expect("csv example")
                    .as_bytes()
                    .to_vec(),
            )
        } else {
            (None, Vec::new())
        };
        let cred = if operation["security"] == json!([]) {
            Cred::None
        } else {
            Cred::Bearer(ADMIN)
        };
        let answer = gate
            .api
            .send(&method, &concrete, &cred, content_type, request)
            .await;
        assert!(
            answer.status.is_success(),
            "{method} {concrete}: {} {}",
            answer.status,
            answer.body
        );
        let documented_status = operation["responses"].get(answer.status.as_str()).is_some();
        assert!(
            documented_status,
            "{method} {path}: {} is not documented",
            answer.status
        );
    }
}

/// The path and query of a sign-in link on school.test, as a browser there opens it.
fn on_school(url: &str) -> String {
    url.strip_prefix("http://school.test")
        .unwrap_or_else(|| panic!("not on the site's public_url: {url}"))
        .to_string()
}

/// Confirms the sign-in link `path` in `browser`: opens its confirm page and presses the
/// button, as the page's form would send it.
async fn confirm_link(browser: &mut Browser, path: &str) -> Answer {
    let page = browser.get(path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let field = |name| hidden(&page.body, name).unwrap_or_else(|| panic!("no {name} field"));
    let (token, page_id, csrf) = (field("token"), field("page"), field("csrf"));
    browser
        .post_form(
            "/_pagegate/signin",
            &[("token", &token), ("page", &page_id), ("csrf", &csrf)],
        )
        .await
}

/// Presses the button of a sign-in link's confirm page with the token of `path`, in a browser
/// that never saw a live confirm page for it (its CSRF token comes from the email form).
async fn press_anyway(browser: &mut Browser, path: &str) -> Answer {
    press_anyway_on(browser, path, "/course/").await
}

fn entries_of<'a>(audit: &'a [Value], kind: &str) -> Vec<&'a Value> {
    audit.iter().filter(|e| e["kind"] == kind).collect()
}

#[tokio::test]
async fn a_shops_sign_in_link_signs_the_buyer_in_once_and_a_retry_gets_it_again_while_live() {
    let gate = Gate::open().await;
    // The shop calls the API on the other site's host: the link is still on the page's site's
    // public_url, never on the host the call came to.
    let club_api = ApiClient::new(gate.gateway.addr, "club.test");
    let order = json!({"page": "course", "email": "Ann@Example.com", "name": "Ann",
                       "days": 30, "order_id": "2001", "signin": true});
    let first = club_api.post("/grants", &Cred::Bearer(SHOP), &order).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let answer = body(&first);
    let url = answer["signin_url"]
        .as_str()
        .expect("a signin_url")
        .to_string();
    assert!(
        url.starts_with("http://school.test/_pagegate/signin?t="),
        "{url}"
    );
    let expires = ts(&answer["signin_expires_at"]);
    assert!(
        (expires - (unix_now() + 15 * 60)).abs() < 60,
        "valid for auth.signin_link_ttl: {expires}"
    );
    let path = on_school(&url);

    // The shop's retry of the timed-out call gets the same link.
    let retry = gate.grant(SHOP, order.clone()).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body, "the first answer, link included");
    // A grant that does not ask for a link gets none.
    let plain = gate
        .grant(
            SHOP,
            json!({"page": "course", "email": "ann@example.com", "order_id": "2001"}),
        )
        .await;
    assert!(body(&plain).get("signin_url").is_none(), "{}", plain.body);

    // Link scanners open it: the confirm page names the account and spends nothing.
    let mut scanner = gate.browser();
    for _ in 0..2 {
        let page = scanner.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("a***@example.com"), "{}", page.body);
        assert!(page.body.contains("Video course"), "{}", page.body);
        assert!(!page.body.contains("ann@example.com"), "masked");
        assert!(!page.body.contains("another browser"), "{}", page.body);
        assert!(!scanner.has_session());
    }
    assert_eq!(
        scanner.send("HEAD", &path, None).await.status,
        200,
        "a HEAD spends nothing either"
    );
    // The page it opens is the grant's, whatever the link's address is made to say.
    let other_page = scanner
        .get(&path.replace("page=course", "page=extra"))
        .await;
    assert_eq!(other_page.status, 200, "{}", other_page.body);
    assert!(
        other_page.body.contains("Video course"),
        "{}",
        other_page.body
    );
    assert!(
        !other_page.body.contains("Bonus lessons"),
        "{}",
        other_page.body
    );
    // Opened on the other site, it is not that site's link, and stays unspent.
    let mut elsewhere = Browser::new(gate.gateway.addr, "club.test");
    assert_eq!(elsewhere.get(&path).await.status, 410);
    let pressed = press_anyway_on(&mut elsewhere, &path, "/members/").await;
    assert_eq!(pressed.status, 410, "{}", pressed.body);
    assert!(!elsewhere.has_session());
    // Its token is no mailed link's token, on either endpoint.
    let token = path
        .split_once("t=")
        .expect("t")
        .1
        .split('&')
        .next()
        .expect("token");
    let as_mailed = scanner.get(&format!("/_pagegate/link?t={token}")).await;
    assert_eq!(as_mailed.status, 410, "{}", as_mailed.body);
    // Without the page's anti-forgery token, nothing happens.
    let forged = scanner
        .post_form(
            "/_pagegate/signin",
            &[("token", token), ("page", "course"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(!scanner.has_session());

    // The buyer confirms: signed in, on the page, without a code.
    let mut buyer = gate.browser();
    let signed_in = confirm_link(&mut buyer, &path.replace("page=course", "page=extra")).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/course/"));
    assert!(buyer.has_session());
    let course = buyer.get("/course/").await;
    assert_eq!(course.status, 200, "{}", course.body);
    let seen = gate.upstream.seen();
    let last = seen.last().expect("the upstream saw the page");
    assert_eq!(
        last.header("x-pagegate-email").as_deref(),
        Some("ann@example.com")
    );
    assert_eq!(gate.smtp.messages().len(), 0, "no code was mailed");

    // A second use signs nobody in, in a fresh browser or the same one.
    let mut second = gate.browser();
    let gone = second.get(&path).await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert!(gone.body.contains("already used"), "{}", gone.body);
    assert!(
        gone.body
            .contains("href=\"/_pagegate/login?next=%2Fcourse%2F\""),
        "the code sign-in for the page: {}",
        gone.body
    );
    let again = press_anyway(&mut second, &path).await;
    assert_eq!(again.status, 410, "{}", again.body);
    assert!(!second.has_session());
    assert_eq!(scanner.get(&path).await.status, 410);

    // Issued once and spent once, in the audit log, never with the token.
    let audit = gate.audit(ADMIN).await;
    let issued = entries_of(&audit, "signin_link_issued");
    let used = entries_of(&audit, "signin_link_used");
    assert_eq!((issued.len(), used.len()), (1, 1), "{audit:?}");
    assert_eq!(
        (&issued[0]["actor"], &issued[0]["page"], &issued[0]["email"]),
        (&json!("shop"), &json!("course"), &json!("ann@example.com"))
    );
    assert_eq!(
        (&used[0]["actor"], &used[0]["page"], &used[0]["email"]),
        (
            &json!("visitor"),
            &json!("course"),
            &json!("ann@example.com")
        )
    );
    assert!(
        used[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("order 2001")),
        "{used:?}"
    );
    let log = serde_json::to_string(&audit).expect("json");
    assert!(!log.contains(token), "the token is never logged");

    // Spent, the order's next retry hands out a new link, which works.
    let renewed = gate.grant(SHOP, order).await;
    let new_url = body(&renewed)["signin_url"]
        .as_str()
        .expect("a new link")
        .to_string();
    assert_ne!(new_url, url);
    let mut later = gate.browser();
    let signed_in = confirm_link(&mut later, &on_school(&new_url)).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
}

/// [`press_anyway`] on another site, whose email form is for `next`.
async fn press_anyway_on(browser: &mut Browser, path: &str, next: &str) -> Answer {
    let token = path
        .split_once("t=")
        .and_then(|(_, rest)| rest.split('&').next())
        .expect("a token in the link")
        .to_string();
    let csrf = browser.open_login(next).await;
    browser
        .post_form(
            "/_pagegate/signin",
            &[("token", &token), ("page", "course"), ("csrf", &csrf)],
        )
        .await
}

#[tokio::test]
async fn sign_in_links_are_only_for_pages_the_key_covers_and_only_when_asked() {
    let gate = Gate::open().await;
    let refused = gate
        .grant(
            COURSE_SHOP,
            json!({"page": "extra", "email": "bo@example.com", "signin": true}),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let bad = gate
        .grant(
            SHOP,
            json!({"page": "course", "email": "bo@example.com", "signin": "yes"}),
        )
        .await;
    assert_eq!(error(&bad), (400, error(&bad).1, "signin".into()));
    let plain = gate
        .grant(SHOP, json!({"page": "course", "email": "bo@example.com"}))
        .await;
    assert!(body(&plain).get("signin_url").is_none(), "{}", plain.body);
    let audit = gate.audit(ADMIN).await;
    assert!(entries_of(&audit, "signin_link_issued").is_empty());
    // Signed like a webhook, without an order: a link each time, to the key's own page only.
    let signed = gate
        .api
        .post(
            "/grants",
            &Cred::Signed(COURSE_SHOP),
            &json!({"page": "course", "email": "bo@example.com", "signin": true}),
        )
        .await;
    assert_eq!(signed.status, 200, "{}", signed.body);
    let again = gate
        .api
        .post(
            "/grants",
            &Cred::Signed(COURSE_SHOP),
            &json!({"page": "course", "email": "bo@example.com", "signin": true}),
        )
        .await;
    let (one, two) = (body(&signed), body(&again));
    assert_ne!(one["signin_url"], two["signin_url"], "no order: a new link");
    let mut buyer = gate.browser();
    let signed_in = confirm_link(
        &mut buyer,
        &on_school(one["signin_url"].as_str().expect("url")),
    )
    .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
}

/// Moves the end of every stored sign-in link `seconds` into the past, in a stopped gateway's
/// database: how much later the test pretends it is.
async fn age_sign_in_links(dir: &std::path::Path, seconds: i64) {
    if common::store_under_test() == "postgres" {
        let aged = common::postgres::psql(
            &common::database_of(dir),
            &format!(
                "WITH aged AS (UPDATE signins SET expires_at = expires_at - {seconds}, \
                 record = convert_to(jsonb_set(convert_from(record, 'UTF8')::jsonb, \
                 '{{expires_at}}', to_jsonb(expires_at - {seconds}))::text, 'UTF8') \
                 RETURNING 1) SELECT count(*) FROM aged"
            ),
        );
        assert_ne!(aged.trim(), "0", "a link to age");
        return;
    }
    use redb::ReadableTable;
    let path = dir.join("data").join("pagegate.redb");
    let table = redb::TableDefinition::<&[u8], &[u8]>::new("signins");
    let db = {
        let mut opened = None;
        for _ in 0..100 {
            match redb::Database::open(&path) {
                Ok(db) => {
                    opened = Some(db);
                    break;
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("cannot open the database: {e}"),
            }
        }
        opened.expect("the database is let go of after the gateway stopped")
    };
    let txn = db.begin_write().expect("write");
    {
        let mut links = txn.open_table(table).expect("signins table");
        let mut aged = Vec::new();
        for entry in links.iter().expect("iterate") {
            let (k, v) = entry.expect("entry");
            let mut record: Value = serde_json::from_slice(v.value()).expect("json");
            let end = record["expires_at"].as_i64().expect("expires_at");
            record["expires_at"] = json!(end - seconds);
            aged.push((
                k.value().to_vec(),
                serde_json::to_vec(&record).expect("json"),
            ));
        }
        assert!(!aged.is_empty(), "a link to age");
        for (k, v) in aged {
            links.insert(k.as_slice(), v.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn an_expired_sign_in_link_is_refused_and_a_retry_of_its_order_gets_a_new_one() {
    let mut gate = Gate::open().await;
    let order = json!({"page": "course", "email": "cy@example.com", "order_id": "3001",
                       "signin": true});
    let first = gate.grant(SHOP, order.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let url = body(&first)["signin_url"]
        .as_str()
        .expect("a link")
        .to_string();

    // Twenty minutes later (the link lasts fifteen).
    let toml = std::fs::read_to_string(gate.gateway.dir.path().join("gateway.toml")).expect("toml");
    let dir = gate.gateway.stop_and_keep_dir().await;
    age_sign_in_links(dir.path(), 20 * 60).await;
    gate.gateway = TestGateway::start_in(dir, &toml).await;
    gate.api = ApiClient::new(gate.gateway.addr, "school.test");

    let path = on_school(&url);
    let mut buyer = gate.browser();
    let gone = buyer.get(&path).await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert!(
        gone.body
            .contains("href=\"/_pagegate/login?next=%2Fcourse%2F\""),
        "{}",
        gone.body
    );
    let pressed = press_anyway(&mut buyer, &path).await;
    assert_eq!(pressed.status, 410, "{}", pressed.body);
    assert!(!buyer.has_session());

    let retry = gate.grant(SHOP, order).await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let new_url = body(&retry)["signin_url"]
        .as_str()
        .expect("a new link")
        .to_string();
    assert_ne!(new_url, url, "the expired link is replaced");
    let signed_in = confirm_link(&mut buyer, &on_school(&new_url)).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/course/"));
}
