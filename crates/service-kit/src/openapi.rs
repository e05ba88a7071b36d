//! What the three services' OpenAPI documents share: the problem answer every operation may
//! give, and the routes that serve a document (`GET /openapi.json`) and its reference page
//! (`GET /docs`, Swagger UI, whose assets the service serves itself: nothing comes from a CDN).
//!
//! Each service collects its routes with `utoipa_axum::router::OpenApiRouter` and `routes!`,
//! so a route cannot be added without its operation: the document is generated from the same
//! handlers the router calls.

use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::middleware::{self, Limits};
use crate::problem::Problem;

/// An RFC 9457 problem answer; used inline for every error status of every operation, and as
/// each operation's `default` answer (what a proxy or an overloaded service may answer).
#[derive(utoipa::ToResponse)]
#[response(
    description = "An RFC 9457 problem naming the failure (`type`) and, for input at fault, the fields (`errors`).",
    content_type = "application/problem+json"
)]
pub struct ProblemResponse(#[to_schema] pub Problem);

/// What every operation of a public API may answer besides its own answers
/// (`responses(…, PublicProblems)`).
#[derive(utoipa::IntoResponses)]
pub enum PublicProblems {
    /// Overloaded (`Retry-After`), the database unavailable, or the request took too long:
    /// retry later.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
    /// Anything else, as a problem.
    #[response(status = "default", content_type = "application/problem+json")]
    Other(#[to_schema] Problem),
}

/// What every admin operation may answer besides its own answers.
#[derive(utoipa::IntoResponses)]
pub enum AdminProblems {
    /// No or a wrong bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] Problem),
    /// The admin API is disabled (no `ADMIN_TOKEN`).
    #[response(status = 403, content_type = "application/problem+json")]
    Disabled(#[to_schema] Problem),
    /// Anything else, as a problem.
    #[response(status = "default", content_type = "application/problem+json")]
    Other(#[to_schema] Problem),
}

/// What every route daprd calls may answer besides its own answers.
#[derive(utoipa::IntoResponses)]
pub enum SidecarProblems {
    /// No or a wrong `dapr-api-token`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] Problem),
    /// Anything else, as a problem.
    #[response(status = "default", content_type = "application/problem+json")]
    Other(#[to_schema] Problem),
}

/// The security scheme of the admin routes: `Authorization: Bearer <ADMIN_TOKEN>`.
pub const ADMIN_TOKEN: &str = "admin_token";
/// The security scheme of the routes daprd calls: `dapr-api-token: <APP_API_TOKEN>`.
pub const APP_TOKEN: &str = "app_token";

/// Adds the [`ADMIN_TOKEN`] and [`APP_TOKEN`] security schemes to a document
/// (`#[openapi(modifiers(&SecuritySchemes))]`).
pub struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`ADMIN_TOKEN`; with none configured the admin API answers 403."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            APP_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "dapr-api-token",
                "`APP_API_TOKEN`, which daprd sends on every call to the app when it is configured.",
            ))),
        );
    }
}

/// What a service serves, assembled the same way in all three: `routes` (each collected with
/// its operation), `GET /openapi.json` and `GET /docs` for the document they make, problem
/// answers for unknown paths and methods, and the middleware of [`middleware::harden`].
pub fn serve_documented(routes: OpenApiRouter, limits: &Limits) -> Router {
    let (router, api) = routes.split_for_parts();
    let router = router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .fallback(crate::problem::not_found)
        .method_not_allowed_fallback(crate::problem::method_not_allowed);
    middleware::harden(router, limits)
}

/// The other half of "no route without its operation" (each service's `tests/api/openapi.rs`
/// checks that every operation has its route): the services' routes are only ever collected
/// with `utoipa_axum::routes!`, which registers a handler and its operation together. A route
/// added with axum's own `route`, `route_service` or `nest_service` would be served but missing
/// from the document, so no source file of the services and their shared crates may use them
/// (the test harnesses, which serve stand-ins, excepted).
#[cfg(test)]
mod every_route_is_documented {
    use std::path::{Path, PathBuf};

    const UNDOCUMENTED: [&str; 4] = [".route(", ".route_service(", ".nest_service(", "axum::routing::"];

    fn rust_files(path: &Path, found: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).expect("a readable directory") {
                let path = entry.expect("an entry").path();
                if path.file_name().is_some_and(|name| name == "testing" || name == "testing.rs") {
                    continue;
                }
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.to_owned());
        }
    }

    #[test]
    fn no_source_file_adds_a_route_outside_routes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        for dir in ["crates/service-kit/src", "crates/dapr-consumer/src", "services"] {
            rust_files(&root.join(dir), &mut files);
        }
        files.retain(|file| !file.components().any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches"));
        assert!(files.len() > 30, "the sources were not found under {}", root.display());
        let mut offences = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a readable file");
            let code = text.split("#[cfg(test)]\nmod every_route_is_documented").next().unwrap_or(&text);
            for (number, line) in code.lines().enumerate() {
                let comment = line.trim_start().starts_with("//");
                if !comment && UNDOCUMENTED.iter().any(|call| line.contains(call)) {
                    offences.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
                }
            }
        }
        assert!(offences.is_empty(), "routes added without their OpenAPI operation:\n{}", offences.join("\n"));
    }
}
