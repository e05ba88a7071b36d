//! The analytics app spawned in-process on port 0 against a fresh database.

use analytics::config::Settings;

use dapr_consumer::testing::test_env;

pub use dapr_consumer::testing::{Running as TestApp, todo_event};
pub use service_kit::db::dialect::Backend;
pub use service_kit::testing::TestDb;

pub const ADMIN_TOKEN: &str = "admin-secret";

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, &[]).await
}

/// The app with `overrides` of its test environment.
pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let test_db = TestDb::new(backend).await;
    let settings = Settings::from_lookup(|name| {
        if let Some((_, value)) = overrides.iter().find(|(key, _)| *key == name) {
            return Some((*value).to_owned());
        }
        match name {
            "ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
            _ => test_env(name, &test_db),
        }
    })
    .expect("test settings are valid");
    TestApp::spawn(analytics::startup::build(settings).await.expect("the app starts"), test_db)
}
