//! Every difference between the SQL the services send to SQLite and to PostgreSQL, in one place.
//!
//! Besides what is here, the two backends differ only in their migrations (each service keeps
//! `migrations/sqlite` and `migrations/postgres`: column types and indexes are spelled per
//! backend). Queries are otherwise written once, in the subset both understand: `$N`
//! placeholders numbered in order of first appearance (SQLite requires that), `ON CONFLICT`,
//! `RETURNING`, and ids and timestamps as text.

use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// A statement of the `Any` driver with its arguments.
pub type AnyQuery<'q> = Query<'q, sqlx::Any, AnyArguments<'q>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Appended to a `SELECT` that reads a row it is about to change. PostgreSQL locks the row
    /// so concurrent writers of it queue up instead of racing; SQLite has one writer at a
    /// time, which queues them already.
    pub const fn lock_for_update(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE",
            Self::Sqlite => "",
        }
    }

    /// Appended to a `SELECT` that claims work shared by several instances: on PostgreSQL a
    /// row another instance has locked is skipped instead of waited for. SQLite's single writer
    /// makes the claim atomic without it.
    pub const fn lock_skipping_locked(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
            Self::Sqlite => "",
        }
    }

    /// `column` is one of the strings in the JSON array bound at `$param` (see [`json_array`]):
    /// one statement text and one value for any number of ids. An `IN ($1, …, $n)` list is a
    /// statement of its own for every n, parsed and planned afresh (PostgreSQL took 3 ms to plan
    /// 1,000 of them against 0.3 ms for this), and binds n values.
    ///
    /// On PostgreSQL the strings go through an array (`= ANY (ARRAY(…))`) rather than
    /// `IN (SELECT …)`: the planner estimates the latter at 100 rows whatever is bound, and
    /// against a table it believes small (the relay's queue, as the last vacuum saw it) it
    /// hashes them and scans the whole table; an array comparison is always one index probe per
    /// string. SQLite probes the index for `IN (SELECT value FROM json_each(…))` already.
    pub fn in_json_array(self, column: &str, param: usize) -> String {
        match self {
            Self::Postgres => format!("{column} = ANY (ARRAY(SELECT json_array_elements_text(${param}::json)))"),
            Self::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
        }
    }

    /// The strings of the JSON array bound at `$param`, as a table of one column, `value`: for
    /// a `FROM` that writes one row per id.
    pub fn json_array_table(self, param: usize) -> String {
        match self {
            Self::Postgres => format!("json_array_elements_text(${param}::json) AS listed(value)"),
            Self::Sqlite => format!("json_each(${param})"),
        }
    }
}

/// The value to bind for [`Backend::in_json_array`].
pub fn json_array<T: std::fmt::Display>(values: &[T]) -> String {
    serde_json::Value::from(values.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string()
}

/// `$first, $first+1, …` for `count` values (sqlx's `Any` driver binds no arrays; lists of
/// ids go in one value instead, [`Backend::in_json_array`]).
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// `($first, …), (…), …`: `rows` rows of `columns` placeholders each, numbered on from `first`,
/// for a multi-row `INSERT … VALUES`; bind the rows' values in order, row after row.
pub fn value_rows(first: usize, columns: usize, rows: usize) -> String {
    (0..rows).map(|row| format!("({})", placeholders(first + row * columns, columns))).collect::<Vec<_>>().join(", ")
}

/// A statement whose text depends on how many rows it writes (a multi-row `INSERT`), built once
/// per row count up to `max` rather than at every execution: formatting hundreds of
/// placeholders per batch was a measurable share of a create's CPU. Past `max` it is built each
/// time.
pub struct PerRowCount {
    max: usize,
    build: fn(usize) -> String,
    built: std::sync::OnceLock<Vec<String>>,
}

impl PerRowCount {
    pub const fn new(max: usize, build: fn(usize) -> String) -> Self {
        Self { max, build, built: std::sync::OnceLock::new() }
    }

    /// The statement for `rows` rows.
    pub fn get(&self, rows: usize) -> std::borrow::Cow<'_, str> {
        if rows == 0 || rows > self.max {
            return (self.build)(rows).into();
        }
        let built = self.built.get_or_init(|| (1..=self.max).map(self.build).collect());
        built[rows - 1].as_str().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_quotes_and_escapes_each_value() {
        assert_eq!(json_array(&["a\"b", "c"]), r#"["a\"b","c"]"#);
        assert_eq!(json_array::<&str>(&[]), "[]");
    }

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
        assert_eq!(value_rows(3, 2, 2), "($3, $4), ($5, $6)");
        static SQL: PerRowCount = PerRowCount::new(2, |rows| value_rows(1, 1, rows));
        assert_eq!(
            (SQL.get(1), SQL.get(2), SQL.get(3)),
            ("($1)".into(), "($1), ($2)".into(), "($1), ($2), ($3)".into())
        );
    }
}
