//! `enableTLS`: the Redis component over TLS, against a redis-server of the test's own that
//! serves only TLS with a certificate made here.

use std::process::Stdio;

use serde_json::json;

use crate::helpers::{RunningSidecar, TempDir, TestApp, eventually, sidecar_config, unique};

/// A TLS-only redis-server on a free port, stopped when dropped.
struct TlsRedis {
    port: u16,
    _server: tokio::process::Child,
    _dir: TempDir,
}

impl TlsRedis {
    async fn start() -> Self {
        let dir = TempDir::new();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        dir.write("server.crt", &certified.cert.pem());
        dir.write("server.key", &certified.key_pair.serialize_pem());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = |name: &str| dir.0.join(name).display().to_string();
        let server = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-cert-file", &file("server.crt"), "--tls-key-file", &file("server.key")])
            .args(["--tls-ca-cert-file", &file("server.crt"), "--tls-auth-clients", "no", "--dir", &file("")])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (with TLS support, as Debian builds it) must be on PATH for the TLS test");
        eventually("the TLS redis-server to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        Self { port, _server: server, _dir: dir }
    }

    fn component(&self, insecure: bool) -> String {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:{}\n  - name: enableTLS\n    value: \"true\"\n  - name: insecureSkipTLSVerify\n    value: \"{insecure}\"\n",
            self.port
        )
    }
}

#[tokio::test]
async fn the_redis_component_speaks_tls_and_verifies_the_server_unless_told_not_to() {
    let redis = TlsRedis::start().await;
    let topic = unique("tls");
    let app = TestApp::start(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}])).await;

    let strict = TempDir::new();
    strict.write("pubsub.yaml", &redis.component(false));
    let refused = devsidecar::sidecar::Sidecar::build(sidecar_config(&unique("tls-strict"), Some(&app), &strict)).await;
    let error = refused.err().expect("a self-signed certificate is not trusted").to_string();
    assert!(error.contains("pubsub.yaml"), "{error}");

    let insecure = TempDir::new();
    insecure.write("pubsub.yaml", &redis.component(true));
    let sidecar = RunningSidecar::start(sidecar_config(&unique("tls-app"), Some(&app), &insecure)).await;
    assert_eq!(sidecar.publish(&topic, "application/json", r#"{"over":"tls"}"#).await.status(), 204);
    let delivered = app.wait_for_deliveries(1).await;
    assert_eq!(delivered[0].json()["data"], json!({"over": "tls"}));
    sidecar.stop().await;
}
