//! Dapr resource files (`--resources-path`): `Component`, `Subscription` (v1alpha1 and
//! v2alpha1) and `Resiliency` documents, read the way daprd's disk loader reads them — every
//! `*.yaml`/`*.yml` file of each directory in name order, several documents per file, resources
//! scoped to other app ids left out, the first declarative subscription per pubsub+topic kept.
//!
//! Known kinds are decoded strictly: a malformed document, an unknown field or a missing
//! required metadata field stops the sidecar with an error naming the file and the field, so a
//! typo is found here rather than silently ignored (as daprd's lenient decoding would).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value as Yaml;

use crate::duration::parse_go_duration;
use crate::policy::CircuitBreaker;

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{}: {detail}", file.display())]
    Read { file: PathBuf, detail: String },
    #[error("{}: invalid YAML: {detail}", file.display())]
    Yaml { file: PathBuf, detail: String },
    #[error("{}: {kind} {name:?}: {field}: {detail}", file.display())]
    Field { file: PathBuf, kind: String, name: String, field: String, detail: String },
}

/// A component as loaded: metadata values resolved (secrets, env refs, template tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredRule {
    pub match_expr: String,
    pub path: String,
}

/// A declarative subscription, v1alpha1 converted to v2alpha1 (`route` → `routes.default`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSubscription {
    pub name: String,
    pub pubsub_name: String,
    pub topic: String,
    pub metadata: BTreeMap<String, String>,
    pub rules: Vec<DeclaredRule>,
    pub default_route: Option<String>,
    pub dead_letter_topic: Option<String>,
    pub file: PathBuf,
}

/// A resource that was read but not loaded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub file: PathBuf,
    pub kind: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Resources {
    pub components: Vec<ComponentSpec>,
    pub subscriptions: Vec<DeclaredSubscription>,
    pub resiliencies: Vec<ResiliencySpec>,
    pub skipped: Vec<Skipped>,
}

// ---- documents as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ObjectMeta {
    name: String,
    #[serde(flatten)]
    _rest: BTreeMap<String, Yaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ComponentDoc {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    spec: ComponentSpecDoc,
    #[serde(default)]
    auth: Option<AuthDoc>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ComponentSpecDoc {
    #[serde(rename = "type")]
    kind: String,
    version: String,
    #[serde(default)]
    metadata: Vec<NameValue>,
    #[serde(default)]
    ignore_errors: bool,
    #[serde(default)]
    init_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AuthDoc {
    secret_store: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NameValue {
    name: String,
    #[serde(default)]
    value: Option<Yaml>,
    #[serde(default)]
    secret_key_ref: Option<SecretKeyRef>,
    #[serde(default)]
    env_ref: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyRef {
    name: String,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubscriptionDoc {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    spec: SubscriptionSpecDoc,
    #[serde(default)]
    scopes: Vec<String>,
}

/// The union of v1alpha1 (`route`) and v2alpha1 (`routes`); which one a document may use is
/// checked against its apiVersion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubscriptionSpecDoc {
    pubsubname: String,
    topic: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    routes: Option<RoutesDoc>,
    #[serde(default)]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    bulk_subscribe: Option<BulkSubscribeDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesDoc {
    #[serde(default)]
    rules: Vec<RuleDoc>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    #[serde(default, rename = "match")]
    match_expr: String,
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkSubscribeDoc {
    enabled: bool,
    #[serde(default, rename = "maxMessagesCount")]
    _max_messages_count: Option<i64>,
    #[serde(default, rename = "maxAwaitDurationMs")]
    _max_await_duration_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResiliencyDoc {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    spec: ResiliencySpecDoc,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResiliencySpecDoc {
    #[serde(default)]
    policies: PoliciesDoc,
    #[serde(default)]
    targets: TargetsDoc,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoliciesDoc {
    #[serde(default)]
    timeouts: BTreeMap<String, String>,
    #[serde(default)]
    retries: BTreeMap<String, RetryDoc>,
    #[serde(default)]
    circuit_breakers: BTreeMap<String, CircuitBreakerDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RetryDoc {
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    max_interval: Option<String>,
    #[serde(default)]
    max_retries: Option<i64>,
    #[serde(default)]
    matching: Option<MatchingDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MatchingDoc {
    #[serde(default)]
    http_status_codes: Option<String>,
    #[serde(default, rename = "gRPCStatusCodes")]
    grpc_status_codes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CircuitBreakerDoc {
    #[serde(default)]
    max_requests: Option<i64>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    trip: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsDoc {
    #[serde(default)]
    apps: BTreeMap<String, Yaml>,
    #[serde(default)]
    actors: BTreeMap<String, Yaml>,
    #[serde(default)]
    components: BTreeMap<String, ComponentTargetDoc>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentTargetDoc {
    #[serde(default)]
    inbound: Option<PolicyRefs>,
    #[serde(default)]
    outbound: Option<PolicyRefs>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRefs {
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retry: Option<String>,
    #[serde(default)]
    circuit_breaker: Option<String>,
}

// ---- resiliency, validated ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    Constant,
    Exponential,
}

/// A retry policy with daprd's defaults applied (contract §4.2).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySpec {
    pub policy: RetryKind,
    pub duration: Duration,
    pub max_interval: Duration,
    pub max_retries: i64,
    pub matching_http: Vec<(u16, u16)>,
}

/// A circuit breaker policy; what it leaves out gets gobreaker's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSpec {
    pub max_requests: Option<u32>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub trip: Option<String>,
}

/// One Resiliency document, durations parsed, ranges checked, trip expressions compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ResiliencySpec {
    pub name: String,
    pub timeouts: BTreeMap<String, Duration>,
    pub retries: BTreeMap<String, RetrySpec>,
    pub circuit_breakers: BTreeMap<String, BreakerSpec>,
    components: BTreeMap<String, (Option<PolicyRefs>, Option<PolicyRefs>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// What applies to one component in one direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedPolicy {
    pub timeout: Option<Duration>,
    pub retry: Option<RetrySpec>,
    pub circuit_breaker: Option<BreakerSpec>,
}

/// The policy daprd applies to `component` in `direction`: its `targets.components` entry when
/// one exists in any loaded Resiliency (a listed component with no block for this direction
/// gets nothing), otherwise the reserved default policies, most specific name first.
pub fn policy_for_component(resiliencies: &[ResiliencySpec], component: &str, direction: Direction) -> ResolvedPolicy {
    let target = resiliencies.iter().find_map(|r| r.components.get(component));
    let retry_named = |name: &str| resiliencies.iter().find_map(|r| r.retries.get(name)).cloned();
    let timeout_named = |name: &str| resiliencies.iter().find_map(|r| r.timeouts.get(name)).copied();
    let breaker_named = |name: &str| resiliencies.iter().find_map(|r| r.circuit_breakers.get(name)).cloned();
    if let Some((inbound, outbound)) = target {
        let refs = match direction {
            Direction::Inbound => inbound,
            Direction::Outbound => outbound,
        };
        let Some(refs) = refs else { return ResolvedPolicy::default() };
        let timeout = refs.timeout.as_deref().and_then(&timeout_named);
        let retry = refs.retry.as_deref().and_then(&retry_named);
        let circuit_breaker = refs.circuit_breaker.as_deref().and_then(&breaker_named);
        for (kind, name, found) in [
            ("timeout", &refs.timeout, timeout.is_some()),
            ("retry", &refs.retry, retry.is_some()),
            ("circuit breaker", &refs.circuit_breaker, circuit_breaker.is_some()),
        ] {
            if let (Some(name), false) = (name, found) {
                tracing::warn!(component, policy = %name, "resiliency target names an undefined {kind} policy");
            }
        }
        return ResolvedPolicy { timeout, retry, circuit_breaker };
    }
    let way = match direction {
        Direction::Inbound => "Inbound",
        Direction::Outbound => "Outbound",
    };
    let defaults = |kind: &str| {
        [
            format!("DefaultPubsubComponent{way}{kind}Policy"),
            format!("DefaultComponent{way}{kind}Policy"),
            format!("DefaultComponent{kind}Policy"),
            format!("Default{kind}Policy"),
        ]
    };
    ResolvedPolicy {
        timeout: defaults("Timeout").iter().find_map(|name| timeout_named(name)),
        retry: defaults("Retry").iter().find_map(|name| retry_named(name)),
        circuit_breaker: defaults("CircuitBreaker").iter().find_map(|name| breaker_named(name)),
    }
}

// ---- loading --------------------------------------------------------------------------------

/// One YAML document of a known kind, not yet interpreted.
struct Document {
    file: PathBuf,
    kind: String,
    api_version: String,
    value: Yaml,
}

/// Reads every resource under `paths` for `app_id`.
pub fn load(paths: &[PathBuf], app_id: &str) -> Result<Resources, ResourceError> {
    let mut documents = Vec::new();
    let mut resources = Resources::default();
    for path in paths {
        for file in resource_files(path)? {
            read_documents(&file, &mut documents, &mut resources.skipped)?;
        }
    }

    let mut components = Vec::new();
    for document in documents.iter().filter(|d| d.kind == "Component") {
        let doc: ComponentDoc = decode(document)?;
        if !in_scope(&doc.scopes, app_id) {
            resources.skipped.push(skip(document, &doc.metadata.name, &format!("scoped to {:?}", doc.scopes)));
            continue;
        }
        components.push((document, doc));
    }
    let secret_stores = secret_stores(&components, app_id)?;
    for (document, doc) in components {
        if doc.spec.kind.starts_with("secretstores.local.") {
            continue;
        }
        let name = doc.metadata.name.clone();
        let metadata = resolve_metadata(document, &doc, &secret_stores, app_id)?;
        require_metadata(document, &name, &doc.spec.kind, &metadata)?;
        if doc.spec.ignore_errors || doc.spec.init_timeout.is_some() {
            tracing::debug!(component = %name, "ignoreErrors and initTimeout are accepted and have no effect here");
        }
        resources.components.push(ComponentSpec {
            name,
            kind: doc.spec.kind,
            version: doc.spec.version,
            metadata,
            file: document.file.clone(),
        });
    }

    for document in documents.iter().filter(|d| d.kind == "Subscription") {
        let doc: SubscriptionDoc = decode(document)?;
        let name = doc.metadata.name.clone();
        if !in_scope(&doc.scopes, app_id) {
            resources.skipped.push(skip(document, &name, &format!("scoped to {:?}", doc.scopes)));
            continue;
        }
        let subscription = declared_subscription(document, doc)?;
        let duplicate = resources
            .subscriptions
            .iter()
            .any(|s| s.pubsub_name == subscription.pubsub_name && s.topic == subscription.topic);
        if duplicate {
            // daprd keeps the first declarative subscription per pubsub+topic (contract §2.2).
            resources.skipped.push(skip(
                document,
                &name,
                "another subscription to the same pubsub and topic came first",
            ));
            continue;
        }
        resources.subscriptions.push(subscription);
    }

    for document in documents.iter().filter(|d| d.kind == "Resiliency") {
        let doc: ResiliencyDoc = decode(document)?;
        if !in_scope(&doc.scopes, app_id) {
            resources.skipped.push(skip(document, &doc.metadata.name, &format!("scoped to {:?}", doc.scopes)));
            continue;
        }
        resources.resiliencies.push(resiliency(document, doc)?);
    }
    Ok(resources)
}

/// Checks a `--config` file: YAML, a `Configuration` document. Its settings (tracing, features)
/// do not change pub/sub behaviour here, but a wrong file should not pass unnoticed.
pub fn load_configuration(path: &Path) -> Result<(), ResourceError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ResourceError::Read { file: path.into(), detail: e.to_string() })?;
    let value: Yaml =
        serde_yaml_ng::from_str(&text).map_err(|e| ResourceError::Yaml { file: path.into(), detail: e.to_string() })?;
    let kind = value.get("kind").and_then(Yaml::as_str).unwrap_or("");
    if kind != "Configuration" {
        return Err(ResourceError::Field {
            file: path.into(),
            kind: kind.to_owned(),
            name: String::new(),
            field: "kind".into(),
            detail: "a --config file must be a Configuration".into(),
        });
    }
    Ok(())
}

fn resource_files(path: &Path) -> Result<Vec<PathBuf>, ResourceError> {
    let error = |e: std::io::Error| ResourceError::Read { file: path.to_path_buf(), detail: e.to_string() };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

fn read_documents(file: &Path, documents: &mut Vec<Document>, skipped: &mut Vec<Skipped>) -> Result<(), ResourceError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| ResourceError::Read { file: file.into(), detail: e.to_string() })?;
    for deserializer in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Yaml::deserialize(deserializer)
            .map_err(|e| ResourceError::Yaml { file: file.into(), detail: e.to_string() })?;
        if value.is_null() {
            continue;
        }
        let text_of = |key: &str| value.get(key).and_then(Yaml::as_str).unwrap_or("").to_owned();
        let (kind, api_version) = (text_of("kind"), text_of("apiVersion"));
        let name = value.get("metadata").and_then(|m| m.get("name")).and_then(Yaml::as_str).unwrap_or("").to_owned();
        let expected_versions: &[&str] = match kind.as_str() {
            "Component" | "Resiliency" => &["dapr.io/v1alpha1"],
            "Subscription" => &["dapr.io/v1alpha1", "dapr.io/v2alpha1"],
            _ => {
                skipped.push(Skipped {
                    file: file.into(),
                    kind,
                    name,
                    reason: "not a kind the dev sidecar loads".into(),
                });
                continue;
            }
        };
        if !expected_versions.contains(&api_version.as_str()) {
            return Err(ResourceError::Field {
                file: file.into(),
                kind,
                name,
                field: "apiVersion".into(),
                detail: format!("{api_version:?} is not one of {expected_versions:?}"),
            });
        }
        documents.push(Document { file: file.into(), kind, api_version, value });
    }
    Ok(())
}

/// Strict decoding with the path of the offending field in the error.
fn decode<T: DeserializeOwned>(document: &Document) -> Result<T, ResourceError> {
    serde_path_to_error::deserialize(document.value.clone()).map_err(|error| {
        let field = error.path().to_string();
        field_error(
            document,
            &name_of(document),
            if field == "." { "(document)" } else { &field },
            error.inner().to_string(),
        )
    })
}

fn name_of(document: &Document) -> String {
    document.value.get("metadata").and_then(|m| m.get("name")).and_then(Yaml::as_str).unwrap_or("").to_owned()
}

fn field_error(document: &Document, name: &str, field: &str, detail: impl Into<String>) -> ResourceError {
    ResourceError::Field {
        file: document.file.clone(),
        kind: document.kind.clone(),
        name: name.to_owned(),
        field: field.to_owned(),
        detail: detail.into(),
    }
}

fn skip(document: &Document, name: &str, reason: &str) -> Skipped {
    Skipped {
        file: document.file.clone(),
        kind: document.kind.clone(),
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Empty scopes mean every app (contract §10.2).
fn in_scope(scopes: &[String], app_id: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| s == app_id)
}

// ---- component metadata ---------------------------------------------------------------------

/// The local secret stores daprd offers in self-hosted mode, by component name.
enum SecretStore {
    /// `secretstores.local.env`: a secret is the environment variable of that name.
    Env,
    /// `secretstores.local.file`: a JSON file, nested keys joined with `nestedSeparator`.
    File { secrets: HashMap<String, serde_json::Value>, separator: String, multi_valued: bool },
}

fn secret_stores(
    components: &[(&Document, ComponentDoc)],
    app_id: &str,
) -> Result<HashMap<String, SecretStore>, ResourceError> {
    let mut stores = HashMap::new();
    for (document, doc) in components {
        let name = &doc.metadata.name;
        let store = match doc.spec.kind.as_str() {
            "secretstores.local.env" => SecretStore::Env,
            "secretstores.local.file" => {
                let metadata = resolve_metadata(document, doc, &HashMap::new(), app_id)?;
                let get = |key: &str| crate::pubsub::metadata_value(&metadata, key).map(str::to_owned);
                let path = get("secretsFile")
                    .ok_or_else(|| field_error(document, name, "spec.metadata.secretsFile", "is required"))?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| field_error(document, name, "spec.metadata.secretsFile", format!("{path}: {e}")))?;
                let secrets = serde_json::from_str(&text)
                    .map_err(|e| field_error(document, name, "spec.metadata.secretsFile", format!("{path}: {e}")))?;
                SecretStore::File {
                    secrets,
                    separator: get("nestedSeparator").unwrap_or_else(|| ":".into()),
                    multi_valued: get("multiValued")
                        .as_deref()
                        .and_then(crate::duration::parse_go_bool)
                        .unwrap_or(false),
                }
            }
            _ => continue,
        };
        stores.insert(name.clone(), store);
    }
    Ok(stores)
}

impl SecretStore {
    /// The value of `key` in secret `name` (daprd: `key` defaults to `name`).
    fn get(&self, name: &str, key: &str) -> Option<String> {
        match self {
            SecretStore::Env => (key == name).then(|| std::env::var(name).ok()).flatten(),
            SecretStore::File { secrets, separator, multi_valued } => {
                if *multi_valued {
                    let secret = secrets.get(name)?;
                    flatten(secret, separator).remove(key)
                } else {
                    let all = flatten(&serde_json::Value::Object(secrets.clone().into_iter().collect()), separator);
                    (key == name).then(|| all.get(name).cloned()).flatten()
                }
            }
        }
    }
}

fn flatten(value: &serde_json::Value, separator: &str) -> HashMap<String, String> {
    fn walk(prefix: &str, value: &serde_json::Value, separator: &str, out: &mut HashMap<String, String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}{separator}{key}") };
                    walk(&path, inner, separator, out);
                }
            }
            serde_json::Value::String(text) => {
                out.insert(prefix.to_owned(), text.clone());
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = HashMap::new();
    walk("", value, separator, &mut out);
    out
}

/// Metadata values as daprd hands them to the component: `value` as text, else `secretKeyRef`
/// from the component's `auth.secretStore`, else `envRef`; then the template tokens.
fn resolve_metadata(
    document: &Document,
    doc: &ComponentDoc,
    stores: &HashMap<String, SecretStore>,
    app_id: &str,
) -> Result<BTreeMap<String, String>, ResourceError> {
    let name = &doc.metadata.name;
    let mut metadata = BTreeMap::new();
    for (index, item) in doc.spec.metadata.iter().enumerate() {
        let field = |suffix: &str| format!("spec.metadata[{index}]{suffix}");
        let value = if let Some(reference) = &item.secret_key_ref {
            let store_name = doc.auth.as_ref().map(|a| a.secret_store.as_str()).ok_or_else(|| {
                field_error(
                    document,
                    name,
                    &field(".secretKeyRef"),
                    "needs auth.secretStore naming a secret store component",
                )
            })?;
            let store = stores.get(store_name).ok_or_else(|| {
                field_error(
                    document,
                    name,
                    "auth.secretStore",
                    format!(
                        "{store_name:?} is not a loaded secretstores.local.env or secretstores.local.file component"
                    ),
                )
            })?;
            let key = reference.key.as_deref().unwrap_or(&reference.name);
            store.get(&reference.name, key).ok_or_else(|| {
                field_error(
                    document,
                    name,
                    &field(".secretKeyRef"),
                    format!("secret {:?} key {key:?} not found in {store_name}", reference.name),
                )
            })?
        } else if let Some(variable) = &item.env_ref {
            if variable.to_ascii_uppercase().starts_with("DAPR_") || variable == "APP_API_TOKEN" {
                return Err(field_error(
                    document,
                    name,
                    &field(".envRef"),
                    format!("{variable} may not be referenced"),
                ));
            }
            std::env::var(variable).unwrap_or_default()
        } else {
            match &item.value {
                None | Some(Yaml::Null) => String::new(),
                Some(Yaml::String(text)) => text.clone(),
                Some(Yaml::Bool(flag)) => flag.to_string(),
                Some(Yaml::Number(number)) => number.to_string(),
                Some(other) => serde_json::to_string(other).unwrap_or_default(),
            }
        };
        let value =
            expand_tokens(&value, app_id).map_err(|detail| field_error(document, name, &field(".value"), detail))?;
        metadata.insert(item.name.clone(), value);
    }
    Ok(metadata)
}

/// `{uuid}` (a new one per occurrence), `{podName}`, `{namespace}` and `{appID}` (contract
/// §5.2), as daprd replaces them in every metadata value.
fn expand_tokens(value: &str, app_id: &str) -> Result<String, String> {
    let mut value = value.to_owned();
    while value.contains("{uuid}") {
        value = value.replacen("{uuid}", &uuid::Uuid::new_v4().to_string(), 1);
    }
    if value.contains("{podName}") {
        let pod = std::env::var("POD_NAME")
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or("refers to {podName} but POD_NAME is not set")?;
        value = value.replace("{podName}", &pod);
    }
    let namespace = std::env::var("NAMESPACE").unwrap_or_default();
    Ok(value.replace("{namespace}", &format!("{namespace}.{app_id}")).replace("{appID}", app_id))
}

/// Metadata a component cannot start without (its `metadata.yaml` marks them required).
fn require_metadata(
    document: &Document,
    name: &str,
    kind: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ResourceError> {
    let required: &[&str] = match kind {
        "pubsub.redis" => &["redisHost"],
        "pubsub.kafka" => &["brokers", "authType"],
        _ => &[],
    };
    for field in required {
        if crate::pubsub::metadata_value(metadata, field).is_none() {
            return Err(field_error(
                document,
                name,
                &format!("spec.metadata.{field}"),
                format!("is required by {kind}"),
            ));
        }
    }
    Ok(())
}

// ---- subscriptions and resiliency -----------------------------------------------------------

fn declared_subscription(document: &Document, doc: SubscriptionDoc) -> Result<DeclaredSubscription, ResourceError> {
    let name = doc.metadata.name.clone();
    let spec = doc.spec;
    let v1 = document.api_version == "dapr.io/v1alpha1";
    if v1 && spec.routes.is_some() {
        return Err(field_error(document, &name, "spec.routes", "is a v2alpha1 field; v1alpha1 uses spec.route"));
    }
    if !v1 && spec.route.is_some() {
        return Err(field_error(
            document,
            &name,
            "spec.route",
            "is a v1alpha1 field; v2alpha1 uses spec.routes.default",
        ));
    }
    if spec.bulk_subscribe.as_ref().is_some_and(|b| b.enabled) {
        tracing::warn!(subscription = %name, "bulkSubscribe is not supported by the dev sidecar; messages are delivered one by one");
    }
    let (rules, default_route) = match spec.routes {
        Some(routes) => (
            routes.rules.into_iter().map(|r| DeclaredRule { match_expr: r.match_expr, path: r.path }).collect(),
            routes.default,
        ),
        None => (Vec::new(), spec.route),
    };
    let default_route = default_route.filter(|r| !r.is_empty());
    if rules.is_empty() && default_route.is_none() {
        return Err(field_error(
            document,
            &name,
            if v1 { "spec.route" } else { "spec.routes" },
            "no route: the subscription could deliver nothing",
        ));
    }
    for (field, value) in [("spec.pubsubname", &spec.pubsubname), ("spec.topic", &spec.topic)] {
        if value.is_empty() {
            return Err(field_error(document, &name, field, "must not be empty"));
        }
    }
    Ok(DeclaredSubscription {
        name,
        pubsub_name: spec.pubsubname,
        topic: spec.topic,
        metadata: spec.metadata,
        rules,
        default_route,
        dead_letter_topic: spec.dead_letter_topic.filter(|t| !t.is_empty()),
        file: document.file.clone(),
    })
}

fn resiliency(document: &Document, doc: ResiliencyDoc) -> Result<ResiliencySpec, ResourceError> {
    let name = doc.metadata.name.clone();
    let duration = |field: String, value: &str| {
        parse_go_duration(value).map_err(|e| field_error(document, &name, &field, e.to_string()))
    };
    let mut timeouts = BTreeMap::new();
    for (policy, value) in &doc.spec.policies.timeouts {
        timeouts.insert(policy.clone(), duration(format!("spec.policies.timeouts.{policy}"), value)?);
    }
    let mut retries = BTreeMap::new();
    for (policy, retry) in &doc.spec.policies.retries {
        let field = |suffix: &str| format!("spec.policies.retries.{policy}.{suffix}");
        let kind = match retry.policy.as_deref().unwrap_or("constant") {
            "constant" => RetryKind::Constant,
            "exponential" => RetryKind::Exponential,
            other => {
                return Err(field_error(
                    document,
                    &name,
                    &field("policy"),
                    format!("{other:?} is not constant or exponential"),
                ));
            }
        };
        let matching_http = match retry.matching.as_ref().and_then(|m| m.http_status_codes.as_deref()) {
            None => Vec::new(),
            Some(codes) => parse_status_ranges(codes)
                .map_err(|detail| field_error(document, &name, &field("matching.httpStatusCodes"), detail))?,
        };
        if retry.matching.as_ref().is_some_and(|m| m.grpc_status_codes.is_some()) {
            tracing::debug!(policy = %policy, "gRPCStatusCodes do not apply to HTTP deliveries");
        }
        retries.insert(
            policy.clone(),
            RetrySpec {
                policy: kind,
                duration: retry
                    .duration
                    .as_deref()
                    .map(|d| duration(field("duration"), d))
                    .transpose()?
                    .unwrap_or(Duration::from_secs(5)),
                max_interval: retry
                    .max_interval
                    .as_deref()
                    .map(|d| duration(field("maxInterval"), d))
                    .transpose()?
                    .unwrap_or(Duration::from_secs(60)),
                max_retries: retry.max_retries.unwrap_or(-1),
                matching_http,
            },
        );
    }
    let mut circuit_breakers = BTreeMap::new();
    for (policy, breaker) in &doc.spec.policies.circuit_breakers {
        let field = |suffix: &str| format!("spec.policies.circuitBreakers.{policy}.{suffix}");
        let spec = BreakerSpec {
            max_requests: breaker
                .max_requests
                .map(|n| {
                    u32::try_from(n).map_err(|_| {
                        field_error(document, &name, &field("maxRequests"), format!("{n} is out of range"))
                    })
                })
                .transpose()?,
            interval: breaker.interval.as_deref().map(|d| duration(field("interval"), d)).transpose()?,
            timeout: breaker.timeout.as_deref().map(|d| duration(field("timeout"), d)).transpose()?,
            trip: breaker.trip.clone(),
        };
        CircuitBreaker::new(spec.max_requests, spec.interval, spec.timeout, spec.trip.as_deref())
            .map_err(|detail| field_error(document, &name, &field("trip"), detail))?;
        circuit_breakers.insert(policy.clone(), spec);
    }
    if !doc.spec.targets.apps.is_empty() || !doc.spec.targets.actors.is_empty() {
        tracing::debug!(resiliency = %name, "app and actor targets do not apply to pub/sub");
    }
    let components =
        doc.spec.targets.components.into_iter().map(|(component, t)| (component, (t.inbound, t.outbound))).collect();
    Ok(ResiliencySpec { name, timeouts, retries, circuit_breakers, components })
}

/// `"500-599,429"`: codes and inclusive ranges of HTTP statuses (100–599).
fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let parse = |code: &str| {
        code.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("{code:?} is not an HTTP status code"))
    };
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (parse(low)?, parse(high)?);
                if low > high { Err(format!("{part:?}: the range is reversed")) } else { Ok((low, high)) }
            }
            None => parse(part).map(|code| (code, code)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("devsidecar-resources-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        fn write(&self, name: &str, text: &str) -> &Self {
            std::fs::write(self.0.join(name), text).unwrap();
            self
        }
        fn load(&self, app_id: &str) -> Result<Resources, ResourceError> {
            load(std::slice::from_ref(&self.0), app_id)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const REDIS: &str = "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: consumerID
    value: \"{appID}-group\"
  - name: queueDepth
    value: 50
";

    #[test]
    fn loads_components_subscriptions_and_skips_other_kinds() {
        let dir = Dir::new();
        dir.write("pubsub.yaml", REDIS).write(
            "subs.yml",
            "apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: a}
spec: {pubsubname: pubsub, topic: t1, route: /a, deadLetterTopic: dlq}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: b}
spec:
  pubsubname: pubsub
  topic: t1
  routes: {default: /b}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: c}
spec:
  pubsubname: pubsub
  topic: t2
  routes:
    rules: [{match: 'event.type == \"x\"', path: /x}]
scopes: [other-app]
---
apiVersion: v1
kind: Secret
metadata: {name: s}
",
        );
        dir.write("notes.txt", "not yaml: [");
        let resources = dir.load("todo").unwrap();
        let component = &resources.components[0];
        assert_eq!((component.name.as_str(), component.kind.as_str()), ("pubsub", "pubsub.redis"));
        assert_eq!(component.metadata["consumerID"], "todo-group", "{{appID}} is expanded");
        assert_eq!(component.metadata["queueDepth"], "50", "numbers become text");
        assert_eq!(resources.subscriptions.len(), 1, "the first per pubsub+topic wins; c is scoped away");
        let a = &resources.subscriptions[0];
        assert_eq!(
            (a.name.as_str(), a.default_route.as_deref(), a.dead_letter_topic.as_deref()),
            ("a", Some("/a"), Some("dlq"))
        );
        let skipped: Vec<&str> = resources.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["s", "b", "c"]);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = Dir::new();
        dir.write(
            "bad.yaml",
            &REDIS.replace("  - name: queueDepth\n    value: 50", "  - name: queueDepth\n    valu: 50"),
        );
        let error = dir.load("todo").unwrap_err().to_string();
        assert!(error.contains("bad.yaml") && error.contains("spec.metadata[2]") && error.contains("valu"), "{error}");

        let dir = Dir::new();
        dir.write("missing.yaml", &REDIS.replace("redisHost", "redisHots"));
        let error = dir.load("todo").unwrap_err().to_string();
        assert!(error.contains("missing.yaml") && error.contains("spec.metadata.redisHost"), "{error}");

        let dir = Dir::new();
        dir.write("broken.yaml", "kind: Component\n  metadata: [");
        let error = dir.load("todo").unwrap_err().to_string();
        assert!(error.contains("broken.yaml") && error.contains("invalid YAML"), "{error}");

        let dir = Dir::new();
        dir.write("spec.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: p, topic: t, route: /r, deadLettrTopic: d}\n");
        let error = dir.load("todo").unwrap_err().to_string();
        assert!(error.contains("spec.yaml") && error.contains("deadLettrTopic"), "{error}");

        let dir = Dir::new();
        dir.write("res.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n  policies:\n    timeouts: {t: 5 seconds}\n  targets: {}\n");
        let error = dir.load("todo").unwrap_err().to_string();
        assert!(error.contains("res.yaml") && error.contains("spec.policies.timeouts.t"), "{error}");
    }

    #[test]
    fn secrets_and_env_refs_resolve_locally() {
        let dir = Dir::new();
        std::fs::write(dir.0.join("secrets.json"), r#"{"redis": {"password": "from-file"}}"#).unwrap();
        let variable = format!("DEVSIDECAR_TEST_{}", uuid::Uuid::new_v4().simple());
        // SAFETY: the variable name is unique to this test, so no other thread reads or writes it.
        unsafe { std::env::set_var(&variable, "from-env") };
        dir.write(
            "stores.yaml",
            &format!(
                "apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: files}}
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - {{name: secretsFile, value: {}}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: pubsub}}
auth: {{secretStore: files}}
spec:
  type: pubsub.redis
  version: v1
  metadata:
  - {{name: redisHost, value: 'localhost:6379'}}
  - {{name: redisPassword, secretKeyRef: {{name: 'redis:password'}}}}
  - {{name: redisUsername, envRef: {variable}}}
",
                dir.0.join("secrets.json").display()
            ),
        );
        let resources = dir.load("todo").unwrap();
        assert_eq!(resources.components.len(), 1, "secret stores are used, not exposed as pub/sub");
        assert_eq!(resources.components[0].metadata["redisPassword"], "from-file");
        assert_eq!(resources.components[0].metadata["redisUsername"], "from-env");

        let dir = Dir::new();
        dir.write("pubsub.yaml", &format!("{REDIS}  - name: redisPassword\n    envRef: DAPR_API_TOKEN\n"));
        assert!(dir.load("todo").unwrap_err().to_string().contains("may not be referenced"));
    }

    #[test]
    fn resiliency_targets_and_defaults_resolve_like_daprd() {
        let dir = Dir::new();
        dir.write(
            "resiliency.yaml",
            "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: r}
spec:
  policies:
    timeouts: {delivery: 10s, general: 3s}
    retries:
      deliveryRetry: {policy: exponential, maxInterval: 10s, maxRetries: 5, matching: {httpStatusCodes: '500-599,429'}}
      DefaultRetryPolicy: {policy: constant, duration: 1s, maxRetries: 3}
      DefaultComponentOutboundRetryPolicy: {duration: 2s}
  targets:
    components:
      pubsub:
        inbound: {timeout: delivery, retry: deliveryRetry}
",
        );
        let resources = dir.load("todo").unwrap();
        let inbound = policy_for_component(&resources.resiliencies, "pubsub", Direction::Inbound);
        assert_eq!(inbound.timeout, Some(Duration::from_secs(10)));
        let retry = inbound.retry.unwrap();
        assert_eq!(
            (retry.policy, retry.max_retries, retry.max_interval),
            (RetryKind::Exponential, 5, Duration::from_secs(10))
        );
        assert_eq!(retry.matching_http, [(500, 599), (429, 429)]);
        assert_eq!(
            policy_for_component(&resources.resiliencies, "pubsub", Direction::Outbound),
            ResolvedPolicy::default(),
            "a listed component gets no defaults for the direction it leaves out"
        );
        let other_out = policy_for_component(&resources.resiliencies, "other", Direction::Outbound).retry.unwrap();
        assert_eq!(
            (other_out.duration, other_out.max_retries),
            (Duration::from_secs(2), -1),
            "most specific default first"
        );
        let other_in = policy_for_component(&resources.resiliencies, "other", Direction::Inbound).retry.unwrap();
        assert_eq!((other_in.duration, other_in.max_retries), (Duration::from_secs(1), 3));
        assert_eq!(parse_status_ranges("600"), Err("\"600\" is not an HTTP status code".into()));

        let dir = Dir::new();
        dir.write("cb.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n  policies:\n    circuitBreakers:\n      pubsubCB: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures >}\n  targets: {}\n");
        let error = dir.load("todo").unwrap_err().to_string();
        assert!(error.contains("spec.policies.circuitBreakers.pubsubCB.trip"), "{error}");
    }
}
