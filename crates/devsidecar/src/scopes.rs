//! Topic scoping through component metadata (contract §2.5): `publishingScopes`,
//! `subscriptionScopes` (`"app1=t1,t2;app2=t3"`), `allowedTopics` and `protectedTopics`
//! (`"t1,t2"`); names case-insensitive, spaces ignored.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicScopes {
    publishing: HashMap<String, HashSet<String>>,
    subscription: HashMap<String, HashSet<String>>,
    allowed: HashSet<String>,
    protected: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Publish,
    Subscribe,
}

impl TopicScopes {
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Self {
        let get = |name: &str| {
            metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.replace(' ', ""))
                .unwrap_or_default()
        };
        Self {
            publishing: per_app(&get("publishingScopes")),
            subscription: per_app(&get("subscriptionScopes")),
            allowed: list(&get("allowedTopics")),
            protected: list(&get("protectedTopics")),
        }
    }

    /// daprd's rule: outside a non-empty `allowedTopics` nothing is allowed; an app without a
    /// scoped list may use any unprotected topic; otherwise only the topics listed for it.
    pub fn allows(&self, operation: Operation, app_id: &str, topic: &str) -> bool {
        if !self.allowed.is_empty() && !self.allowed.contains(topic) {
            return false;
        }
        let scoped = match operation {
            Operation::Publish => self.publishing.get(app_id),
            Operation::Subscribe => self.subscription.get(app_id),
        };
        match scoped {
            None => !self.protected.contains(topic),
            Some(topics) => topics.contains(topic),
        }
    }
}

fn list(value: &str) -> HashSet<String> {
    value.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

fn per_app(value: &str) -> HashMap<String, HashSet<String>> {
    value
        .split(';')
        .filter_map(|entry| entry.split_once('='))
        .map(|(app, topics)| (app.to_owned(), list(topics)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(pairs: &[(&str, &str)]) -> TopicScopes {
        TopicScopes::from_metadata(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn follows_daprds_rules() {
        let s = scopes(&[
            ("publishingScopes", "todo=todos.task.created, todos.task.deleted;other="),
            ("protectedTopics", "secret"),
        ]);
        assert!(s.allows(Operation::Publish, "todo", "todos.task.created"));
        assert!(!s.allows(Operation::Publish, "todo", "orders"), "scoped apps use their list only");
        assert!(!s.allows(Operation::Publish, "other", "orders"), "an empty list allows nothing");
        assert!(s.allows(Operation::Publish, "stranger", "orders"), "unscoped apps may publish unprotected topics");
        assert!(!s.allows(Operation::Publish, "stranger", "secret"));
        assert!(s.allows(Operation::Subscribe, "todo", "orders"));
        let allowed = scopes(&[("allowedtopics", "a,b")]);
        assert!(allowed.allows(Operation::Subscribe, "x", "a"));
        assert!(!allowed.allows(Operation::Publish, "x", "c"));
    }
}
