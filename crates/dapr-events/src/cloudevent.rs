//! The CloudEvents 1.0 structured-mode JSON envelope, as published and as delivered by Dapr.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::timestamp;

/// A CloudEvent in structured JSON mode.
///
/// The same type reads what daprd delivers: daprd adds `topic`, `pubsubname`, `traceid` and
/// `tracestate` to every envelope, and other producers may add extensions we do not know;
/// unknown attributes are ignored rather than rejected (tolerant reader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T = serde_json::Value> {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, with = "timestamp::option", skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,

    /// Extension: the business transaction this event belongs to, across services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// Extension: the id of the message (command or event) that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// Extension (W3C Trace Context). See [`CloudEvent::with_trace`] for why `traceid` is set too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,

    /// Set by daprd on delivery: the topic and pub/sub component the event came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsubname: Option<String>,
}

impl<T> CloudEvent<T> {
    /// A CloudEvent 1.0 with the required attributes and JSON data.
    pub fn new(id: impl Into<String>, source: impl Into<String>, event_type: impl Into<String>, data: T) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: id.into(),
            source: source.into(),
            event_type: event_type.into(),
            subject: None,
            time: None,
            datacontenttype: Some("application/json".to_owned()),
            dataschema: None,
            data: Some(data),
            correlationid: None,
            causationid: None,
            traceparent: None,
            traceid: None,
            tracestate: None,
            topic: None,
            pubsubname: None,
        }
    }

    /// Attaches W3C trace context.
    ///
    /// daprd, given an `application/cloudevents+json` body *without* a `traceid` attribute,
    /// overwrites `traceparent` with its own span (or `""`), which would cut the trace. With
    /// `traceid` present it leaves both alone, so we always set the two together.
    pub fn with_trace(mut self, traceparent: Option<String>, tracestate: Option<String>) -> Self {
        self.traceid = traceparent.clone();
        self.traceparent = traceparent;
        self.tracestate = tracestate;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_an_envelope_as_daprd_delivers_it() {
        // daprd's own envelope: seconds precision, local offset, extra attributes.
        let delivered = json!({
            "specversion": "1.0", "id": "e1", "source": "todo", "type": "todos.task.created",
            "time": "2026-11-22T11:00:00+01:00", "datacontenttype": "application/json",
            "data": {"k": 1}, "topic": "todos.task.created", "pubsubname": "pubsub",
            "traceid": "", "traceparent": "", "tracestate": "", "someextension": true
        });
        let event: CloudEvent = serde_json::from_value(delivered).unwrap();
        assert_eq!(event.time.unwrap().to_rfc3339(), "2026-11-22T10:00:00+00:00");
        assert_eq!(event.pubsubname.as_deref(), Some("pubsub"));
        assert_eq!(event.data, Some(json!({"k": 1})));
    }

    #[test]
    fn trace_context_sets_traceid_so_daprd_keeps_it() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let event = CloudEvent::new("e1", "todo", "t", json!({})).with_trace(Some(tp.clone()), None);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["traceparent"], tp);
        assert_eq!(json["traceid"], tp);
        assert!(json.get("tracestate").is_none());
    }

    #[test]
    fn time_always_has_microseconds() {
        let mut event = CloudEvent::new("e1", "todo", "t", json!({}));
        event.time = Some(timestamp::parse("2026-11-22T10:00:00Z").unwrap());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["time"], "2026-11-22T10:00:00.000000Z");
    }
}
