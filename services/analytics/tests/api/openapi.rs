//! The analytics service's OpenAPI document against the service: every documented operation
//! is routed, the reference page is self-served, schemathesis finds no answer that breaks the
//! document or is a server error, and a panic answers a problem.

use analytics::config::Settings;
use service_kit::testing::daprd::{self, Daprd};
use service_kit::testing::http_contract::{self, PANIC_PATH, panicking_route};
use service_kit::testing::schemathesis;

use crate::helpers::{ADMIN_TOKEN, Backend, TestApp, TestDb, spawn_with};
use crate::on_both_backends;

const APP_TOKEN: &str = "property-app-token";

on_both_backends!(the_document_and_the_router_agree, schemathesis_finds_nothing);

async fn the_document_and_the_router_agree(backend: Backend) {
    let app = spawn_with(backend, &[("APP_API_TOKEN", APP_TOKEN)]).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("Authorization", bearer.as_str()), ("dapr-api-token", APP_TOKEN)];
    let operations = http_contract::every_operation_is_routed(&app.url(""), &headers).await;
    assert!(
        operations >= 14,
        "deliveries, figures, rebuild, dead letters and health (metrics are on their own port): {operations}"
    );
    http_contract::reference_page_is_self_served(&app.url("")).await;
    let requests = http_contract::http_files_name_documented_operations(&app.url(""), "analytics").await;
    assert!(requests >= 2, "http/*.http send {requests} requests to the analytics service");
    app.stop().await;
}

/// With a real daprd (in-memory pub/sub) beside the app: dead-letter replays publish through it,
/// and it delivers them back.
async fn schemathesis_finds_nothing(backend: Backend) {
    let sidecar_port = daprd::free_port();
    let endpoint = format!("http://127.0.0.1:{sidecar_port}");
    let app = spawn_with(backend, &[("APP_API_TOKEN", APP_TOKEN), ("DAPR_HTTP_ENDPOINT", &endpoint)]).await;
    let resources = daprd::in_memory_pubsub();
    let _sidecar = Daprd::start(daprd::Options {
        http_port: Some(sidecar_port),
        app_api_token: Some(APP_TOKEN.into()),
        ..daprd::Options::new("analytics", Some(app.addr.port()), &resources.path)
    })
    .await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("Authorization", bearer.as_str()), ("dapr-api-token", APP_TOKEN)];
    schemathesis::check_service(&format!("analytics on {backend:?}"), &app.url(""), &headers).await;
    app.stop().await;
}

/// The service's own routes (`analytics::startup::routes`) with one more, which panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_a_problem() {
    let test_db = TestDb::new(Backend::Sqlite).await;
    let settings = Settings::from_lookup(|name| dapr_consumer::testing::test_env(name, &test_db)).unwrap();
    let consumer = dapr_consumer::Consumer::start(&settings.consumer, analytics::startup::MIGRATIONS).await.unwrap();
    let routes = analytics::startup::routes(&consumer).route(PANIC_PATH, axum::routing::get(panicking_route));
    let app = TestApp::spawn(consumer.serve(routes), test_db);
    http_contract::a_panic_answers_a_problem(&app.url("")).await;
    app.stop().await;
}
