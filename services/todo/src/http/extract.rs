//! Extractors whose rejections are RFC 9457 problems naming the offending field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header, request::Parts};
use serde::de::DeserializeOwned;
use service_kit::problem::FieldError;

use super::error::ApiError;

/// The largest request body we accept; see the `DefaultBodyLimit` layer in `http/mod.rs`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body: 415 unless `Content-Type` is `application/json`, 413 over [`MAX_BODY_BYTES`],
/// 400 for malformed JSON, 422 for well-formed JSON of the wrong shape (unknown field, wrong
/// type), each naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) if is_length_limit(&rejection) => {
                ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES }
            }
            other => ApiError::BadRequest { field: None, detail: format!("could not read the body: {other}") },
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_length_limit(rejection: &BytesRejection) -> bool {
    // axum reports an exceeded `DefaultBodyLimit` as 413 on the rejection itself.
    rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = value.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if value.is_empty() {
        Err(ApiError::UnsupportedMediaType("Content-Type must be application/json (it is missing)".into()))
    } else {
        Err(ApiError::UnsupportedMediaType(format!("Content-Type must be application/json, not {value:?}")))
    }
}

/// Deserialises a JSON object, naming the field that failed. Any other JSON value is the
/// wrong shape (422): serde would otherwise read an array into a struct field by field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => ApiError::Validation(vec![FieldError::new("(body)", "must be a JSON object")]),
            Err(error) => malformed(bytes, &error),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                ApiError::Validation(vec![FieldError::new(field_of(&path, &message), strip_position(&message))])
            }
            _ => malformed(bytes, &inner),
        }
    })?;
    // Trailing garbage after the document is malformed JSON too.
    deserializer.end().map_err(|e| malformed(bytes, &e))?;
    Ok(value)
}

fn malformed(bytes: &[u8], error: &serde_json::Error) -> ApiError {
    let detail = if bytes.iter().all(u8::is_ascii_whitespace) {
        "the request body is empty; expected a JSON object".to_owned()
    } else {
        format!("malformed JSON: {error}")
    };
    ApiError::BadRequest { field: None, detail }
}

/// serde reports unknown and missing fields against their parent, so the field name is only in
/// the message (``unknown field `x`, expected …``).
fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix)?.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "(body)".to_owned(),
        // Unknown fields are reported at their own path, missing ones at their parent's.
        (path, Some(name)) if path.rsplit('.').next() == Some(name) => path.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters; a malformed query string answers 400 instead of axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_query(query).map(ApiQuery)
    }
}

fn serde_urlencoded_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::BadRequest { field: None, detail: "malformed query string".into() })?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::BadRequest { field: None, detail: format!("malformed query string: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        title: String,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        n: u8,
    }

    fn field_errors(result: Result<Body, ApiError>) -> Vec<FieldError> {
        match result {
            Err(ApiError::Validation(errors)) => errors,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn names_unknown_missing_and_mistyped_fields() {
        let unknown = field_errors(parse_json(br#"{"title":"a","colour":"red"}"#));
        assert_eq!(unknown[0].field, "colour");
        let missing = field_errors(parse_json(br#"{}"#));
        assert_eq!(missing[0].field, "title");
        let mistyped = field_errors(parse_json(br#"{"title":5}"#));
        assert_eq!(mistyped[0].field, "title");
        let nested = field_errors(parse_json(br#"{"title":"a","nested":{"n":300}}"#));
        assert_eq!(nested[0].field, "nested.n");
        let nested_unknown = field_errors(parse_json(br#"{"title":"a","nested":{"m":1}}"#));
        assert_eq!(nested_unknown[0].field, "nested.m");
    }

    #[test]
    fn only_an_object_is_a_body() {
        for body in [&br#"["a", null]"#[..], b" \"a\"", b"5", b"null"] {
            let errors = field_errors(parse_json(body));
            assert_eq!(errors[0].field, "(body)", "{:?}", String::from_utf8_lossy(body));
        }
        assert!(matches!(parse_json::<Body>(b"[1,"), Err(ApiError::BadRequest { .. })));
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        for body in [&b"{"[..], b"", b"{\"title\":\"a\"} trailing", b"{\"title\":"] {
            assert!(
                matches!(parse_json::<Body>(body), Err(ApiError::BadRequest { .. })),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
