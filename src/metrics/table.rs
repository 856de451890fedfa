//! The per-request metrics: plain atomics the request path bumps, and the collectors that turn
//! them into exposition text at scrape time.
//!
//! Every counter is kept once per worker ([`PerWorker`]) and summed when
//! scraped. Two workers adding to one atomic pass its cache line between their cores on every
//! request, which cost about 0.4 µs of CPU per proxied request on two cores
//! (docs/performance.md); a worker's own share is only ever written by that worker.
//!
//! `prometheus-client`'s own `Family` looks a label set up in a locked map, and its `Histogram`
//! takes a mutex on every observation. Neither belongs on the proxy's hot path, so the two
//! per-request metrics are kept here instead: a [`RequestSeries`] is one (site, page) with one
//! counter per status code, an [`UpstreamTimer`] one site's histogram of atomic buckets. Both are
//! looked up by name when a gateway is built and handed out as `Arc`s; a request then costs one
//! or two relaxed atomic additions and no allocation. The tables only grow (a site or page
//! removed by a configuration change keeps its last values), which keeps every counter monotonic
//! for the life of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Unit;

use crate::runtime::workers::PerWorker;

/// Status codes hyper can represent: 100 to 999, in nine classes of a hundred.
const FIRST_STATUS: u16 = 100;
const STATUS_CLASSES: usize = 9;

/// One worker's counters of one status class (`2xx`, …), in cache lines of their own.
#[repr(align(128))]
struct ClassCounters([AtomicU64; 100]);

/// One worker's counters of a series: a class's block is made when the worker first answers
/// with a status of that class, so a series costs a few pointers per worker until used, and
/// about 0.8 KiB per class a worker has answered with.
type Share = [OnceLock<Box<ClassCounters>>; STATUS_CLASSES];

/// Requests of one (site, page), counted per status code.
pub struct RequestSeries {
    site: String,
    page: String,
    shares: PerWorker<Share>,
}

/// The class block and the slot in it of a status code; `None` for none hyper can represent.
fn status_slot(status: u16) -> Option<(usize, usize)> {
    let offset = usize::from(status.checked_sub(FIRST_STATUS)?);
    let class = offset / 100;
    (class < STATUS_CLASSES).then_some((class, offset % 100))
}

impl RequestSeries {
    fn new(site: &str, page: &str) -> RequestSeries {
        RequestSeries {
            site: site.to_owned(),
            page: page.to_owned(),
            shares: PerWorker::new(|| std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// Counts one answered request.
    pub fn count(&self, status: StatusCode) {
        let Some((class, slot)) = status_slot(status.as_u16()) else {
            return;
        };
        let block = self.shares.here()[class]
            .get_or_init(|| Box::new(ClassCounters(std::array::from_fn(|_| AtomicU64::new(0)))));
        block.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The site's name, `""` for requests that reached no site.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The protected page's id, `""` for everything else.
    pub fn page(&self) -> &str {
        &self.page
    }

    /// How many requests ended with `status` (for tests and the collector).
    pub fn get(&self, status: u16) -> u64 {
        let Some((class, slot)) = status_slot(status) else {
            return 0;
        };
        self.shares
            .iter()
            .filter_map(|share| share[class].get())
            .map(|block| block.0[slot].load(Ordering::Relaxed))
            .sum()
    }

    /// Every status code counted so far, with its count, in ascending order.
    fn counted(&self) -> Vec<(u16, u64)> {
        let mut totals = [[0u64; 100]; STATUS_CLASSES];
        for share in self.shares.iter() {
            for (class, block) in share.iter().enumerate() {
                if let Some(block) = block.get() {
                    for (slot, counter) in block.0.iter().enumerate() {
                        totals[class][slot] += counter.load(Ordering::Relaxed);
                    }
                }
            }
        }
        let mut counted = Vec::new();
        for (class, slots) in totals.iter().enumerate() {
            for (slot, &value) in slots.iter().enumerate() {
                if value > 0 {
                    // At most 100 + 899: fits.
                    counted.push((FIRST_STATUS + (class * 100 + slot) as u16, value));
                }
            }
        }
        counted
    }
}

impl std::fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSeries")
            .field("site", &self.site)
            .field("page", &self.page)
            .finish_non_exhaustive()
    }
}

/// Every [`RequestSeries`] ever handed out; encodes `pagegate_http_requests_total`.
#[derive(Debug, Default)]
pub(super) struct RequestTable {
    series: Mutex<Vec<Arc<RequestSeries>>>,
}

impl RequestTable {
    /// The series of (site, page), created on first use. Called when a gateway is built, never
    /// per request.
    pub(super) fn series(&self, site: &str, page: &str) -> Arc<RequestSeries> {
        let mut all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = all.iter().find(|s| s.site == site && s.page == page) {
            return found.clone();
        }
        let created = Arc::new(RequestSeries::new(site, page));
        all.push(created.clone());
        created
    }
}

impl Collector for RequestTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all: Vec<Arc<RequestSeries>> = self
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut metric = encoder.encode_descriptor(
            "http_requests",
            "Requests answered, by site, protected page (empty when none) and status code.",
            None,
            MetricType::Counter,
        )?;
        for series in &all {
            for (status, value) in series.counted() {
                let labels = (
                    [
                        ("site", series.site.as_str()),
                        ("page", series.page.as_str()),
                    ],
                    [("status", status)],
                );
                ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Upper bounds of the upstream histogram's buckets, in seconds.
pub const UPSTREAM_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The same bounds in nanoseconds, compared against without floating point.
const UPSTREAM_BUCKETS_NS: [u64; 15] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// One site's histogram of upstream response times: one atomic per bucket plus the sum, per
/// worker.
pub struct UpstreamTimer {
    site: String,
    shares: PerWorker<TimerShare>,
}

/// One worker's observations.
struct TimerShare {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; UPSTREAM_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl UpstreamTimer {
    fn new(site: &str) -> UpstreamTimer {
        UpstreamTimer {
            site: site.to_owned(),
            shares: PerWorker::new(|| TimerShare {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Records one wait for response headers.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = UPSTREAM_BUCKETS_NS
            .iter()
            .position(|bound| ns <= *bound)
            .unwrap_or(UPSTREAM_BUCKETS_NS.len());
        let share = self.shares.here();
        share.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        share.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// (upper bound, count in this bucket) pairs, the count and the sum in seconds. The count
    /// is the buckets' total, so a scrape racing an observation still adds up.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let buckets: Vec<(f64, u64)> = UPSTREAM_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(i, bound)| {
                let count = self
                    .shares
                    .iter()
                    .map(|share| share.buckets[i].load(Ordering::Relaxed))
                    .sum();
                (bound, count)
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum_ns: u64 = self
            .shares
            .iter()
            .map(|share| share.sum_ns.load(Ordering::Relaxed))
            .sum();
        let sum = sum_ns as f64 / 1e9;
        (buckets, count, sum)
    }
}

impl std::fmt::Debug for UpstreamTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTimer")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// Every [`UpstreamTimer`]; encodes `pagegate_upstream_duration_seconds`.
#[derive(Debug, Default)]
pub(super) struct UpstreamTable {
    timers: Mutex<HashMap<String, Arc<UpstreamTimer>>>,
}

impl UpstreamTable {
    /// The site's timer, created on first use.
    pub(super) fn timer(&self, site: &str) -> Arc<UpstreamTimer> {
        self.timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(site.to_owned())
            .or_insert_with(|| Arc::new(UpstreamTimer::new(site)))
            .clone()
    }
}

impl Collector for UpstreamTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut all: Vec<Arc<UpstreamTimer>> = self
            .timers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.site.cmp(&b.site));
        let mut metric = encoder.encode_descriptor(
            "upstream_duration",
            "Time from forwarding a request to the upstream's response headers, by site.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for timer in &all {
            let (buckets, count, sum) = timer.snapshot();
            let labels = [("site", timer.site.as_str())];
            metric.encode_family(&labels)?.encode_histogram(
                sum,
                count,
                &buckets,
                None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    fn exposition(collector: impl Collector) -> String {
        let mut registry = Registry::with_prefix("pagegate");
        registry.register_collector(Box::new(collector));
        let mut out = String::new();
        encode(&mut out, &registry).expect("encode");
        out
    }

    #[test]
    fn requests_are_encoded_per_site_page_and_exact_status() {
        let table = Arc::new(RequestTable::default());
        let course = table.series("school", "course");
        let open = table.series("school", "");
        assert!(Arc::ptr_eq(&course, &table.series("school", "course")));
        course.count(StatusCode::OK);
        course.count(StatusCode::OK);
        course.count(StatusCode::FOUND);
        open.count(StatusCode::from_u16(599).expect("status"));
        open.count(StatusCode::from_u16(999).expect("status"));
        assert_eq!(course.get(200), 2);
        assert_eq!(
            exposition(table),
            "# HELP pagegate_http_requests Requests answered, by site, protected page (empty when none) and status code.\n\
             # TYPE pagegate_http_requests counter\n\
             pagegate_http_requests_total{site=\"school\",page=\"course\",status=\"200\"} 2\n\
             pagegate_http_requests_total{site=\"school\",page=\"course\",status=\"302\"} 1\n\
             pagegate_http_requests_total{site=\"school\",page=\"\",status=\"599\"} 1\n\
             pagegate_http_requests_total{site=\"school\",page=\"\",status=\"999\"} 1\n\
             # EOF\n"
        );
    }

    /// Each worker counts into its own share; a scrape sees the sum of all, and of threads
    /// that are no worker.
    #[tokio::test]
    async fn counts_from_every_worker_add_up() {
        let table = Arc::new(RequestTable::default());
        let series = table.series("school", "");
        let timers = Arc::new(UpstreamTable::default());
        let timer = timers.timer("school");
        let workers = crate::runtime::workers::Workers::start(2, false).expect("workers");
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for worker in 0..2 {
            let (series, timer, done) = (series.clone(), timer.clone(), done.clone());
            workers.spawn_on(worker, async move {
                for _ in 0..1000 {
                    series.count(StatusCode::OK);
                    timer.observe(Duration::from_millis(2));
                }
                series.count(StatusCode::NOT_FOUND);
                let _ = done.send(crate::runtime::workers::current());
            });
        }
        let mut ran_on = vec![
            finished.recv().await.expect("worker"),
            finished.recv().await.expect("worker"),
        ];
        ran_on.sort_unstable();
        assert_eq!(ran_on, [1, 2], "one count each on two different workers");
        series.count(StatusCode::OK);
        assert_eq!(series.get(200), 2001);
        assert_eq!(series.get(404), 2);
        assert_eq!(series.counted(), vec![(200, 2001), (404, 2)]);
        let text = exposition(timers);
        assert!(
            text.contains("pagegate_upstream_duration_seconds_count{site=\"school\"} 2000\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pagegate_upstream_duration_seconds_bucket{le=\"0.0025\",site=\"school\"} 2000\n"
            ),
            "{text}"
        );
        workers.stop().await;
    }

    #[test]
    fn upstream_times_land_in_cumulative_buckets_with_their_sum() {
        let table = Arc::new(UpstreamTable::default());
        let timer = table.timer("school");
        timer.observe(Duration::from_micros(500));
        timer.observe(Duration::from_millis(1));
        timer.observe(Duration::from_millis(30));
        timer.observe(Duration::from_secs(120));
        let text = exposition(table);
        for line in [
            "# TYPE pagegate_upstream_duration_seconds histogram",
            "# UNIT pagegate_upstream_duration_seconds seconds",
            "pagegate_upstream_duration_seconds_count{site=\"school\"} 4",
            "pagegate_upstream_duration_seconds_sum{site=\"school\"} 120.0315",
            "pagegate_upstream_duration_seconds_bucket{le=\"0.001\",site=\"school\"} 2",
            "pagegate_upstream_duration_seconds_bucket{le=\"0.025\",site=\"school\"} 2",
            "pagegate_upstream_duration_seconds_bucket{le=\"0.05\",site=\"school\"} 3",
            "pagegate_upstream_duration_seconds_bucket{le=\"60.0\",site=\"school\"} 3",
            "pagegate_upstream_duration_seconds_bucket{le=\"+Inf\",site=\"school\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
