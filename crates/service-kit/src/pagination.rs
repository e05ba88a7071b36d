//! Keyset pagination, the same for every list of every service: `limit` (1–100, default 20)
//! and an opaque `cursor` in, `{items, nextCursor}` out.
//!
//! Lists are ordered by a time-ordered UUID (v7), and a cursor names the last id of the page
//! before: stable under concurrent inserts (a new row never shifts later pages) and as cheap on
//! page 1,000 as on page 1. Cursors are opaque to clients; the version prefix lets the format
//! change without breaking cursors in flight during a deploy.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use uuid::Uuid;

use crate::problem::FieldError;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// A validated page request: how many items, and after which id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    /// The last id of the previous page (exclusive bound), `None` for the first page.
    pub after: Option<Uuid>,
}

impl PageRequest {
    /// Reads the `limit` and `cursor` query parameters; a bad one is named in the error.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, FieldError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| FieldError::new("limit", format!("must be an integer from 1 to {MAX_LIMIT}")))?,
        };
        let after = cursor.map(decode_cursor).transpose()?;
        Ok(Self { limit, after })
    }

    /// Rows to fetch: one more than the page, which tells whether a next page exists without a
    /// `COUNT`.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }
}

/// One page of a list as every API answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(example = "djE6MDE5MGYyYTQtOGMxZS03ZDNhLTliN2UtMmYxYzNkNGU1ZjYw")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page from rows fetched with [`PageRequest::fetch_limit`]; `id` is the sort key.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, id: impl Fn(&T) -> Uuid) -> Self {
        let next_cursor = if rows.len() as i64 > request.limit {
            rows.truncate(request.limit as usize);
            rows.last().map(|last| encode_cursor(id(last)))
        } else {
            None
        };
        Self { items: rows, next_cursor }
    }
}

fn encode_cursor(last_id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

/// The id a cursor names; public for the fuzz target (`fuzz/`).
pub fn decode_cursor(cursor: &str) -> Result<Uuid, FieldError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| Uuid::parse_str(text.strip_prefix("v1:")?).ok())
        // A bare id was the cursor of the notification and dead-letter lists before they
        // shared this format; one in flight during the upgrade still pages on.
        .or_else(|| Uuid::parse_str(cursor).ok())
        .ok_or_else(|| FieldError::new("cursor", "is not a cursor this API issued"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors() {
        assert_eq!(PageRequest::parse(None, None).unwrap(), PageRequest { limit: 20, after: None });
        for bad in ["0", "101", "x", "-1"] {
            assert_eq!(PageRequest::parse(Some(bad), None).unwrap_err().field, "limit");
        }
        for bad in ["garbage", "djE6bm90LWEtdXVpZA"] {
            assert_eq!(PageRequest::parse(None, Some(bad)).unwrap_err().field, "cursor");
        }
        let id = Uuid::now_v7();
        let rows: Vec<Uuid> = vec![Uuid::now_v7(), id, Uuid::now_v7()];
        let request = PageRequest::parse(Some("2"), None).unwrap();
        let page = Page::from_rows(rows, &request, |row| *row);
        assert_eq!(page.items.len(), 2);
        let next = page.next_cursor.expect("a third row means a next page");
        assert_eq!(PageRequest::parse(None, Some(&next)).unwrap().after, Some(id));
        assert_eq!(PageRequest::parse(None, Some(&id.to_string())).unwrap().after, Some(id));
        let last = Page::from_rows(vec![id], &request, |row| *row);
        assert_eq!(last.next_cursor, None);
    }
}
