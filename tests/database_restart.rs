//! The database restarted under load: two gateway processes on one PostgreSQL keep taking grants
//! while the server goes down and comes back. They answer 503 (never an error page, never a
//! false "done") while it is away, serve again by themselves once it is back, and every grant
//! they acknowledged is there.
//!
//! A test binary of its own: restarting the server would cut every other test's connections.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::pair::{ADMIN, Pair, grant};
use common::postgres as pg_server;

#[tokio::test]
async fn gateways_ride_out_a_database_restart_and_lose_nothing_acknowledged() {
    let pair = Pair::start("").await;
    let targets = [pair.a.addr, pair.b.addr];
    let next = AtomicUsize::new(0);
    let restarted = AtomicBool::new(false);
    // Each shop keeps granting, one at a time, until a little after the server is back.
    let load = || async {
        let mut answers = Vec::new();
        let mut after = 0;
        while after < 20 {
            let n = next.fetch_add(1, Ordering::Relaxed);
            answers.push((n, grant(targets[n % 2], n).await));
            if restarted.load(Ordering::Relaxed) {
                after += 1;
            }
        }
        answers
    };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(|| pg_server::server().restart())
            .await
            .expect("restart");
        restarted.store(true, Ordering::Relaxed);
    };
    let (answers, (), more) = tokio::join!(load(), restart, load());
    let answers: Vec<(usize, Option<u16>)> = answers.into_iter().chain(more).collect();

    let acknowledged: Vec<usize> = answers
        .iter()
        .filter(|(_, status)| *status == Some(201))
        .map(|(n, _)| *n)
        .collect();
    let refused: Vec<Option<u16>> = answers
        .iter()
        .filter(|(_, status)| *status != Some(201))
        .map(|(_, status)| *status)
        .collect();
    assert!(!refused.is_empty(), "the load met the restart");
    assert!(
        refused.iter().all(|s| *s == Some(503)),
        "while the database was away the gateways answered 503 and nothing else: {refused:?}"
    );

    // Back by themselves: both take grants again, without a restart of their own.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, addr) in targets.into_iter().enumerate() {
        let n = 1_000_000 + i;
        loop {
            let status = grant(addr, n).await;
            if status == Some(201) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gateway {i} did not recover: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let listed = pair.api_a().emails("course", ADMIN).await;
    assert!(!acknowledged.is_empty());
    for n in &acknowledged {
        let email = format!("buyer{n}@example.com");
        assert!(
            listed.contains(&email),
            "{email} was acknowledged but is not listed"
        );
    }
}
