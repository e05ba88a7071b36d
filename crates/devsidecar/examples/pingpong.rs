//! A minimal Dapr app for trying a sidecar (this one or daprd) with a run file: it subscribes
//! to a topic, prints what arrives, optionally answers on another topic, and optionally
//! publishes one message at start-up. Two copies exchange a message:
//!
//! ```yaml
//! version: 1
//! common: { resourcesPaths: [./components] }
//! apps:
//!   - appID: ping
//!     appDirPath: .
//!     appPort: 7001
//!     command: ["./target/debug/examples/pingpong"]
//!     env: { SUBSCRIBE_TOPIC: pong, START_TOPIC: ping, START_TEXT: hello }
//!   - appID: pong
//!     appDirPath: .
//!     appPort: 7002
//!     command: ["./target/debug/examples/pingpong"]
//!     env: { SUBSCRIBE_TOPIC: ping, REPLY_TOPIC: pong }
//! ```
//!
//! Environment: `APP_PORT` and `DAPR_HTTP_PORT` (set by `dapr run`), `SUBSCRIBE_TOPIC`,
//! `REPLY_TOPIC`, `START_TOPIC` + `START_TEXT`, `PUBSUB_NAME` (default `pubsub`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone)]
struct App {
    http: reqwest::Client,
    dapr: String,
    pubsub: String,
    subscribe: Option<String>,
    reply: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = env("APP_PORT").unwrap_or_else(|| "7001".into()).parse()?;
    let app = App {
        http: reqwest::Client::new(),
        dapr: format!("http://127.0.0.1:{}", env("DAPR_HTTP_PORT").unwrap_or_else(|| "3500".into())),
        pubsub: env("PUBSUB_NAME").unwrap_or_else(|| "pubsub".into()),
        subscribe: env("SUBSCRIBE_TOPIC"),
        reply: env("REPLY_TOPIC"),
    };
    let router = axum::Router::new()
        .route("/dapr/subscribe", get(subscriptions))
        .route("/in", post(receive))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {port}");
    if let (Some(topic), Some(text)) = (env("START_TOPIC"), env("START_TEXT")) {
        tokio::spawn(async move {
            wait_for_outbound(&app).await;
            publish(&app, &topic, &text).await;
        });
    }
    axum::serve(listener, router).with_graceful_shutdown(terminated()).await?;
    println!("stopped");
    Ok(())
}

async fn subscriptions(State(app): State<App>) -> Json<Value> {
    let list: Vec<Value> =
        app.subscribe.iter().map(|topic| json!({"pubsubname": app.pubsub, "topic": topic, "route": "/in"})).collect();
    Json(Value::Array(list))
}

async fn receive(State(app): State<App>, Json(event): Json<Value>) -> Json<Value> {
    let text = event["data"]["text"].as_str().unwrap_or_default().to_owned();
    println!("received {text:?} on {}", event["topic"].as_str().unwrap_or_default());
    if let Some(topic) = &app.reply {
        publish(&app, topic, &format!("{text} back")).await;
    }
    Json(json!({"status": "SUCCESS"}))
}

/// Publishing before the sidecar's outbound side is up would fail: poll it first.
async fn wait_for_outbound(app: &App) {
    loop {
        let answer = app.http.get(format!("{}/v1.0/healthz/outbound", app.dapr)).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(app: &App, topic: &str, text: &str) {
    let url = format!("{}/v1.0/publish/{}/{topic}", app.dapr, app.pubsub);
    match app.http.post(url).json(&json!({"text": text})).send().await {
        Ok(response) => println!("published {text:?} to {topic}: {}", response.status()),
        Err(error) => println!("publishing {text:?} to {topic} failed: {error}"),
    }
}

async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
