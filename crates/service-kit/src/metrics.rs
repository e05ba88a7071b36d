//! Prometheus metrics: the `metrics` facade, recorded by one process-wide
//! metrics-exporter-prometheus recorder and rendered on `GET /metrics` of a port of its own
//! (`METRICS_PORT`), apart from the API port an ingress reaches.
//!
//! Names follow Prometheus' conventions (prefix `dapr_todo_`, base units, `_total` counters,
//! `_seconds` histograms). Which service and pod a series came from is Prometheus' to add as
//! target labels when it scrapes (k8s/base/monitoring/), not the service's to export.
//! docs/operations.md lists every metric and the alerts built on them.
//!
//! Gauges that are facts of the database (the outbox's depth and lag, dead letters parked)
//! are read when Prometheus scrapes, by the service's [`Refresh`], so they are never stale and
//! no task polls the database between scrapes.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;

/// Requests answered, by method, route template and status.
pub const HTTP_REQUESTS: &str = "dapr_todo_http_requests_total";
/// How long requests took to answer, by method, route template and status.
pub const HTTP_REQUEST_DURATION: &str = "dapr_todo_http_request_duration_seconds";

/// Histogram buckets for every `_seconds` metric: from a fast request (1 ms) to a publish at
/// its timeout (5 s) and beyond.
const SECONDS_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Sets the database-backed gauges just before a scrape is rendered.
pub type Refresh = Arc<dyn Fn() -> BoxFuture<'static, Result<(), Problem>> + Send + Sync>;

/// How often the recorder folds histogram samples into their buckets when nobody scrapes:
/// without it every sample would be kept until the next scrape, and a service nobody scrapes
/// would grow without bound.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a scrape waits for the database gauges: under Prometheus' usual 10 s scrape timeout.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's recorder, installed by the first call (tests start several services in one
/// process; they share it). A service calls it before it records anything: what is recorded
/// before a recorder is installed goes nowhere.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .expect("the buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("a thread for the metrics upkeep");
            handle
        })
        .clone()
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    refresh: Option<Refresh>,
}

/// The metrics port's router: `GET /metrics`, refreshing the database gauges first. Collected
/// with `routes!` like every route (`crate::openapi`'s `every_route_is_documented`), though no
/// document is served on this port.
pub fn router(refresh: Option<Refresh>) -> Router {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(metrics))
        .with_state(Scrape { handle: install(), refresh })
        .split_for_parts();
    router.fallback(crate::problem::not_found)
}

/// Prometheus text exposition of every metric of the service (docs/operations.md).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "The Prometheus text exposition format.", body = String, content_type = "text/plain"),
    (status = 503, description = "The database did not answer.", body = Problem, content_type = "application/problem+json"),
))]
async fn metrics(State(scrape): State<Scrape>) -> Result<Response, Problem> {
    // One scrape at a time: the refreshed gauges are process-wide, and two services in one
    // process (tests) must not render each other's values.
    static SCRAPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = SCRAPING.lock().await;
    if let Some(refresh) = &scrape.refresh {
        tokio::time::timeout(REFRESH_TIMEOUT, refresh()).await.map_err(|_| {
            Problem::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "database-unavailable")
                .detail("The database did not answer in time for the metrics read from it.")
        })??;
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], scrape.handle.render()).into_response())
}

/// Counts every request of `router` and its duration, labelled with its route template
/// (`unmatched` for what no route matched, so a scan of random paths cannot explode the
/// series) and its method (`other` for non-standard ones, for the same reason).
pub fn count_requests(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(count))
}

async fn count(request: Request, next: Next) -> Response {
    let method = match *request.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_str().to_owned())];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, &labels).record(started.elapsed());
    response
}
