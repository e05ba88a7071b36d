//! One sidecar for one app: loads the resources, connects the pub/sub components, serves the
//! HTTP API, waits for the app, subscribes, and shuts down in daprd's order.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{AppChannel, ProgrammaticSubscription};
use crate::delivery::{ActiveSubscription, Deliverer, SubscriptionKind};
use crate::policy::{Backoff, CircuitBreaker, Policy, RetrySchedule};
use crate::pubsub::memory::InMemory;
use crate::pubsub::redis_streams::{RedisSettings, RedisStreams};
use crate::pubsub::{Broker, BrokerError};
use crate::resources::{self, Direction, Resources};
use crate::routing::{RouteError, Routes};
use crate::scopes::{Operation, TopicScopes};

#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub app_id: String,
    pub app_port: Option<u16>,
    pub app_channel_address: String,
    pub http_port: u16,
    pub listen_address: IpAddr,
    pub resources_paths: Vec<PathBuf>,
    pub config_path: Option<PathBuf>,
    /// `DAPR_API_TOKEN`: required from callers of the API.
    pub api_token: Option<String>,
    /// `APP_API_TOKEN`: sent to the app.
    pub app_api_token: Option<String>,
}

impl SidecarConfig {
    /// A sidecar for `app_id` on 127.0.0.1, its app (if any) on `app_port` there too, reading
    /// one resources folder, without configuration file or tokens: what tests and examples
    /// start; set the other fields with struct update syntax.
    pub fn on_loopback(app_id: &str, app_port: Option<u16>, http_port: u16, resources: &Path) -> Self {
        Self {
            app_id: app_id.to_owned(),
            app_port,
            app_channel_address: "127.0.0.1".into(),
            http_port,
            listen_address: IpAddr::from([127, 0, 0, 1]),
            resources_paths: vec![resources.to_path_buf()],
            config_path: None,
            api_token: None,
            app_api_token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Resources(#[from] resources::ResourceError),
    #[error("{}: component {component}: {source}", file.display())]
    Component {
        file: PathBuf,
        component: String,
        #[source]
        source: BrokerError,
    },
    #[error("subscribing to {topic} on {component}: {source}")]
    Subscribe {
        component: String,
        topic: String,
        #[source]
        source: BrokerError,
    },
    #[error("subscription to {topic} on {pubsub}: {source}")]
    Route {
        pubsub: String,
        topic: String,
        #[source]
        source: RouteError,
    },
    #[error("the HTTP API could not listen: {0}")]
    Io(#[from] std::io::Error),
}

/// A loaded pub/sub component with what the API and deliveries need of it.
pub struct Component {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub broker: Broker,
    pub scopes: TopicScopes,
    pub inbound: Policy,
    pub outbound: Policy,
}

pub struct AppConnectionInfo {
    pub port: u16,
    pub channel_address: String,
}

/// Shared by the API handlers and the runtime.
pub struct SidecarState {
    pub app_id: String,
    pub api_token: Option<String>,
    pub components: BTreeMap<String, Arc<Component>>,
    pub outbound_ready: AtomicBool,
    pub ready: AtomicBool,
    pub subscriptions: RwLock<Vec<Arc<ActiveSubscription>>>,
    pub extended: RwLock<BTreeMap<String, String>>,
    pub app_connection: Option<AppConnectionInfo>,
}

pub struct Sidecar {
    config: SidecarConfig,
    resources: Resources,
    state: Arc<SidecarState>,
    listener: TcpListener,
}

impl Sidecar {
    /// Loads and validates every resource (any error stops here, naming file and field),
    /// connects the components and binds the API port.
    pub async fn build(config: SidecarConfig) -> Result<Self, SidecarError> {
        let resources = resources::load(&config.resources_paths, &config.app_id)?;
        if let Some(path) = &config.config_path {
            resources::load_configuration(path)?;
        }
        for skipped in &resources.skipped {
            tracing::warn!(?skipped, "resource not loaded");
        }
        let mut components = BTreeMap::new();
        for component in &resources.components {
            let broker = connect(&component.kind, &component.metadata, &config.app_id).await.map_err(|source| {
                SidecarError::Component { file: component.file.clone(), component: component.name.clone(), source }
            })?;
            let Some(broker) = broker else {
                tracing::warn!(component = %component.name, kind = %component.kind, "component type not supported by the dev sidecar; skipped");
                continue;
            };
            let policy = |direction| {
                policy_from(resources::policy_for_component(&resources.resiliencies, &component.name, direction))
            };
            components.insert(
                component.name.clone(),
                Arc::new(Component {
                    name: component.name.clone(),
                    kind: component.kind.clone(),
                    version: component.version.clone(),
                    broker,
                    scopes: TopicScopes::from_metadata(&component.metadata),
                    inbound: policy(Direction::Inbound),
                    outbound: policy(Direction::Outbound),
                }),
            );
            tracing::info!(component = %component.name, kind = %component.kind, "component loaded");
        }
        let listener = TcpListener::bind(SocketAddr::new(config.listen_address, config.http_port)).await?;
        let state = Arc::new(SidecarState {
            app_id: config.app_id.clone(),
            api_token: config.api_token.clone(),
            components,
            outbound_ready: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            subscriptions: RwLock::default(),
            extended: RwLock::default(),
            app_connection: config
                .app_port
                .map(|port| AppConnectionInfo { port, channel_address: config.app_channel_address.clone() }),
        });
        Ok(Self { config, resources, state, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> Arc<SidecarState> {
        self.state.clone()
    }

    /// Serves until `shutdown`; then stops the subscriptions (reading stops, deliveries in
    /// progress get a grace period, nothing undelivered is acknowledged) and the API.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SidecarError> {
        let addr = self.local_addr();
        let Self { config, resources, state, listener } = self;
        let runtime = Runtime { config, resources, state };
        let api_shutdown = CancellationToken::new();
        let server = tokio::spawn(
            axum::serve(listener, crate::api::router(runtime.state.clone()))
                .with_graceful_shutdown(api_shutdown.clone().cancelled_owned())
                .into_future(),
        );
        runtime.state.outbound_ready.store(true, Ordering::SeqCst);
        tracing::info!(%addr, app_id = %runtime.config.app_id, "dapr HTTP API listening");

        let subscriptions_stop = CancellationToken::new();
        let mut subscription_tasks = Vec::new();
        if let Some(port) = runtime.config.app_port {
            let app = AppChannel::new(
                &runtime.config.app_channel_address,
                port,
                &runtime.config.app_id,
                runtime.config.app_api_token.clone(),
            );
            let waited = tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = app.wait_until_listening() => true,
            };
            if waited {
                app.get_config().await;
                let programmatic = app.get_subscriptions().await;
                subscription_tasks =
                    runtime.start_subscriptions(&app, programmatic, subscriptions_stop.clone()).await?;
            }
        }
        runtime.state.ready.store(true, Ordering::SeqCst);
        shutdown.cancelled().await;

        tracing::info!("shutting down: stopping subscriptions");
        subscriptions_stop.cancel();
        for task in subscription_tasks {
            let _ = task.await;
        }
        api_shutdown.cancel();
        let _ = server.await;
        tracing::info!("sidecar stopped");
        Ok(())
    }
}

/// What the running sidecar needs once the API listener is handed to the server.
struct Runtime {
    config: SidecarConfig,
    resources: Resources,
    state: Arc<SidecarState>,
}

impl Runtime {
    async fn start_subscriptions(
        &self,
        app: &AppChannel,
        programmatic: Vec<ProgrammaticSubscription>,
        stop: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, SidecarError> {
        let merged = merge_subscriptions(&self.resources, programmatic)?;
        let mut deliverers: BTreeMap<String, Arc<Deliverer>> = BTreeMap::new();
        let mut tasks = Vec::new();
        for subscription in merged {
            let Some(component) = self.state.components.get(&subscription.pubsub_name) else {
                tracing::warn!(pubsub = %subscription.pubsub_name, topic = %subscription.topic, "subscription to an unknown pubsub; not started");
                continue;
            };
            if !component.scopes.allows(Operation::Subscribe, &self.config.app_id, &subscription.topic) {
                tracing::warn!(topic = %subscription.topic, "subscription not allowed by the component's topic scopes; not started");
                continue;
            }
            let deliverer = deliverers
                .entry(component.name.clone())
                .or_insert_with(|| {
                    Arc::new(Deliverer {
                        app: app.clone(),
                        broker: component.broker.clone(),
                        inbound: component.inbound.clone(),
                        outbound: component.outbound.clone(),
                    })
                })
                .clone();
            let subscription = Arc::new(subscription);
            let handler = deliverer.handler(subscription.clone());
            let task =
                component.broker.subscribe(&subscription.topic, handler, stop.clone()).await.map_err(|source| {
                    SidecarError::Subscribe {
                        component: component.name.clone(),
                        topic: subscription.topic.clone(),
                        source,
                    }
                })?;
            tracing::info!(pubsub = %subscription.pubsub_name, topic = %subscription.topic, kind = ?subscription.kind, "subscribed");
            self.state.subscriptions.write().expect("subscriptions lock").push(subscription);
            tasks.push(task);
        }
        Ok(tasks)
    }
}

/// Declarative subscriptions (first per pubsub+topic already kept by the loader), then
/// programmatic ones, which replace a declarative one for the same pubsub+topic (§2.2).
fn merge_subscriptions(
    resources: &Resources,
    programmatic: Vec<ProgrammaticSubscription>,
) -> Result<Vec<ActiveSubscription>, SidecarError> {
    let mut merged: Vec<ActiveSubscription> = Vec::new();
    for declared in &resources.subscriptions {
        let rules: Vec<(String, String)> =
            declared.rules.iter().map(|r| (r.match_expr.clone(), r.path.clone())).collect();
        let routes = Routes::new(&rules, declared.default_route.as_deref(), None).map_err(|source| {
            SidecarError::Route { pubsub: declared.pubsub_name.clone(), topic: declared.topic.clone(), source }
        })?;
        merged.push(ActiveSubscription {
            pubsub_name: declared.pubsub_name.clone(),
            topic: declared.topic.clone(),
            metadata: declared.metadata.clone(),
            routes,
            dead_letter_topic: declared.dead_letter_topic.clone(),
            kind: SubscriptionKind::Declarative,
        });
    }
    for item in programmatic {
        let (rules, default) = match &item.routes {
            Some(routes) => (
                routes.rules.iter().map(|r| (r.match_expr.clone(), r.path.clone())).collect::<Vec<_>>(),
                routes.default.clone(),
            ),
            None => (Vec::new(), None),
        };
        let routes = match Routes::new(&rules, default.as_deref(), item.route.as_deref()) {
            Ok(routes) if !routes.is_empty() => routes,
            Ok(_) => {
                tracing::warn!(topic = %item.topic, "programmatic subscription without any route; ignored");
                continue;
            }
            Err(error) => {
                tracing::error!(topic = %item.topic, %error, "programmatic subscription with an invalid rule; ignored");
                continue;
            }
        };
        merged.retain(|s| !(s.pubsub_name == item.pubsubname && s.topic == item.topic));
        merged.push(ActiveSubscription {
            pubsub_name: item.pubsubname,
            topic: item.topic,
            metadata: item.metadata,
            routes,
            dead_letter_topic: item.dead_letter_topic,
            kind: SubscriptionKind::Programmatic,
        });
    }
    Ok(merged)
}

async fn connect(kind: &str, metadata: &BTreeMap<String, String>, app_id: &str) -> Result<Option<Broker>, BrokerError> {
    match kind {
        "pubsub.redis" => {
            let settings = RedisSettings::from_metadata(metadata, app_id)?;
            Ok(Some(Broker::Redis(Box::new(RedisStreams::connect(settings).await?))))
        }
        "pubsub.in-memory" => Ok(Some(Broker::Memory(InMemory::default()))),
        #[cfg(feature = "kafka")]
        "pubsub.kafka" => {
            let settings = crate::pubsub::kafka::KafkaSettings::from_metadata(metadata, app_id)?;
            Ok(Some(Broker::Kafka(Box::new(crate::pubsub::kafka::Kafka::connect(settings)?))))
        }
        #[cfg(not(feature = "kafka"))]
        "pubsub.kafka" => Err(BrokerError::Kafka(
            "this devsidecar was built without Kafka support: cargo build -p devsidecar --features kafka".into(),
        )),
        _ => Ok(None),
    }
}

fn policy_from(resolved: resources::ResolvedPolicy) -> Policy {
    Policy {
        timeout: resolved.timeout,
        retry: resolved.retry.map(|retry| RetrySchedule {
            backoff: match retry.policy {
                resources::RetryKind::Constant => Backoff::Constant(retry.duration),
                resources::RetryKind::Exponential => Backoff::Exponential { max_interval: retry.max_interval },
            },
            max_retries: retry.max_retries,
            matching_http: retry.matching_http,
        }),
        // The trip expression compiled when the Resiliency was loaded, so this cannot fail.
        breaker: resolved.circuit_breaker.and_then(|spec| {
            CircuitBreaker::new(spec.max_requests, spec.interval, spec.timeout, spec.trip.as_deref()).ok().map(Arc::new)
        }),
    }
}
