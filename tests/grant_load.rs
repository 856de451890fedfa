//! Load: 1,000 grants from 50 shops at once, each shop on its own keep-alive connection with its
//! own API key (half sign their requests, half send a Bearer key). Every grant must be
//! acknowledged, every acknowledged grant must be on the list afterwards, and none doubled.
//! Prints the throughput; no timing is asserted (machines differ).
//!
//! `cargo test --release --test grant_load -- --nocapture`

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::api::{ApiClient, Cred, body};
use common::{TestGateway, TestUpstream};
use serde_json::json;

const SHOPS: usize = 50;
const GRANTS_PER_SHOP: usize = 20;
const ADMIN: &str = "admin-secret-0123456789abcdef";

fn shop_secret(shop: usize) -> String {
    format!("shop-{shop:02}-secret-0123456789abcdef")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_grants_from_fifty_shops_all_land_once() {
    let upstream = TestUpstream::start().await;
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[site]]\nname = \"school\"\nhosts = [\"school.test\"]\nupstream = \"http://{}\"\n\
         public_url = \"http://school.test\"\n\n\
         [[site.page]]\nid = \"course\"\npaths = [\"/course/\"]\n\n\
         [[api_key]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nscopes = [\"admin\"]\n",
        upstream.addr
    );
    for shop in 0..SHOPS {
        toml.push_str(&format!(
            "\n[[api_key]]\nname = \"shop-{shop:02}\"\nsecret = \"{}\"\nscopes = [\"grant\"]\n",
            shop_secret(shop)
        ));
    }
    let gateway = TestGateway::start(&toml).await;
    let api = ApiClient::new(gateway.addr, "school.test");

    let started = Instant::now();
    let shops: Vec<_> = (0..SHOPS)
        .map(|shop| {
            let api = api.clone();
            tokio::spawn(async move {
                let secret = shop_secret(shop);
                let mut conn = api.connect().await;
                let mut acknowledged = Vec::new();
                let mut latencies = Vec::new();
                for i in 0..GRANTS_PER_SHOP {
                    let email = format!("buyer-{shop:02}-{i:02}@example.com");
                    let grant = json!({"page": "course", "email": email, "days": 30,
                                       "order_id": format!("order-{i}")});
                    let cred = if shop % 2 == 0 {
                        Cred::Bearer(&secret)
                    } else {
                        Cred::Signed(&secret)
                    };
                    let sent = Instant::now();
                    let answer = conn.post("/grants", &cred, &grant).await;
                    latencies.push(sent.elapsed());
                    assert_eq!(answer.status, 201, "shop {shop} grant {i}: {}", answer.body);
                    assert_eq!(body(&answer)["email"], email.as_str());
                    acknowledged.push(email);
                }
                (acknowledged, latencies)
            })
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    let mut latencies: Vec<Duration> = Vec::new();
    for shop in shops {
        let (emails, times) = shop.await.expect("shop task");
        acknowledged.extend(emails);
        latencies.extend(times);
    }
    let elapsed = started.elapsed();
    let total = SHOPS * GRANTS_PER_SHOP;
    assert_eq!(acknowledged.len(), total, "every grant acknowledged");

    let list = api
        .get("/pages/course/clients?limit=1000", &Cred::Bearer(ADMIN))
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let list = body(&list);
    assert_eq!(
        list["total"], total,
        "exactly the granted clients, none doubled"
    );
    let listed: BTreeSet<String> = list["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["email"].as_str().expect("email").to_string())
        .collect();
    assert_eq!(
        listed, acknowledged,
        "every acknowledged grant is on the list"
    );
    let audit = api.get("/audit?limit=1000", &Cred::Bearer(ADMIN)).await;
    let grants = body(&audit)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "grant")
        .count();
    assert_eq!(grants, total, "one audit entry per grant");

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "grant load: {total} grants from {SHOPS} concurrent shops in {:.2} s = {:.0} grants/s \
         (latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
}
