//! Several gateways, one truth: two real pagegate processes on one PostgreSQL database, as behind
//! a load balancer, and a visitor, an admin and a shop whose requests land on either.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::api::{Cred, signature, unix_now};
use common::browser::Browser;
use common::pair::{ADMIN, Pair, SHOP, grant};
use common::postgres::psql;

/// How long a change may take to reach the other gateway before a story gives up on it: far
/// above the documented bound, so a slow machine does not fail the story, while a gateway that
/// never learns of the change still does.
const PATIENCE: Duration = Duration::from_secs(20);

/// Asks for `path` in `browser` until the answer's status is `status`; fails after [`PATIENCE`].
async fn until_status(browser: &mut Browser, path: &str, status: u16) {
    let start = Instant::now();
    loop {
        let answer = browser.get(path).await;
        if answer.status == status {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{path} still answers {} instead of {status}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_code_mailed_by_one_gateway_signs_in_on_the_other_and_the_session_holds_on_both() {
    let pair = Pair::start("").await;
    pair.add(&pair.api_a(), "ann@example.com").await;

    let mut browser = pair.browser();
    let code = pair.request_code(&mut browser, "ann@example.com").await;
    browser.addr = pair.b.addr;
    assert_eq!(
        pair.verify(&mut browser, "ann@example.com", &code).await,
        303,
        "B accepts the code A mailed"
    );
    assert_eq!(browser.get("/course/lesson-1").await.status, 200, "on B");
    browser.addr = pair.a.addr;
    assert_eq!(browser.get("/course/lesson-1").await.status, 200, "on A");
    assert_eq!(pair.upstream.count(), 2, "both pages came from the site");
}

#[tokio::test]
async fn a_client_removed_through_one_gateway_loses_access_on_the_other() {
    let pair = Pair::start("").await;
    pair.add(&pair.api_a(), "ann@example.com").await;
    let mut browser = pair.signed_in("ann@example.com").await;

    // Removed through B's admin API while A remembers the visitor's access: A hears of it as
    // soon as PostgreSQL delivers B's announcement (milliseconds; docs/performance.md measures
    // it), and from then on nothing more reaches the site.
    pair.remove(&pair.api_b(), "ann@example.com").await;
    until_status(&mut browser, "/course/lesson-1", 302).await;
    let served = pair.upstream.count();
    assert_eq!(browser.get("/course/lesson-1").await.status, 302);
    assert_eq!(
        pair.upstream.count(),
        served,
        "nothing more reached the site"
    );
}

#[tokio::test]
async fn a_change_that_is_never_announced_still_takes_effect_within_the_bound() {
    let pair = Pair::start("").await;
    pair.add(&pair.api_a(), "ann@example.com").await;
    pair.add(&pair.api_a(), "bob@example.com").await;
    let mut ann = pair.signed_in("ann@example.com").await;

    // A's listening connection is cut: it reconnects by itself, and a change announced after
    // that still reaches it.
    let cut = psql(
        &pair.url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'pagegate-listen' AND datname = current_database()",
    );
    assert_eq!(cut.trim(), "2", "each gateway had one listening connection");
    let mut bob = pair.signed_in("bob@example.com").await;
    pair.remove(&pair.api_b(), "bob@example.com").await;
    until_status(&mut bob, "/course/lesson-1", 302).await;

    // Ann is removed behind every gateway's back, in the database itself: no announcement, no
    // change count moved. A stops admitting her once its remembered answer is too old.
    assert_eq!(ann.get("/course/lesson-1").await.status, 200);
    psql(
        &pair.url,
        "DELETE FROM clients WHERE email = 'ann@example.com'",
    );
    until_status(&mut ann, "/course/lesson-1", 302).await;
}

#[tokio::test]
async fn a_sign_out_on_one_gateway_ends_the_session_on_the_other() {
    let pair = Pair::start("").await;
    pair.add(&pair.api_a(), "ann@example.com").await;
    let mut browser = pair.browser();
    let code = pair.request_code(&mut browser, "ann@example.com").await;
    assert_eq!(
        pair.verify(&mut browser, "ann@example.com", &code).await,
        303
    );
    browser.addr = pair.b.addr;
    assert_eq!(browser.get("/course/lesson-1").await.status, 200);
    let kept = browser.cookies.clone();

    browser.addr = pair.a.addr;
    assert_eq!(
        browser.post_form("/_pagegate/logout", &[]).await.status,
        200
    );
    let mut thief = pair.browser();
    thief.addr = pair.b.addr;
    thief.cookies = kept;
    until_status(&mut thief, "/course/lesson-1", 302).await;
}

#[tokio::test]
async fn wrong_codes_split_between_gateways_count_as_one() {
    let pair = Pair::start("").await;
    pair.add(&pair.api_a(), "ann@example.com").await;
    let mut browser = pair.browser();
    let code = pair.request_code(&mut browser, "ann@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let gateways = [pair.a.addr, pair.b.addr];
    for n in 0..4 {
        browser.addr = gateways[n % 2];
        assert_eq!(
            pair.verify(&mut browser, "ann@example.com", wrong).await,
            400,
            "wrong code {n}"
        );
    }
    browser.addr = pair.a.addr;
    assert_eq!(
        pair.verify(&mut browser, "ann@example.com", wrong).await,
        429,
        "the fifth, on A, locks"
    );
    browser.addr = pair.b.addr;
    assert_eq!(
        pair.verify(&mut browser, "ann@example.com", &code).await,
        429,
        "the right code on B fails after five wrong ones"
    );
    assert!(!browser.has_session());
}

#[tokio::test]
async fn rate_limits_hold_across_gateways() {
    let pair = Pair::start("resend_after = \"1h\"\nip_verifies_per_hour = 3").await;
    pair.add(&pair.api_a(), "ann@example.com").await;
    let mut browser = pair.browser();
    pair.request_code(&mut browser, "ann@example.com").await;
    browser.addr = pair.b.addr;
    assert_eq!(
        pair.ask_for_code(&mut browser, "ann@example.com").await,
        429,
        "B knows A sent a code a moment ago"
    );
    assert_eq!(pair.smtp.messages().len(), 1, "one mail only");

    // Code entries per address: three an hour, spread over both gateways.
    let mut guesses = Vec::new();
    for n in 0..4 {
        browser.addr = [pair.a.addr, pair.b.addr][n % 2];
        guesses.push(pair.verify(&mut browser, "bob@example.com", "123456").await);
    }
    assert_eq!(guesses, [400, 400, 400, 429]);
}

#[tokio::test]
async fn a_signed_grant_replayed_to_the_other_gateway_is_refused() {
    let pair = Pair::start("").await;
    let body = serde_json::to_vec(&json!({"page": "course", "email": "cy@example.com", "days": 7}))
        .expect("json");
    let captured = signature(SHOP, unix_now(), &body);
    let send = |api: common::api::ApiClient| {
        let (body, captured) = (body.clone(), captured.clone());
        async move {
            api.send(
                "POST",
                "/grants",
                &Cred::Signature(captured),
                Some("application/json"),
                body,
            )
            .await
        }
    };
    let first = send(pair.api_a()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let replayed = send(pair.api_b()).await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    assert!(replayed.body.contains("replayed"), "{}", replayed.body);
}

#[tokio::test]
async fn one_order_sent_to_both_gateways_at_once_grants_once() {
    let pair = Pair::start("").await;
    let order =
        json!({"page": "course", "email": "dan@example.com", "days": 30, "order_id": "A-7"});
    let (a, b) = (pair.api_a(), pair.api_b());
    let (first, second) = tokio::join!(
        a.post("/grants", &Cred::Bearer(SHOP), &order),
        b.post("/grants", &Cred::Bearer(SHOP), &order),
    );
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (201, 201));
    assert_eq!(first.body, second.body, "both answer as the one grant");
    let replays = [&first, &second]
        .iter()
        .filter(|a| a.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replays, 1, "one granted, the other answered as its replay");
    let audit = a.get("/audit?limit=1000", &Cred::Bearer(ADMIN)).await;
    let entries: serde_json::Value = serde_json::from_str(&audit.body).expect("json");
    let grants = entries["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "grant")
        .count();
    assert_eq!(grants, 1, "{}", audit.body);
}

#[tokio::test]
async fn a_gateway_killed_under_grant_load_loses_no_acknowledged_grant() {
    let pair = Pair::start("").await;
    let targets = [pair.a.addr, pair.b.addr];
    let shop = |n: usize| async move { (n, grant(targets[n % 2], n).await == Some(201)) };
    let mut acknowledged = Vec::new();
    let mut killed = false;
    for round in 0..20 {
        let batch: Vec<_> = (round * 10..round * 10 + 10).map(shop).collect();
        if round == 8 {
            // A dies mid-batch, without a chance to finish anything.
            let load = tokio::spawn(futures_util::future::join_all(batch));
            pair.a.signal("KILL");
            killed = true;
            for (n, ok) in load.await.expect("load") {
                if ok {
                    acknowledged.push(n);
                }
            }
            continue;
        }
        for (n, ok) in futures_util::future::join_all(batch).await {
            if ok {
                acknowledged.push(n);
            }
        }
    }
    assert!(killed);
    let on_b = acknowledged.iter().filter(|n| *n % 2 == 1).count();
    assert_eq!(on_b, 100, "B served every grant sent to it");
    assert!(
        acknowledged.len() > 100,
        "A acknowledged some before it died"
    );

    let listed = pair.api_b().emails("course", ADMIN).await;
    for n in &acknowledged {
        let email = format!("buyer{n}@example.com");
        assert!(
            listed.contains(&email),
            "{email} was acknowledged but is not listed"
        );
    }
}
