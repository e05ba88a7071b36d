//! The CloudEvent envelope as daprd builds it on publish (contract §1.3–1.6) and reads it on
//! delivery (§3.1–3.3). Publishers and subscribers written against daprd see the same bytes
//! and headers here, so every rule below is daprd's, including the surprising ones (a JSON
//! body sent as `text/plain` becomes a JSON string; a caller's `traceparent` is replaced unless
//! the event also has `traceid`).

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use dapr_events::trace::parse_traceparent;
use serde_json::{Map, Value};

use crate::duration::{parse_go_bool, parse_go_duration};

/// What daprd sends when an envelope carries no usable trace context (contract §3.1).
pub const EMPTY_TRACEPARENT: &str = "00-00000000000000000000000000000000-0000000000000000-00";

const DEFAULT_TYPE: &str = "com.dapr.event.sent";
const DEFAULT_SOURCE: &str = "Dapr";

/// One publish request, as the HTTP API received it.
pub struct PublishInput<'a> {
    pub pubsub_name: &'a str,
    pub topic: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// `metadata.*` query parameters with the prefix stripped.
    pub metadata: &'a BTreeMap<String, String>,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    pub app_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("failed deserializing metadata. Error: rawPayload value must be a valid boolean: actual is '{0}'")]
    RawPayload(String),
    #[error("cannot create cloudevent")]
    CloudEventCreation,
}

impl EnvelopeError {
    /// HTTP status, daprd `errorCode` and ErrorInfo `reason` (contract §1.7).
    pub fn dapr_error(&self) -> (u16, &'static str, &'static str) {
        match self {
            Self::RawPayload(_) => (400, "ERR_PUBSUB_REQUEST_METADATA", "DAPR_PUBSUB_METADATA_DESERIALIZATION"),
            Self::CloudEventCreation => (500, "ERR_PUBSUB_CLOUD_EVENTS_SER", "DAPR_PUBSUB_CLOUD_EVENT_CREATION"),
        }
    }
}

/// `rawPayload` metadata, read like daprd (key case-sensitive, Go booleans, absent or empty =
/// false). The same rule holds for publish metadata and subscription metadata.
pub fn is_raw_payload(metadata: &BTreeMap<String, String>) -> Result<bool, EnvelopeError> {
    match metadata.get("rawPayload").map(String::as_str) {
        None | Some("") => Ok(false),
        Some(value) => parse_go_bool(value).ok_or_else(|| EnvelopeError::RawPayload(value.to_owned())),
    }
}

/// The bytes daprd hands the component for one publish: the body itself for `rawPayload`,
/// otherwise the CloudEvent JSON (keys sorted, as Go serialises a map).
pub fn build_envelope<Tz: TimeZone>(input: &PublishInput<'_>, now: DateTime<Tz>) -> Result<Vec<u8>, EnvelopeError>
where
    Tz::Offset: std::fmt::Display,
{
    if is_raw_payload(input.metadata)? {
        return Ok(input.body.to_vec());
    }
    let trace = input.traceparent.and_then(parse_traceparent).unwrap_or("");
    let tracestate = input.tracestate.unwrap_or("");
    let mut envelope = if media_type(input.content_type) == "application/cloudevents+json" {
        from_caller_cloudevent(input, &now, trace, tracestate)?
    } else {
        new_cloudevent(input, &now, trace, tracestate)
    };
    if let Some(ttl) = ttl(input.metadata) {
        let expiration = now.with_timezone(&Utc) + ttl;
        envelope.insert("expiration".into(), Value::String(expiration.to_rfc3339_opts(SecondsFormat::Secs, true)));
    }
    Ok(serde_json::to_vec(&sorted(Value::Object(envelope))).expect("a JSON value serialises"))
}

/// The lowercase media type without parameters (daprd's content-type matching).
fn media_type(content_type: Option<&str>) -> String {
    content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Go's `time.Format(time.RFC3339)`: seconds, `Z` for UTC, else the numeric offset.
fn rfc3339_seconds<Tz: TimeZone>(time: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A caller-supplied CloudEvent (contract §1.5): kept as sent, with `topic`/`pubsubname`
/// overwritten, required attributes filled only when absent, trace fields set only when the
/// event has no `traceid`, and `metadata.cloudevent.*` overrides ignored.
fn from_caller_cloudevent<Tz: TimeZone>(
    input: &PublishInput<'_>,
    now: &DateTime<Tz>,
    trace: &str,
    tracestate: &str,
) -> Result<Map<String, Value>, EnvelopeError>
where
    Tz::Offset: std::fmt::Display,
{
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(input.body) else {
        return Err(EnvelopeError::CloudEventCreation);
    };
    for (key, default) in [("source", DEFAULT_SOURCE), ("type", DEFAULT_TYPE), ("specversion", "1.0")] {
        if event.get(key).is_none_or(Value::is_null) {
            event.insert(key.into(), Value::String(default.into()));
        }
    }
    if !event.contains_key("time") {
        event.insert("time".into(), Value::String(rfc3339_seconds(now)));
    }
    event.insert("topic".into(), Value::String(input.topic.into()));
    event.insert("pubsubname".into(), Value::String(input.pubsub_name.into()));
    if !event.contains_key("traceid") {
        event.insert("traceid".into(), Value::String(trace.into()));
        event.insert("traceparent".into(), Value::String(trace.into()));
    }
    if !event.contains_key("tracestate") {
        event.insert("tracestate".into(), Value::String(tracestate.into()));
    }
    Ok(event)
}

/// A new envelope around a plain body (contract §1.4), with `metadata.cloudevent.*` overrides.
fn new_cloudevent<Tz: TimeZone>(
    input: &PublishInput<'_>,
    now: &DateTime<Tz>,
    trace: &str,
    tracestate: &str,
) -> Map<String, Value>
where
    Tz::Offset: std::fmt::Display,
{
    // daprd decodes the overrides with mapstructure's weak decoding: key case is ignored.
    let overridden = |name: &str| {
        input
            .metadata
            .iter()
            .find(|(key, _)| {
                // `get` rather than slicing: a key with a multi-byte character at byte 11 (it
                // comes from the query string) must not panic.
                key.get(..11).is_some_and(|prefix| prefix.eq_ignore_ascii_case("cloudevent."))
                    && key[11..].eq_ignore_ascii_case(name)
            })
            .map(|(_, value)| value.clone())
            .filter(|value| !value.is_empty())
    };
    let source = if input.app_id.is_empty() { DEFAULT_SOURCE } else { input.app_id };
    let trace = overridden("traceparent").or_else(|| overridden("traceid")).unwrap_or_else(|| trace.to_owned());
    let mut event = Map::new();
    let mut set = |key: &str, value: String| {
        event.insert(key.to_owned(), Value::String(value));
    };
    set("id", overridden("id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()));
    set("source", overridden("source").unwrap_or_else(|| source.to_owned()));
    set("type", overridden("type").unwrap_or_else(|| DEFAULT_TYPE.to_owned()));
    set("specversion", "1.0".to_owned());
    set("datacontenttype", input.content_type.unwrap_or("text/plain").to_owned());
    set("topic", input.topic.to_owned());
    set("pubsubname", input.pubsub_name.to_owned());
    set("traceid", trace.clone());
    set("traceparent", trace);
    set("tracestate", overridden("tracestate").unwrap_or_else(|| tracestate.to_owned()));
    set("time", rfc3339_seconds(now));
    if let Some(subject) = overridden("subject") {
        set("subject", subject);
    }
    let (key, data) = data_field(input.content_type, input.body);
    event.insert(key.to_owned(), data);
    event
}

/// How the body goes into the envelope (contract §1.3): parsed JSON for exactly
/// `application/json` (a string when it does not parse), base64 for binary types, a string for
/// everything else.
fn data_field(content_type: Option<&str>, body: &[u8]) -> (&'static str, Value) {
    let as_string = || Value::String(String::from_utf8_lossy(body).into_owned());
    match media_type(content_type).as_str() {
        "application/json" => ("data", serde_json::from_slice(body).unwrap_or_else(|_| as_string())),
        "application/octet-stream" | "application/cloudevents+protobuf" => {
            ("data_base64", Value::String(base64::engine::general_purpose::STANDARD.encode(body)))
        }
        _ => ("data", as_string()),
    }
}

/// `metadata.ttlInSeconds` (alias `ttl`, any case): whole seconds > 0 or a Go duration; an
/// invalid value is ignored, as daprd ignores it at this step.
fn ttl(metadata: &BTreeMap<String, String>) -> Option<chrono::Duration> {
    let value = metadata
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("ttlInSeconds") || key.eq_ignore_ascii_case("ttl"))
        .map(|(_, value)| value.trim())?;
    let duration = match value.parse::<i64>() {
        Ok(seconds) if seconds > 0 => std::time::Duration::from_secs(seconds as u64),
        Ok(_) => return None,
        Err(_) => parse_go_duration(value).ok().filter(|d| !d.is_zero())?,
    };
    chrono::Duration::from_std(duration).ok()
}

/// Go marshals maps with sorted keys at every level; so do we, whatever `serde_json`'s map is.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// What a `rawPayload` subscription receives (contract §3.2): a fresh envelope around the
/// stored bytes, new id on every delivery, no `time`, trace fields only from the message
/// metadata.
pub fn raw_payload_delivery(
    data: &[u8],
    topic: &str,
    pubsub_name: &str,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut event = BTreeMap::from([
        ("id", Value::String(uuid::Uuid::new_v4().to_string())),
        ("source", Value::String(DEFAULT_SOURCE.into())),
        ("type", Value::String(DEFAULT_TYPE.into())),
        ("specversion", Value::String("1.0".into())),
        ("datacontenttype", Value::String("application/octet-stream".into())),
        ("topic", Value::String(topic.into())),
        ("pubsubname", Value::String(pubsub_name.into())),
        ("data_base64", Value::String(base64::engine::general_purpose::STANDARD.encode(data))),
    ]);
    for key in ["traceid", "traceparent", "tracestate"] {
        if let Some(value) = metadata.get(key) {
            event.insert(key, Value::String(value.clone()));
        }
    }
    serde_json::to_vec(&event).expect("a JSON map serialises")
}

/// An `expiration` in the past (contract §3.3). An unreadable one does not expire the event.
pub fn is_expired(event: &Map<String, Value>, now: DateTime<Utc>) -> bool {
    event
        .get("expiration")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .is_some_and(|expiration| expiration < now)
}

/// The `traceparent` header of a delivery: the envelope's `traceparent` (else `traceid`) when
/// it is valid W3C trace context, else the all-zero value (contract §3.1).
pub fn delivery_traceparent(event: &Map<String, Value>) -> String {
    ["traceparent", "traceid"]
        .iter()
        .filter_map(|key| event.get(*key).and_then(Value::as_str))
        .find_map(parse_traceparent)
        .unwrap_or(EMPTY_TRACEPARENT)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::metadata;
    use serde_json::json;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn envelope(content_type: Option<&str>, body: &str, meta: &[(&str, &str)], traceparent: Option<&str>) -> Value {
        let metadata = metadata(meta);
        let input = PublishInput {
            pubsub_name: "pubsub",
            topic: "orders",
            content_type,
            body: body.as_bytes(),
            metadata: &metadata,
            traceparent,
            tracestate: None,
            app_id: "todo",
        };
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        serde_json::from_slice(&build_envelope(&input, now).unwrap()).unwrap()
    }

    #[test]
    fn json_bodies_are_parsed_only_for_application_json() {
        let json_body = envelope(Some("application/json"), r#"{"a":1}"#, &[], None);
        assert_eq!(json_body["data"], json!({"a": 1}));
        assert_eq!(json_body["datacontenttype"], "application/json");
        let with_params = envelope(Some("Application/JSON; charset=utf-8"), r#"{"a":1}"#, &[], None);
        assert_eq!(with_params["data"], json!({"a": 1}));
        assert_eq!(with_params["datacontenttype"], "Application/JSON; charset=utf-8", "kept verbatim");
        assert_eq!(envelope(Some("application/json"), "not json", &[], None)["data"], "not json");
        let text = envelope(None, r#"{"a":1}"#, &[], None);
        assert_eq!(text["data"], r#"{"a":1}"#, "no content type: the body is a string");
        assert_eq!(text["datacontenttype"], "text/plain");
        assert_eq!(envelope(Some("application/vnd.x+json"), "{}", &[], None)["data"], "{}");
        let binary = envelope(Some("application/octet-stream"), "hi", &[], None);
        assert_eq!(binary["data_base64"], "aGk=");
        assert!(binary.get("data").is_none());
    }

    #[test]
    fn new_envelopes_carry_daprs_attributes_and_overrides() {
        let event = envelope(Some("application/json"), "1", &[], Some(TRACE));
        assert_eq!(event["source"], "todo");
        assert_eq!(event["type"], "com.dapr.event.sent");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["topic"], "orders");
        assert_eq!(event["pubsubname"], "pubsub");
        assert_eq!(event["traceparent"], TRACE);
        assert_eq!(event["traceid"], TRACE);
        assert_eq!(event["tracestate"], "");
        assert_eq!(event["time"], "2026-11-23T12:00:00Z");
        assert!(uuid::Uuid::parse_str(event["id"].as_str().unwrap()).is_ok());
        assert!(event.get("subject").is_none());
        let untraced = envelope(Some("application/json"), "1", &[], Some("garbage"));
        assert_eq!(untraced["traceparent"], "");
        let overridden = envelope(
            Some("application/json"),
            "1",
            &[
                ("cloudevent.id", "my-id"),
                ("CloudEvent.Type", "my.type"),
                ("cloudevent.subject", "s"),
                ("cloudevent.source", "me"),
            ],
            None,
        );
        let unicode =
            envelope(Some("application/json"), "1", &[("cloudevent\u{e9}id", "x"), ("cloudevent.\u{e9}", "y")], None);
        assert!(uuid::Uuid::parse_str(unicode["id"].as_str().unwrap()).is_ok(), "non-ASCII keys are not overrides");
        assert_eq!(
            (&overridden["id"], &overridden["type"], &overridden["subject"], &overridden["source"]),
            (&json!("my-id"), &json!("my.type"), &json!("s"), &json!("me"))
        );
    }

    #[test]
    fn caller_cloudevents_keep_their_attributes() {
        let body = json!({"id": "e1", "source": "todo", "type": "todos.task.created", "specversion": "1.0",
                          "time": "2026-01-01T00:00:00.123456Z", "data": {"x": 1}, "correlationid": "c",
                          "topic": "wrong", "pubsubname": "wrong", "traceparent": "caller"});
        let event = envelope(
            Some("application/cloudevents+json"),
            &body.to_string(),
            &[("cloudevent.id", "ignored")],
            Some(TRACE),
        );
        assert_eq!(event["id"], "e1");
        assert_eq!(event["time"], "2026-01-01T00:00:00.123456Z");
        assert_eq!(event["correlationid"], "c");
        assert_eq!((&event["topic"], &event["pubsubname"]), (&json!("orders"), &json!("pubsub")));
        assert_eq!(event["traceparent"], TRACE, "without traceid, daprd replaces the caller's traceparent");
        let with_traceid = json!({"id": "e2", "traceid": "mine", "traceparent": "mine"});
        let event = envelope(Some("application/cloudevents+json"), &with_traceid.to_string(), &[], Some(TRACE));
        assert_eq!((&event["traceparent"], &event["traceid"]), (&json!("mine"), &json!("mine")));
        assert_eq!(event["source"], "Dapr", "missing attributes get daprd's defaults");
        assert_eq!(event["type"], "com.dapr.event.sent");
        let no_id = envelope(Some("application/cloudevents+json"), "{}", &[], None);
        assert!(no_id.get("id").is_none(), "no id is generated for a caller's CloudEvent");
    }

    #[test]
    fn non_object_cloudevents_and_bad_raw_payload_flags_are_errors() {
        let metadata = metadata(&[]);
        for body in ["[1]", "null", "\"x\"", "{"] {
            let input = PublishInput {
                pubsub_name: "p",
                topic: "t",
                content_type: Some("application/cloudevents+json"),
                body: body.as_bytes(),
                metadata: &metadata,
                traceparent: None,
                tracestate: None,
                app_id: "a",
            };
            assert_eq!(build_envelope(&input, Utc::now()), Err(EnvelopeError::CloudEventCreation), "{body}");
        }
        assert_eq!(
            is_raw_payload(&self::metadata(&[("rawPayload", "yes")])),
            Err(EnvelopeError::RawPayload("yes".into()))
        );
        assert_eq!(is_raw_payload(&self::metadata(&[("rawPayload", "T")])), Ok(true));
        assert_eq!(is_raw_payload(&self::metadata(&[("rawpayload", "true")])), Ok(false), "the key is case-sensitive");
    }

    #[test]
    fn raw_payloads_are_published_verbatim_and_ttl_sets_expiration() {
        let metadata = metadata(&[("rawPayload", "true"), ("ttlInSeconds", "60")]);
        let input = PublishInput {
            pubsub_name: "p",
            topic: "t",
            content_type: Some("application/json"),
            body: b"\x00raw",
            metadata: &metadata,
            traceparent: None,
            tracestate: None,
            app_id: "a",
        };
        assert_eq!(build_envelope(&input, Utc::now()).unwrap(), b"\x00raw");
        let expiring = envelope(Some("application/json"), "1", &[("ttlInSeconds", "60")], None);
        assert_eq!(expiring["expiration"], "2026-11-23T12:01:00Z");
        assert_eq!(
            envelope(Some("application/json"), "1", &[("TTL", "90s")], None)["expiration"],
            "2026-11-23T12:01:30Z"
        );
        assert!(envelope(Some("application/json"), "1", &[("ttlInSeconds", "soon")], None).get("expiration").is_none());
        assert!(envelope(Some("application/json"), "1", &[("ttlInSeconds", "-5")], None).get("expiration").is_none());
    }

    #[test]
    fn delivery_side_rules() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let event = |value: Value| value.as_object().unwrap().clone();
        assert!(is_expired(&event(json!({"expiration": "2026-11-23T11:59:59Z"})), now));
        assert!(!is_expired(&event(json!({"expiration": "2026-11-23T12:00:01Z"})), now));
        assert!(!is_expired(&event(json!({"expiration": "tomorrow"})), now));
        assert_eq!(delivery_traceparent(&event(json!({"traceparent": TRACE}))), TRACE);
        assert_eq!(delivery_traceparent(&event(json!({"traceparent": "", "traceid": TRACE}))), TRACE);
        assert_eq!(delivery_traceparent(&event(json!({"traceparent": ""}))), EMPTY_TRACEPARENT);
        let raw: Value =
            serde_json::from_slice(&raw_payload_delivery(b"hi", "t", "p", &metadata(&[("traceparent", TRACE)])))
                .unwrap();
        assert_eq!(raw["data_base64"], "aGk=");
        assert_eq!(raw["traceparent"], TRACE);
        assert_eq!(raw["datacontenttype"], "application/octet-stream");
        assert!(raw.get("time").is_none() && raw.get("traceid").is_none());
    }
}
