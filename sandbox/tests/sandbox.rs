//! End-to-end tests of the sandbox over HTTP, the way the product's clients use it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Client;
use serde_json::{Value, json};
use sha2::Sha256;
use slipway_sandbox::{RunningSandbox, SandboxConfig, spawn};
use tokio::sync::mpsc;

const TOKEN: &str = "test-token";

async fn start(webhook_url: Option<String>) -> RunningSandbox {
    let mut config = SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        hetzner_action_ms: 100,
        runner_step_ms: 20,
        callback_secret: "cb-secret".into(),
        stripe_webhook_secret: "whsec_test".into(),
        ..SandboxConfig::default()
    };
    if let Some(url) = webhook_url {
        config.stripe_webhook_url = url;
    }
    spawn(config).await.expect("sandbox binds")
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// A tiny HTTP receiver answering with `statuses` in turn (then 200), forwarding requests.
async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let (tx, statuses) = (tx.clone(), statuses.clone());
        async move {
            tx.send((headers, body)).unwrap();
            let status = statuses.lock().unwrap().next().unwrap_or(200);
            StatusCode::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) -> (HeaderMap, Bytes) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("request arrives in time").unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let text = res.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, headers, body)
}

#[tokio::test]
async fn hetzner_server_lifecycle() {
    let sb = start(None).await;
    let http = Client::new();
    let url = |p: &str| format!("{}/hetzner/v1{p}", sb.base_url);
    let create = |name: &str, labels: Value| {
        http.post(url("/servers")).bearer_auth(TOKEN).json(&json!({
            "name": name, "server_type": "cx22", "image": "ubuntu-24.04", "location": "nbg1", "labels": labels,
        }))
    };

    let (status, _, body) = send(http.get(url("/servers"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));

    let (status, headers, body) = send(create("agent-1", json!({"slipway/agent": "a1", "env": "dev"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["ratelimit-limit"], "3600");
    assert!(headers.contains_key("ratelimit-remaining") && headers.contains_key("ratelimit-reset"));
    let server = &body["server"];
    assert_eq!(server["status"], "initializing");
    assert_eq!(server["datacenter"]["location"]["name"], "nbg1");
    assert_eq!(server["public_net"]["ipv4"]["blocked"], false);
    assert_eq!(body["action"]["command"], "create_server");
    assert_eq!(body["action"]["status"], "running");
    assert_eq!(body["next_actions"][0]["command"], "start_server");
    assert!(body["root_password"].is_null());
    let (id, action_id) = (server["id"].as_u64().unwrap(), body["action"]["id"].as_u64().unwrap());

    let (status, _, body) = send(create("agent-1", json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("uniqueness_error")));
    let (status, _, body) =
        send(http.post(url("/servers")).bearer_auth(TOKEN).json(&json!({"name": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_input")));
    assert_eq!(body["error"]["details"]["fields"][0]["name"], "server_type");
    let (status, _, body) = send(create("not_a_hostname", json!({}))).await;
    assert_eq!((status, body["error"]["details"]["fields"][0]["name"].as_str()), (422, Some("name")));

    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, _, body) = send(http.get(url(&format!("/actions/{action_id}"))).bearer_auth(TOKEN)).await;
    assert_eq!((status, body["action"]["status"].as_str()), (200, Some("success")));
    assert_eq!(body["action"]["progress"], 100);
    assert!(body["action"]["finished"].is_string());
    let (_, _, body) = send(http.get(url(&format!("/servers/{id}"))).bearer_auth(TOKEN)).await;
    assert_eq!(body["server"]["status"], "running");

    send(create("agent-2", json!({"slipway/agent": "a2", "env": "dev"}))).await;
    let list = |query: &str| http.get(url(&format!("/servers?{query}"))).bearer_auth(TOKEN);
    let (_, _, body) = send(list("label_selector=slipway/agent=a1,env=dev")).await;
    assert_eq!(body["servers"].as_array().unwrap().len(), 1);
    assert_eq!(body["servers"][0]["id"], id);
    let (_, _, body) = send(list("label_selector=env=dev&per_page=1&page=2")).await;
    assert_eq!(body["servers"][0]["name"], "agent-2");
    assert_eq!(
        body["meta"]["pagination"],
        json!({"page": 2, "per_page": 1, "previous_page": 1, "next_page": null, "last_page": 2, "total_entries": 2})
    );
    let (_, _, body) = send(list("name=agent-2")).await;
    assert_eq!(body["servers"].as_array().unwrap().len(), 1);

    let (status, _, body) =
        send(http.post(url(&format!("/servers/{id}/actions/poweroff"))).bearer_auth(TOKEN)).await;
    assert_eq!((status, body["action"]["command"].as_str()), (201, Some("stop_server")));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, _, body) = send(http.get(url(&format!("/servers/{id}"))).bearer_auth(TOKEN)).await;
    assert_eq!(body["server"]["status"], "off");

    let (status, _, body) = send(http.delete(url(&format!("/servers/{id}"))).bearer_auth(TOKEN)).await;
    assert_eq!((status, body["action"]["command"].as_str()), (200, Some("delete_server")));
    let (status, _, body) = send(http.get(url(&format!("/servers/{id}"))).bearer_auth(TOKEN)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], format!("server with ID '{id}' not found"));
    sb.shutdown().await;
}

#[tokio::test]
async fn tailscale_keys() {
    let sb = start(None).await;
    let http = Client::new();
    let keys = format!("{}/tailscale/api/v2/tailnet/example.com/keys", sb.base_url);
    let body = |tag: &str| {
        json!({"capabilities": {"devices": {"create": {"reusable": false, "ephemeral": true,
            "preauthorized": true, "tags": [tag]}}}, "expirySeconds": 3600, "description": "agent a1"})
    };

    let (status, _, err) = send(http.post(&keys).json(&body("tag:slipway-agent"))).await;
    assert_eq!((status, err["message"].as_str()), (401, Some("API token invalid")));
    let (status, _, err) = send(http.post(&keys).bearer_auth("tskey-api-x").json(&body("slipway"))).await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("tag:"));

    let (status, _, key) =
        send(http.post(&keys).bearer_auth("tskey-api-x").json(&body("tag:slipway-agent"))).await;
    assert_eq!(status, 200, "{key}");
    let id = key["id"].as_str().unwrap();
    assert!(key["key"].as_str().unwrap().starts_with(&format!("tskey-auth-{id}-")));
    assert_eq!(key["capabilities"]["devices"]["create"]["tags"][0], "tag:slipway-agent");

    let (_, _, list) = send(http.get(&keys).bearer_auth("tskey-api-x")).await;
    assert_eq!(list["keys"][0]["id"], id);
    assert!(list["keys"][0].get("key").is_none());
    let (status, _, body) = send(http.delete(format!("{keys}/{id}")).bearer_auth("tskey-api-x")).await;
    assert_eq!((status, body), (200, Value::Null));
    let (status, _, body) = send(http.delete(format!("{keys}/{id}")).bearer_auth("tskey-api-x")).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("not found")));
    sb.shutdown().await;
}

#[tokio::test]
async fn github_dispatch_and_runner_callbacks() {
    let sb = start(None).await;
    let http = Client::new();
    // The first callback attempt fails, so the runner must retry it.
    let (callback_url, mut rx) = receiver(vec![503]).await;
    let ts_keys = format!("{}/tailscale/api/v2/tailnet/example.com/keys", sb.base_url);
    let key = json!({"capabilities": {"devices": {"create": {"tags": ["tag:slipway-agent"]}}}});
    send(http.post(&ts_keys).bearer_auth("k").json(&key)).await;

    let dispatch = |workflow: &str, body: Value| {
        http.post(format!("{}/github/repos/acme/infra/actions/workflows/{workflow}/dispatches", sb.base_url))
            .bearer_auth(TOKEN)
            .header("accept", "application/vnd.github+json")
            .json(&body)
    };
    let inputs = json!({"job_id": "j1", "agent_id": "a1", "region": "eu", "callback_url": callback_url});

    let (status, _, body) = send(dispatch("nope.yml", json!({"ref": "main"}))).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
    let (status, _, body) =
        send(dispatch("provision-agent.yml", json!({"ref": "main", "inputs": {"job_id": "j1"}}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Required input 'agent_id' not provided")));
    let mut extra = inputs.clone();
    extra["color"] = json!("red");
    let (status, _, body) =
        send(dispatch("provision-agent.yml", json!({"ref": "main", "inputs": extra}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Unexpected inputs provided: [\"color\"]")));
    let unauthenticated = http
        .post(format!(
            "{}/github/repos/acme/infra/actions/workflows/provision-agent.yml/dispatches",
            sb.base_url
        ))
        .json(&json!({"ref": "main", "inputs": inputs}));
    assert_eq!(send(unauthenticated).await.0, 401);

    let (status, _, details) = send(dispatch(
        "provision-agent.yml",
        json!({"ref": "main", "inputs": inputs, "return_run_details": true}),
    ))
    .await;
    assert_eq!(status, 200, "{details}");
    let run_id = details["workflow_run_id"].as_u64().unwrap();
    assert!(details["run_url"].as_str().unwrap().ends_with(&format!("/actions/runs/{run_id}")));

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (headers, body) = recv(&mut rx).await;
        assert_eq!(headers["content-type"], "application/json");
        let expected = format!("sha256={}", hmac_hex("cb-secret", &body));
        assert_eq!(headers["x-slipway-signature"], expected.as_str());
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((body["job_id"].as_str(), body["agent_id"].as_str()), (Some("j1"), Some("a1")));
        assert_eq!(body["run_id"], run_id.to_string());
        statuses.push(body["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["running", "running", "succeeded"]);

    let devices = format!("{}/tailscale/api/v2/tailnet/example.com/devices", sb.base_url);
    let (_, _, body) = send(http.get(&devices).bearer_auth("k")).await;
    assert_eq!(body["devices"][0]["hostname"], "slipway-a1");
    assert_eq!(body["devices"][0]["tags"], json!(["tag:slipway-agent"]));
    let run_url = format!("{}/github/repos/acme/infra/actions/runs/{run_id}", sb.base_url);
    let mut run = Value::Null;
    for _ in 0..50 {
        run = send(http.get(&run_url).bearer_auth(TOKEN)).await.2;
        if run["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((run["status"].as_str(), run["conclusion"].as_str()), (Some("completed"), Some("success")));
    assert_eq!(run["event"], "workflow_dispatch");

    // A failing runner reports running then failed, and no VM joins the tailnet.
    let control = format!("{}/_sandbox/github/runner", sb.base_url);
    send(http.post(&control).json(&json!({"outcome": "fail", "reason": "cloud-init exploded"}))).await;
    let inputs = json!({"job_id": "j2", "agent_id": "a2", "region": "eu", "callback_url": callback_url});
    assert_eq!(send(dispatch("provision-agent.yml", json!({"ref": "main", "inputs": inputs}))).await.0, 204);
    let (_, running) = recv(&mut rx).await;
    let (_, failed) = recv(&mut rx).await;
    let (running, failed): (Value, Value) =
        (serde_json::from_slice(&running).unwrap(), serde_json::from_slice(&failed).unwrap());
    assert_eq!((running["status"].as_str(), failed["status"].as_str()), (Some("running"), Some("failed")));
    assert_eq!(failed["reason"], "cloud-init exploded");
    let (_, _, body) = send(http.get(&devices).bearer_auth("k")).await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 1);
    sb.shutdown().await;
}

#[tokio::test]
async fn faults_fail_count_requests_with_retry_after() {
    let sb = start(None).await;
    let http = Client::new();
    let faults = format!("{}/_sandbox/faults", sb.base_url);
    let fault =
        json!({"method": "POST", "path": "/hetzner/v1/servers", "status": 503, "retry_after": 2, "count": 2});
    let (status, _, body) = send(http.post(&faults).json(&fault)).await;
    assert_eq!(status, 201);
    assert!(body["id"].is_string());
    let slow = json!({"path": "/hetzner/v1/servers/*", "latency_ms": 30});
    send(http.post(&faults).json(&slow)).await;

    let create = || {
        http.post(format!("{}/hetzner/v1/servers", sb.base_url))
            .bearer_auth(TOKEN)
            .json(&json!({"name": "f1", "server_type": "cx22", "image": "debian-12"}))
    };
    for _ in 0..2 {
        let (status, headers, body) = send(create()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (503, Some("unavailable")));
        assert_eq!(headers["retry-after"], "2");
    }
    let (status, _, body) = send(create()).await;
    assert_eq!(status, 201);

    // Latency-only faults delay the request and then let it through.
    let started = std::time::Instant::now();
    let server_url = format!("{}/hetzner/v1/servers/{}", sb.base_url, body["server"]["id"]);
    assert_eq!(send(http.get(&server_url).bearer_auth(TOKEN)).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(30));

    let (_, _, list) = send(http.get(&faults)).await;
    assert_eq!(list["faults"][0]["remaining"], 0);
    assert!(list["faults"][1]["remaining"].is_null());
    send(http.delete(&faults)).await;
    let (_, _, list) = send(http.get(&faults)).await;
    assert_eq!(list["faults"], json!([]));
    sb.shutdown().await;
}

#[tokio::test]
async fn stripe_webhook_delivery_and_state_inventory() {
    let (webhook_url, mut rx) = receiver(vec![500]).await;
    let sb = start(Some(webhook_url)).await;
    let http = Client::new();
    let control = |p: &str| format!("{}/_sandbox{p}", sb.base_url);

    let checkout = json!({"userId": "u1", "agentId": "a1", "region": "eu", "customer": "cus_existing"});
    let (status, _, accepted) = send(http.post(control("/stripe/checkout/complete")).json(&checkout)).await;
    assert_eq!(status, 202);
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();

    // The first delivery gets a 500; Stripe-style retry delivers it again, freshly signed.
    for _ in 0..2 {
        let (headers, body) = recv(&mut rx).await;
        assert_eq!(headers["user-agent"], "Stripe/1.0 (+https://stripe.com/docs/webhooks)");
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        let signature = headers["stripe-signature"].to_str().unwrap();
        let t: i64 = signature.split(',').next().unwrap().strip_prefix("t=").unwrap().parse().unwrap();
        let payload = std::str::from_utf8(&body).unwrap();
        assert_eq!(signature, slipway_sandbox::stripe::signature_header(payload, "whsec_test", t));
        let event: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(
            (event["id"].as_str(), event["type"].as_str()),
            (Some(&*event_id), Some("checkout.session.completed"))
        );
        assert_eq!(
            event["data"]["object"]["metadata"],
            json!({"userId": "u1", "agentId": "a1", "region": "eu"})
        );
        assert_eq!(event["data"]["object"]["customer"], "cus_existing");
    }

    let http_token = |req: reqwest::RequestBuilder| req.bearer_auth(TOKEN);
    send(
        http_token(http.post(format!("{}/hetzner/v1/servers", sb.base_url)))
            .json(&json!({"name": "inv-1", "server_type": "cax11", "image": "ubuntu-24.04"})),
    )
    .await;
    let mut state = Value::Null;
    for _ in 0..50 {
        state = send(http.get(control("/state"))).await.2;
        if state["stripe"]["events"][0]["deliveries"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["stripe"]["events"][0]["deliveries"][0]["status"], 500);
    assert_eq!(state["stripe"]["events"][0]["deliveries"][1]["status"], 200);
    assert_eq!(state["stripe"]["customers"][0]["id"], "cus_existing");
    assert_eq!(state["stripe"]["checkout_sessions"][0]["id"], accepted["checkout_session_id"]);
    assert_eq!(state["hetzner"]["servers"][0]["name"], "inv-1");
    assert_eq!(state["hetzner"]["actions"].as_array().unwrap().len(), 2);
    assert!(state["tailscale"]["keys"].is_array() && state["github"]["dispatches"].is_array());
    let (status, _, event) = send(http.get(control(&format!("/stripe/events/{event_id}")))).await;
    assert_eq!((status, event["event"]["id"].as_str()), (200, Some(&*event_id)));

    let (_, _, log) = send(http.get(control("/requests"))).await;
    let entry = log.as_array().unwrap().iter().find(|e| e["path"] == "/hetzner/v1/servers").unwrap();
    assert_eq!((entry["method"].as_str(), entry["status"].as_u64()), (Some("POST"), Some(201)));

    send(http.post(control("/reset"))).await;
    let state = send(http.get(control("/state"))).await.2;
    assert_eq!(state["hetzner"]["servers"], json!([]));
    assert_eq!(state["stripe"]["events"], json!([]));
    sb.shutdown().await;
}
