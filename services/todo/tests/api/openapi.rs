//! The todo service's OpenAPI document against the service: every documented operation is
//! routed, the reference page is self-served, and schemathesis finds no answer that breaks the
//! document or is a server error.

use std::sync::Arc;

use service_kit::testing::http_contract::{every_operation_is_routed, reference_page_is_self_served};
use service_kit::testing::schemathesis;

use crate::helpers::{Backend, FakeSidecar, TestApp, TestDb};
use crate::on_both_backends;

const ADMIN_TOKEN: &str = "property-admin";

on_both_backends!(the_document_and_the_router_agree, schemathesis_finds_nothing);

async fn spawn(backend: Backend) -> (TestApp, FakeSidecar) {
    let sidecar = FakeSidecar::start().await;
    let app =
        TestApp::spawn_with(Arc::new(TestDb::new(backend).await), &sidecar, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    (app, sidecar)
}

async fn the_document_and_the_router_agree(backend: Backend) {
    let (app, _sidecar) = spawn(backend).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let operations = every_operation_is_routed(&app.address, &[("Authorization", &bearer)]).await;
    assert!(operations >= 13, "the todo API, its admin API and health (metrics are on their own port): {operations}");
    reference_page_is_self_served(&app.address).await;
    let requests =
        service_kit::testing::http_contract::http_files_name_documented_operations(&app.address, "todo").await;
    assert!(requests >= 10, "http/*.http send {requests} requests to the todo service");
}

async fn schemathesis_finds_nothing(backend: Backend) {
    let (app, _sidecar) = spawn(backend).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    schemathesis::check_service(&format!("todo on {backend:?}"), &app.address, &[("Authorization", &bearer)]).await;
}
