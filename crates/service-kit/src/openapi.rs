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

/// The path of the OpenAPI document.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// The path of the browsable reference.
pub const REFERENCE_PATH: &str = "/docs";

/// An RFC 9457 problem answer; used inline for every error status of every operation, and as
/// each operation's `default` answer (what a proxy or an overloaded service may answer).
#[derive(utoipa::ToResponse)]
#[response(
    description = "An RFC 9457 problem naming the failure (`type`) and, for input at fault, the fields (`errors`).",
    content_type = "application/problem+json"
)]
pub struct ProblemResponse(#[to_schema] pub Problem);

/// `router` with `GET /openapi.json` serving `api` and `GET /docs` browsing it.
pub fn with_docs(router: Router, api: OpenApi) -> Router {
    router.merge(SwaggerUi::new(REFERENCE_PATH).url(DOCUMENT_PATH, api))
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
    let router = with_docs(router, api)
        .fallback(crate::problem::not_found)
        .method_not_allowed_fallback(crate::problem::method_not_allowed);
    middleware::harden(router, limits)
}
