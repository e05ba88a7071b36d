//! Logs and traces, and the server span of every HTTP request.
//!
//! - **Logs**: `tracing` events on stdout, text or JSON lines, filtered by `RUST_LOG`. A line
//!   written inside a span starts with that span's OpenTelemetry `trace_id` and `span_id`, so a
//!   log search by trace id finds every line of one request, one publish or one delivery.
//! - **Traces**: every `tracing` span at INFO or above is an OpenTelemetry span
//!   (tracing-opentelemetry). Spans are exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the SDK
//!   reads the other standard variables itself (`OTEL_EXPORTER_OTLP_PROTOCOL`,
//!   `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`; docs/configuration.md). With no endpoint
//!   nothing is exported, but spans still get ids: the trace context the services hand on
//!   (outbox rows, publishes, logs) stays valid either way.
//!
//! Propagation is W3C Trace Context, which is what daprd reads and writes ([`crate::trace_context`]).

use std::fmt;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower_http::trace::TraceLayer;
use tracing::{Span, Subscriber};
use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::env::{ConfigError, Env};
use crate::startup::StartError;
use crate::trace_context;

/// The tracer provider, kept so its spans can be flushed when the service stops.
#[must_use = "call `shutdown` when the service stops, or the last spans are lost"]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint is configured).
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports the spans still buffered and stops the exporter. The batch processor exports from
    /// a thread of its own with a blocking client, so this blocks: call it after serving ended.
    pub fn shutdown(self) {
        if self.exporting
            && let Err(error) = self.provider.shutdown()
        {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

/// Installs the global subscriber (logs as described in the module documentation; JSON lines
/// when `json`) and the tracer provider, `service_name` being the default
/// `OTEL_SERVICE_NAME`. A second call in the same process keeps the first subscriber (tests
/// start many services in one process).
pub fn init(service_name: &str, json: bool) -> Result<Telemetry, StartError> {
    init_from(service_name, json, &Env::new(|name| std::env::var(name).ok()))
}

fn init_from<F: Fn(&str) -> Option<String>>(
    service_name: &str,
    json: bool,
    env: &Env<F>,
) -> Result<Telemetry, StartError> {
    let exporting = export_wanted(env)?;
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME, or service.name in OTEL_RESOURCE_ATTRIBUTES, wins over the app id.
    let named = env.get("OTEL_SERVICE_NAME").is_some()
        || env.get("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attributes| attributes.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service_name.to_owned());
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| StartError::Telemetry(e.to_string()))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));

    // RUST_LOG chooses the lines. The log layer sees no span: a line names its span by trace and
    // span id (`WithTraceIds`), and formatting every span's fields for lines that mostly never
    // come cost a few percent of a create (docs/performance.md). So RUST_LOG directives that
    // name a span (`[request]=debug`) select nothing.
    let events = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let log_filter = filter_fn(|metadata| metadata.is_event()).and(events);
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceIds { inner: tracing_subscriber::fmt::format().json().flatten_event(true), json })
            .with_filter(log_filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .event_format(WithTraceIds { inner: tracing_subscriber::fmt::format(), json })
            .with_filter(log_filter)
            .boxed()
    };
    // Spans are traced whatever RUST_LOG says about log lines: quieting logs must not cut
    // traces. Our spans are all at INFO; the libraries' DEBUG and TRACE spans stay out.
    let traces = span_layer(tracer);
    let installed = tracing_subscriber::registry().with(traces).with(logs).try_init().is_ok();
    if installed {
        tracing::info!(exporting, "telemetry ready");
    }
    Ok(Telemetry { provider, exporting: exporting && installed })
}

/// The OpenTelemetry layer with no exporter, for a test's own subscriber: spans get ids, so
/// trace context is handed on (outbox rows, publishes) as in a service.
pub fn layer_without_export<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    span_layer(SdkTracerProvider::builder().build().tracer(env!("CARGO_PKG_NAME")))
}

/// The layer that makes our INFO spans OpenTelemetry spans, doing only what the services use:
/// every request, unit of work, publish and delivery is a span, and with the layer's defaults
/// tracing took about a fifth of the todo service's CPU under `make bench-write`
/// (docs/performance.md).
/// - No context activation: nothing here reads `opentelemetry::Context::current()` (trace
///   context is taken from the `tracing` span, `crate::trace_context`), and activating attaches
///   the span's context to the thread at every poll of an instrumented future.
/// - No busy and idle times (two clock reads per poll), no thread attributes (a `String` per
///   span: a span of ours moves between the runtime's threads anyway) and no source location:
///   the span names say where.
fn span_layer<S>(tracer: opentelemetry_sdk::trace::SdkTracer) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(LevelFilter::INFO)
}

/// Whether the standard variables ask for an OTLP export, refusing what this build cannot do
/// rather than exporting nothing silently.
fn export_wanted<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<bool, ConfigError> {
    if env.get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match env.get("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => {
            return Err(ConfigError {
                var: "OTEL_TRACES_EXPORTER",
                detail: format!("{other:?}: only otlp (the default) and none are supported"),
            });
        }
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        match env.get(var).as_deref() {
            None | Some("http/protobuf") | Some("http/json") => {}
            Some(other) => {
                return Err(ConfigError {
                    var: if var.contains("TRACES") {
                        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                    } else {
                        "OTEL_EXPORTER_OTLP_PROTOCOL"
                    },
                    detail: format!(
                        "{other:?}: the services export over HTTP only: http/protobuf (the default) or http/json"
                    ),
                });
            }
        }
    }
    Ok(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
}

/// An event format that writes the current span's trace and span ids first: `trace_id=… span_id=…`
/// before a text line, the first two members of a JSON line.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = trace_ids(event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        // The JSON format gives no way to add members of our own; it writes one object per line,
        // so the ids go in as its first members.
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The trace and span ids of the innermost span around `event` that the OpenTelemetry layer
/// knows (a library's DEBUG span is not one), asked of the registry itself: the log layer's
/// own view has no spans.
fn trace_ids(event: &tracing::Event<'_>) -> Option<(String, String)> {
    tracing::dispatcher::get_default(|dispatch| {
        let innermost =
            if event.is_contextual() { dispatch.current_span().id().cloned() } else { event.parent().cloned() }?;
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        registry.span(&innermost)?.scope().find_map(|span| {
            let context = tracing_opentelemetry::get_otel_context(&span.id(), dispatch)?;
            let span = context.span();
            let ids = span.span_context();
            ids.is_valid().then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
        })
    })
}

/// Wraps every route of `router` but the probes in a server span named after the route template
/// (`POST /todos`), continuing the caller's trace when its `traceparent` is valid. The span
/// records the status, marks 5xx answers as errors, and has a `correlation_id` field a service
/// records once it knows it.
pub fn with_request_spans(router: Router) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request| {
                let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
                // The orchestrator's probes (`crate::health`), every few seconds per pod, would
                // bury the traces worth reading.
                if matches!(route, Some("/healthz" | "/readyz")) {
                    return Span::none();
                }
                let method = request.method();
                let span = tracing::info_span!(
                    "request",
                    otel.name = %route.map_or_else(|| method.to_string(), |route| format!("{method} {route}")),
                    otel.kind = "server",
                    otel.status_code = tracing::field::Empty,
                    http.request.method = %method,
                    http.route = route,
                    url.path = %request.uri().path(),
                    http.response.status_code = tracing::field::Empty,
                    correlation_id = tracing::field::Empty,
                );
                // An invalid or missing traceparent leaves it a root: the span starts a trace.
                trace_context::continue_from_headers(&span, request.headers());
                span
            })
            .on_response(|response: &Response, latency: std::time::Duration, span: &Span| {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                tracing::debug!(status = status.as_u16(), latency_ms = latency.as_millis() as u64, "answered");
            })
            .on_failure(()),
    )
}

/// What a publish sends: one message (by id), or a batch of several.
#[derive(Debug, Clone, Copy)]
pub enum Messages<'a> {
    One(&'a str),
    Batch(usize),
}

/// The producer span of one publish through daprd (OpenTelemetry's messaging conventions),
/// whose `traceparent` its caller sends to daprd. One message's span is a child of what caused
/// it (its caller gives it its parent: `crate::trace_context`); a batch's serves many, so it is
/// a trace of its own, which its caller links to each message's creation context.
pub fn producer_span(topic: &str, messages: Messages<'_>) -> Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "dapr",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.message.id = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty,
    );
    match messages {
        Messages::One(id) => span.record("messaging.message.id", id),
        Messages::Batch(count) => span.record("messaging.batch.message_count", count),
    };
    span
}

/// The consumer span of one delivery's processing (OpenTelemetry's messaging conventions); the
/// message id is recorded once the delivery is read (`messaging.message.id`).
pub fn consumer_span(topic: &str) -> Span {
    tracing::info_span!(
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "dapr",
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        messaging.message.id = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::new(move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn exports_only_when_an_endpoint_is_set() {
        assert!(!export_wanted(&env(&[])).unwrap());
        assert!(export_wanted(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])).unwrap());
        assert!(export_wanted(&env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")])).unwrap());
        const OFF: [(&str, &str); 2] =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_TRACES_EXPORTER", "none")];
        assert!(!export_wanted(&env(&OFF)).unwrap());
        const DISABLED: [(&str, &str); 2] =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_SDK_DISABLED", "true")];
        assert!(!export_wanted(&env(&DISABLED)).unwrap());
    }

    #[test]
    fn refuses_what_this_build_cannot_export() {
        let grpc = export_wanted(&env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert_eq!(grpc.var, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(grpc.detail.contains("http/protobuf"), "{grpc}");
        let zipkin = export_wanted(&env(&[("OTEL_TRACES_EXPORTER", "zipkin")])).unwrap_err();
        assert_eq!(zipkin.var, "OTEL_TRACES_EXPORTER");
        assert!(export_wanted(&env(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")])).is_ok());
    }
}
