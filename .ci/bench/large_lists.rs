//! Large client lists: fills one page with N clients through the CSV import path (the admin
//! API's parser and batched apply, without HTTP), then times what the admin API and the admin
//! page ask the store for. Run by `.ci/bench-lists.sh`, which starts the PostgreSQL server.
//!
//! large_lists redb DIR [N]
//! large_lists postgres URL [N]

use std::time::{Duration, Instant};

use pagegate::api::clients::SEARCH_COUNT_CAP;
use pagegate::api::csv;
use pagegate::config::{DatabaseUrl, PgTls, PostgresConfig};
use pagegate::store::postgres::PgStore;
use pagegate::store::redb::RedbStore;
use pagegate::store::{Store, now};

/// Rows per import file: what fits under the admin API's 2 MiB body limit.
const ROWS_PER_FILE: usize = 30_000;
const PAGE: &str = "course";
const FIRST: [&str; 8] = [
    "Anna", "Boris", "Chloé", "Dmitri", "Elena", "Farid", "Grete", "Hugo",
];
const LAST: [&str; 10] = [
    "Smith",
    "Ivanova",
    "Ångström",
    "Müller",
    "García",
    "Kowalski",
    "Nakamura",
    "Okafor",
    "Rossi",
    "Dubois",
];

fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn email(i: usize) -> String {
    format!("user{i:07}@example.com")
}

/// One import file's text, as an admin would upload it.
fn file(from: usize, to: usize) -> String {
    let mut text = String::from("email,name,until\n");
    for i in from..to {
        let name = if i == 424_242 {
            "Quetzalcoatl Rare".to_owned()
        } else {
            format!(
                "{} {} {i}",
                FIRST[i % FIRST.len()],
                LAST[(i / 8) % LAST.len()]
            )
        };
        // A third unlimited, a seventh ended, the rest ending on one of 336 days.
        let until = match (i % 3, i % 7) {
            (0, _) => String::new(),
            (_, 0) => "2020-06-30".to_owned(),
            _ => format!("2027-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
        };
        text.push_str(&format!("{},{name},{until}\n", email(i)));
    }
    text
}

/// The median of `runs` timings of `f`, in milliseconds.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut took = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f());
        took.push(started.elapsed());
    }
    took.sort();
    let median: Duration = took[took.len() / 2];
    (median.as_secs_f64() * 1000.0, last.expect("one run"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (backend, place) = match (args.get(1), args.get(2)) {
        (Some(b), Some(p)) => (b.as_str(), p.as_str()),
        _ => return Err("usage: large_lists redb DIR [N] | postgres URL [N]".into()),
    };
    let n: usize = args.get(3).map_or(Ok(1_000_000), |s| s.parse())?;
    let store: Box<dyn Store> = match backend {
        "redb" => Box::new(RedbStore::open(std::path::Path::new(place))?),
        "postgres" => Box::new(PgStore::open(&PostgresConfig {
            url: DatabaseUrl(place.to_owned()),
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            tls: PgTls::Disable,
            ca_file: None,
        })?),
        other => return Err(format!("unknown backend {other}").into()),
    };
    let (rss0, _) = rss_mb();
    println!("backend: {backend}, clients: {n}");
    println!("rss at start: {rss0:.0} MB");

    // Import, file by file, as the admin API applies an upload.
    let mut import_time = Duration::ZERO;
    let mut created = 0;
    let mut from = 0;
    while from < n {
        let to = (from + ROWS_PER_FILE).min(n);
        let text = file(from, to);
        let started = Instant::now();
        let parsed = csv::parse_import(text.as_bytes()).map_err(|e| format!("{e:?}"))?;
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems.first());
        let applied = csv::apply_import(&*store, PAGE, &parsed.rows, "bench")?;
        import_time += started.elapsed();
        created += applied.created;
        from = to;
    }
    let (rss1, hwm1) = rss_mb();
    println!(
        "import: {created} rows in {:.1} s = {:.0} rows/s",
        import_time.as_secs_f64(),
        created as f64 / import_time.as_secs_f64()
    );
    println!("rss after import: {rss1:.0} MB (peak {hwm1:.0} MB)");

    let t = now();
    let (ms, counts) = time(5, || store.client_counts(PAGE, t).expect("counts"));
    println!(
        "counts: {ms:.2} ms (total {}, active {})",
        counts.total, counts.active
    );
    for (what, after) in [
        ("first", None),
        ("middle", Some(email(n / 2))),
        ("last", Some(email(n.saturating_sub(100)))),
    ] {
        let (ms, page) = time(5, || {
            store
                .client_page(PAGE, after.as_deref(), 101, None)
                .expect("page")
        });
        println!(
            "list page {what} (100 rows): {ms:.2} ms ({} rows)",
            page.len()
        );
    }
    for q in [
        "example.com",
        "smith",
        "0777777",
        "quetzal",
        "nobody-has-this",
    ] {
        let (page_ms, page) = time(3, || {
            store.client_page(PAGE, None, 101, Some(q)).expect("search")
        });
        let (count_ms, count) = time(3, || {
            store
                .count_matching(PAGE, q, SEARCH_COUNT_CAP)
                .expect("count")
        });
        println!(
            "search {q:?}: page {page_ms:.2} ms ({} rows), count {count_ms:.2} ms ({}{})",
            page.len(),
            count.count,
            if count.exact { "" } else { "+" }
        );
    }
    // The admin page's first view: counts and the first 50 rows (template rendering aside).
    let (ms, _) = time(5, || {
        let counts = store.client_counts(PAGE, t).expect("counts");
        let rows = store.client_page(PAGE, None, 51, None).expect("page");
        (counts, rows.len())
    });
    println!("admin first view (store part): {ms:.2} ms");

    // Export: chunks read and written as CSV into a counting sink.
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut rows = 0usize;
    store.client_chunks(PAGE, &mut |chunk| {
        rows += chunk.len();
        bytes += csv::export(&chunk, t).map(|b| b.len()).unwrap_or_default();
        Ok(())
    })?;
    let (rss2, hwm2) = rss_mb();
    println!(
        "export: {rows} rows, {:.0} MB of CSV in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("rss after reads and export: {rss2:.0} MB (peak {hwm2:.0} MB)");
    Ok(())
}
