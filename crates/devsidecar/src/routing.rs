//! Subscription routes: CEL `match` rules in order, then the default route (contract §2.2).

use serde_json::Value;

/// A compiled rule; an empty `match` matches everything.
pub struct Rule {
    pub match_expr: String,
    program: Option<cel::Program>,
    pub path: String,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("match", &self.match_expr).field("path", &self.path).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("invalid CEL expression {expr:?}: {detail}")]
    Compile { expr: String, detail: String },
    #[error("evaluating {expr:?} failed: {detail}")]
    Evaluate { expr: String, detail: String },
}

/// The routing table of one subscription.
#[derive(Debug, Default)]
pub struct Routes {
    rules: Vec<Rule>,
}

impl Routes {
    /// `rules` in order, then `default` if set, else `route` (so `route` is the fallback after
    /// the rules, and is ignored when `default` is set).
    pub fn new(rules: &[(String, String)], default: Option<&str>, route: Option<&str>) -> Result<Self, RouteError> {
        let mut compiled = Vec::new();
        for (expr, path) in rules {
            let program = if expr.trim().is_empty() {
                None
            } else {
                Some(
                    cel::Program::compile(expr)
                        .map_err(|e| RouteError::Compile { expr: expr.clone(), detail: e.to_string() })?,
                )
            };
            compiled.push(Rule { match_expr: expr.clone(), program, path: path.clone() });
        }
        if let Some(fallback) = default.filter(|d| !d.is_empty()).or(route.filter(|r| !r.is_empty())) {
            compiled.push(Rule { match_expr: String::new(), program: None, path: fallback.to_owned() });
        }
        Ok(Self { rules: compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The path for `event` (the CloudEvent as JSON), `Ok(None)` when no rule matches. A rule
    /// whose expression fails to evaluate or yields a non-boolean is an error, as in daprd.
    pub fn path_for(&self, event: &Value) -> Result<Option<&str>, RouteError> {
        let mut event_value = None;
        for rule in &self.rules {
            let Some(program) = &rule.program else { return Ok(Some(&rule.path)) };
            let value = match &event_value {
                Some(value) => value,
                None => event_value.insert(
                    cel::to_value(event)
                        .map_err(|e| RouteError::Evaluate { expr: rule.match_expr.clone(), detail: e.to_string() })?,
                ),
            };
            let mut context = cel::Context::default();
            context.add_variable_from_value("event", value.clone());
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => return Ok(Some(&rule.path)),
                Ok(cel::Value::Bool(false)) => continue,
                Ok(other) => {
                    return Err(RouteError::Evaluate {
                        expr: rule.match_expr.clone(),
                        detail: format!("the result {other:?} is not a boolean"),
                    });
                }
                Err(error) => {
                    return Err(RouteError::Evaluate { expr: rule.match_expr.clone(), detail: error.to_string() });
                }
            }
        }
        Ok(None)
    }
}

/// daprd prefixes a missing `/` and cleans the path before calling the app.
pub fn app_path(route: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in route.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect()
    }

    #[test]
    fn rules_match_in_order_then_the_default() {
        let routes = Routes::new(
            &rules(&[
                (r#"event.type == "todos.task.completed""#, "/completed"),
                (r#"event.data.priority > 2"#, "/urgent"),
            ]),
            Some("/all"),
            Some("/ignored"),
        )
        .unwrap();
        let completed = json!({"type": "todos.task.completed", "data": {"priority": 5}});
        assert_eq!(routes.path_for(&completed).unwrap(), Some("/completed"));
        let urgent = json!({"type": "todos.task.created", "data": {"priority": 5}});
        assert_eq!(routes.path_for(&urgent).unwrap(), Some("/urgent"));
        let other = json!({"type": "todos.task.created", "data": {"priority": 1}});
        assert_eq!(routes.path_for(&other).unwrap(), Some("/all"));
    }

    #[test]
    fn route_is_the_fallback_without_default_and_no_match_is_none() {
        let with_route = Routes::new(&rules(&[("event.type == \"x\"", "/x")]), None, Some("/fallback")).unwrap();
        assert_eq!(with_route.path_for(&json!({"type": "y"})).unwrap(), Some("/fallback"));
        let without = Routes::new(&rules(&[("event.type == \"x\"", "/x")]), None, None).unwrap();
        assert_eq!(without.path_for(&json!({"type": "y"})).unwrap(), None);
        let empty_match =
            Routes::new(&rules(&[("", "/first"), ("event.type == \"y\"", "/never")]), None, None).unwrap();
        assert_eq!(empty_match.path_for(&json!({"type": "y"})).unwrap(), Some("/first"));
    }

    #[test]
    fn evaluation_errors_and_non_booleans_are_errors() {
        let missing = Routes::new(&rules(&[("event.data.x == 1", "/x")]), Some("/d"), None).unwrap();
        assert!(missing.path_for(&json!({"data": "a string"})).is_err());
        let not_bool = Routes::new(&rules(&[("event.type", "/x")]), None, None).unwrap();
        assert!(not_bool.path_for(&json!({"type": "t"})).is_err());
        assert!(Routes::new(&rules(&[("event.type ==", "/x")]), None, None).is_err());
    }

    #[test]
    fn paths_are_cleaned_like_daprd() {
        assert_eq!(app_path("events/todo"), "/events/todo");
        assert_eq!(app_path("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(app_path(""), "/");
    }
}
