//! W3C Trace Context (`traceparent`, `tracestate`) where a trace crosses a process: HTTP
//! headers, outbox rows, CloudEvent attributes. It is the propagation daprd speaks, on its
//! HTTP API and on the deliveries it posts (Dapr's docs: "Distributed tracing": "W3C trace
//! context").

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A span's context as the two W3C fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The remote parent named by request headers; an empty context when `traceparent` is missing
/// or malformed (a malformed one never fails a request: the span starts a new trace).
pub fn from_headers(headers: &HeaderMap) -> Context {
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    if !traceparent.is_some_and(well_formed) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// The W3C grammar's field lengths (`2-32-16-2` hex digits), which the SDK's propagator does not
/// check (it reads `4bf9…473`, 31 digits, as a trace id); it checks the rest.
fn well_formed(traceparent: &str) -> bool {
    let lengths: Vec<usize> = traceparent.trim().split('-').map(str::len).collect();
    lengths.len() >= 4 && lengths[1..4] == [32, 16, 2]
}

/// The remote parent a stored or delivered `traceparent` names; empty when it is malformed.
pub fn from_w3c(traceparent: &str, tracestate: Option<&str>) -> Context {
    if !well_formed(traceparent) {
        return Context::new();
    }
    let mut carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    if let Some(tracestate) = tracestate {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` (not yet entered) a child of the span a stored or delivered `traceparent`
/// names; a malformed one leaves it a root.
pub fn continue_from(span: &Span, traceparent: &str, tracestate: Option<&str>) {
    let _ = span.set_parent(from_w3c(traceparent, tracestate));
}

/// Makes `span` (not yet entered) a child of the remote span the headers name.
pub fn continue_from_headers(span: &Span, headers: &HeaderMap) {
    let _ = span.set_parent(from_headers(headers));
}

/// Links `span` to the span `traceparent` names (a replay to the original delivery), when it
/// is well-formed.
pub fn link(span: &Span, traceparent: &str) {
    if let Some(original) = span_context(traceparent) {
        span.add_link(original);
    }
}

/// Links `span` to each span `traceparents` name that is well-formed, up to the number of links
/// the SDK keeps per span: it drops the rest when the span starts, so reading them would be
/// work thrown away (a relay round links up to `RELAY_BATCH_SIZE` events).
pub fn link_each<'a>(span: &Span, traceparents: impl IntoIterator<Item = &'a str>) {
    // The SDK's limit: `OTEL_SPAN_LINK_COUNT_LIMIT`, else 128 (opentelemetry_sdk's
    // `trace::Config::default` and `SpanLimits`).
    static KEPT: LazyLock<usize> = LazyLock::new(|| {
        std::env::var("OTEL_SPAN_LINK_COUNT_LIMIT")
            .ok()
            .and_then(|limit| limit.parse::<u32>().ok())
            .unwrap_or(opentelemetry_sdk::trace::SpanLimits::default().max_links_per_span) as usize
    });
    for original in traceparents.into_iter().filter_map(span_context).take(*KEPT) {
        span.add_link(original);
    }
}

/// The span context a `traceparent` names, for a link; `None` when it is malformed.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let context = from_w3c(traceparent, None);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// `span`'s own context in W3C form: what a message or request it causes carries. `None` when
/// no OpenTelemetry layer is installed (a unit test without [`crate::telemetry::init`]).
pub fn of(span: &Span) -> Option<W3cContext> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    Some(W3cContext { traceparent: carrier.remove("traceparent")?, tracestate: carrier.remove("tracestate") })
}

/// The current span's context, for what it writes (an outbox row).
pub fn current() -> Option<W3cContext> {
    of(&Span::current())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_spec_example_and_refuses_malformed_values() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = span_context(example).expect("the W3C example is valid");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_remote() && context.is_sampled());
        for malformed in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(span_context(malformed).is_none(), "{malformed:?} was read");
        }
    }

    #[test]
    fn headers_name_the_same_parent() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        headers.insert("tracestate", "vendor=x".parse().unwrap());
        let context = from_headers(&headers);
        let span = context.span();
        assert_eq!(span.span_context().span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(span.span_context().trace_state().header(), "vendor=x");
    }
}
