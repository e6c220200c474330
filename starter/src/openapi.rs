//! The starter's OpenAPI 3.1 document, served at `GET /api/openapi.json` and rendered at
//! `GET /api/docs` (Swagger UI, its assets compiled in: nothing is loaded from the internet).
//!
//! **Why it cannot drift.** Every route is registered through [`router`], where utoipa-axum's
//! `routes!` adds a handler to the axum router and its `#[utoipa::path]` description to the
//! document in the same call: a route without a description does not compile, and a described
//! path is a served one. Bodies are the handlers' own types ([`crate::views`], the request
//! types beside the handlers, `slipway-proto`'s state types), so their schemas are the code's.
//! What a macro cannot see, the stable error `code`s each operation answers with, is the one
//! table here ([`ERRORS`]); every error response's schema restricts `code` to the listed values,
//! and the end-to-end suite validates every answer it receives against the document, so a code
//! the table does not list fails a test. `clients/typescript` is generated from this document
//! (`slipway openapi` prints it) and CI checks the committed client is current.

use serde_json::{Value, json};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    routes::{api, billing, callbacks, codec, events, github, health, stack, stripe},
    views,
};

/// The document's fixed parts; the paths come from [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway API",
        description = "Agents, billing and client stacks, run by durable Temporal workflows. Every `/api/` \
            call needs `Authorization: Bearer <JWT>` (HS256; `sub` is the user id, `role: admin` for \
            admin operations); another user's resources answer 404. Every error body is \
            `{\"code\", \"message\", \"details\"?}` with a stable `code`: each operation lists the codes it \
            answers. Operations that start work answer 202 once Temporal has accepted it durably; \
            `Idempotency-Key` makes a retried call apply once.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerScheme),
    components(schemas(
        views::ErrorBody,
        views::StateEvent,
        views::StepEvent,
        views::EndEvent,
        views::HeartbeatEvent
    )),
    tags(
        (name = "agents", description = "Create, provision, follow and operate agents (the owner's)"),
        (name = "billing", description = "Stripe Checkout for a subscription and agent seats"),
        (name = "admin", description = "Operators (`role: admin`): all agents, GitHub links, coding jobs, client stacks"),
        (name = "webhooks", description = "What Stripe, GitHub and GitHub Actions send; each verifies its sender's signature or token"),
        (name = "health", description = "Probes and metrics"),
        (name = "codec", description = "Temporal's codec server protocol, for operators: payloads are encrypted before they reach Temporal"),
        (name = "docs", description = "This document"),
    ),
)]
struct ApiDoc;

/// `bearer`: the JWT every `/api/` operation needs.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_owned());
        http.description = Some(
            "HS256 with `SLIPWAY_JWT_SECRET`; `sub` = user id, `role: admin` for admin operations".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// Every route of the HTTP API with its description. `public_metrics`: `/metrics` is served
/// here (not on `SLIPWAY_STARTER_METRICS_ADDR`).
pub fn router(public_metrics: bool) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(stripe::webhook))
        .routes(routes!(callbacks::github_actions))
        .routes(routes!(github::webhook))
        .routes(routes!(api::link_github, api::list_github_links))
        .routes(routes!(api::job_status))
        .routes(routes!(api::bill_job))
        .routes(routes!(api::create_agent, api::list_agents))
        .routes(routes!(api::get_agent))
        .routes(routes!(events::agent_events))
        .routes(routes!(api::provision_agent))
        .routes(routes!(api::stop_agent))
        .routes(routes!(api::start_agent))
        .routes(routes!(api::destroy_agent))
        .routes(routes!(api::admin_list_agents))
        .routes(routes!(billing::checkout))
        .routes(routes!(stack::start))
        .routes(routes!(stack::status))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(codec::encode, codec::preflight_encode))
        .routes(routes!(codec::decode, codec::preflight_decode));
    if public_metrics { router.routes(routes!(health::metrics)) } else { router }
}

/// `GET /api/openapi.json`: this document (the handler is only its description; the app serves
/// the finished document built once at start-up).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "docs",
    operation_id = "getOpenApiDocument",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json(axum::extract::State(app): axum::extract::State<AppState>) -> axum::Json<Value> {
    axum::Json(app.openapi.as_ref().clone())
}

/// The whole document, as served (for `slipway openapi` and the client generator).
pub fn document() -> Value {
    let (_, api) = router(true).split_for_parts();
    finish(api)
}

/// Error codes by HTTP status.
pub type Codes = &'static [(u16, &'static [&'static str])];

/// Codes every authenticated `/api/` operation may answer with.
const API_COMMON: Codes = &[
    (401, &["UNAUTHENTICATED", "INVALID_TOKEN"]),
    (429, &["RATE_LIMITED"]),
    (503, &["TEMPORAL_UNAVAILABLE"]),
];

/// The codec server's codes (its own auth: an operator's token, not an `/api/` user's).
const CODEC: Codes = &[
    (400, &["MALFORMED_PAYLOAD"]),
    (401, &["UNAUTHENTICATED", "INVALID_TOKEN"]),
    (403, &["FORBIDDEN"]),
    (413, &["PAYLOAD_TOO_LARGE"]),
    (422, &["UNDECODABLE_PAYLOAD"]),
];

/// Codes of operations that read a JSON body.
const BODY_COMMON: Codes = &[(400, &["MALFORMED_PAYLOAD"]), (413, &["PAYLOAD_TOO_LARGE"])];

/// Agent command refusals (the `Agent` workflow's codes).
const COMMAND_REFUSALS: &[&str] = &[
    "AGENT_NOT_RUNNING",
    "AGENT_NOT_STOPPED",
    "AGENT_SUSPENDED",
    "AGENT_BUSY",
    "AGENT_DESTROYED",
    "NOT_APPLICABLE",
];

/// The stable error codes of each operation, by `operationId` and status. The one place a
/// code is declared for clients; see the module docs for how it is held to the code.
pub const ERRORS: &[(&str, Codes)] = &[
    ("listAgents", &[]),
    ("createAgent", &[(400, &["INVALID_INPUT"]), (409, &["TOO_MANY_DRAFTS"])]),
    ("getAgent", &[(404, &["AGENT_NOT_FOUND"])]),
    (
        "streamAgentEvents",
        &[(400, &["INVALID_EVENT_ID"]), (404, &["AGENT_NOT_FOUND"]), (429, &["TOO_MANY_STREAMS"])],
    ),
    (
        "provisionAgent",
        &[
            (402, &["NO_FREE_SEAT"]),
            (403, &["NO_ACTIVE_SUBSCRIPTION", "SUBSCRIPTION_ENDED", "PAYER_NOT_OWNER"]),
            (404, &["AGENT_NOT_FOUND"]),
            (
                409,
                &[
                    "AGENT_ALREADY_PROVISIONING",
                    "AGENT_ALREADY_ACTIVE",
                    "PROVISIONING_IN_PROGRESS",
                    "AGENT_NOT_PROVISIONABLE",
                    "SEAT_UNCONFIRMED",
                    "AGENT_BUSY",
                    "AGENT_DESTROYED",
                    "NOT_A_SUBSCRIPTION",
                ],
            ),
        ],
    ),
    ("stopAgent", &[(404, &["AGENT_NOT_FOUND"]), (409, COMMAND_REFUSALS)]),
    ("startAgent", &[(404, &["AGENT_NOT_FOUND"]), (409, COMMAND_REFUSALS)]),
    ("destroyAgent", &[(404, &["AGENT_NOT_FOUND"]), (409, COMMAND_REFUSALS)]),
    (
        "createCheckoutSession",
        &[
            (400, &["INVALID_INPUT"]),
            (404, &["AGENT_NOT_FOUND"]),
            (
                409,
                &[
                    "AGENT_NOT_DRAFT",
                    "CHECKOUT_ALREADY_OPEN",
                    "TOO_MANY_DRAFTS",
                    "AGENT_BUSY",
                    "AGENT_DESTROYED",
                ],
            ),
            (502, &["STRIPE_ERROR"]),
        ],
    ),
    ("adminListAgents", &[(403, &["FORBIDDEN"])]),
    ("linkGitHubAccount", &[(400, &["INVALID_INPUT"]), (403, &["FORBIDDEN"])]),
    ("listGitHubLinks", &[(403, &["FORBIDDEN"])]),
    ("getJobStatus", &[(400, &["INVALID_PATH"]), (403, &["FORBIDDEN"]), (404, &["JOB_NOT_FOUND"])]),
    (
        "billJobAgain",
        &[
            (400, &["INVALID_PATH"]),
            (403, &["FORBIDDEN"]),
            (404, &["JOB_NOT_FOUND"]),
            (409, &["NOTHING_UNBILLED"]),
        ],
    ),
    ("startClientStack", &[(400, &["INVALID_INPUT"]), (403, &["FORBIDDEN"])]),
    ("getClientStack", &[(403, &["FORBIDDEN"]), (404, &["STACK_NOT_FOUND"])]),
    ("codecEncode", CODEC),
    ("codecDecode", CODEC),
    (
        "receiveStripeEvent",
        &[
            (400, &["MISSING_SIGNATURE", "INVALID_SIGNATURE", "STALE_TIMESTAMP", "MALFORMED_PAYLOAD"]),
            (409, &["PROVISIONING_IN_PROGRESS"]),
            (413, &["PAYLOAD_TOO_LARGE"]),
            (422, &["INVALID_CHECKOUT_METADATA"]),
            (429, &["RATE_LIMITED"]),
            (503, &["TEMPORAL_UNAVAILABLE"]),
        ],
    ),
    (
        "receiveGitHubEvent",
        &[
            (400, &["MISSING_DELIVERY_ID", "MALFORMED_PAYLOAD"]),
            (401, &["MISSING_SIGNATURE", "INVALID_SIGNATURE"]),
            (413, &["PAYLOAD_TOO_LARGE"]),
            (429, &["RATE_LIMITED"]),
            (503, &["TEMPORAL_UNAVAILABLE"]),
        ],
    ),
    (
        "receiveActionsCallback",
        &[
            (400, &["MALFORMED_PAYLOAD", "INVALID_CALLBACK", "INVALID_JOB_ID"]),
            (401, &["MISSING_SIGNATURE", "INVALID_SIGNATURE", "STALE_TIMESTAMP", "INVALID_CALLBACK_TOKEN"]),
            (403, &["WRONG_RUN"]),
            (404, &["JOB_NOT_FOUND"]),
            (413, &["PAYLOAD_TOO_LARGE"]),
            (429, &["RATE_LIMITED"]),
            (503, &["OIDC_UNAVAILABLE", "TEMPORAL_UNAVAILABLE"]),
        ],
    ),
];

/// Operations under `/api/` that read a JSON body.
const WITH_BODY: &[&str] = &["createAgent", "createCheckoutSession", "linkGitHubAccount", "startClientStack"];

/// Status texts of the error responses the table adds.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Invalid input (`details` names each field)",
        401 => "Missing or invalid credentials",
        402 => "A seat must be bought first",
        403 => "Not allowed",
        404 => "Not found (another user's resource answers the same)",
        409 => "Refused in the current state",
        413 => "Body over 1 MiB",
        422 => "Well-formed but unusable",
        429 => "Rate limited (`Retry-After`)",
        502 => "A provider failed",
        503 => "Temporal did not accept the request; retry (`Retry-After`)",
        _ => "Error",
    }
}

/// The document with every operation's error responses from [`ERRORS`] (and the common ones),
/// each restricting `code` to its listed values, and the answers' examples.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (_, op) in item.iter_mut() {
            let Some(id) = op.get("operationId").and_then(Value::as_str).map(str::to_owned) else { continue };
            let mut codes: Vec<(u16, Vec<&'static str>)> = Vec::new();
            let mut add =
                |status: u16, list: &[&'static str]| match codes.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, l)) => {
                        let new: Vec<_> = list.iter().filter(|c| !l.contains(c)).copied().collect();
                        l.extend(new);
                    }
                    None => codes.push((status, list.to_vec())),
                };
            if let Some((_, own)) = ERRORS.iter().find(|(op, _)| *op == id) {
                let authed = path.starts_with("/api/");
                for (status, list) in own.iter().chain(if authed { API_COMMON } else { &[] }) {
                    add(*status, list);
                }
                if WITH_BODY.contains(&id.as_str()) {
                    for (status, list) in BODY_COMMON {
                        add(*status, list);
                    }
                }
            }
            codes.sort_by_key(|(s, _)| *s);
            let responses = &mut op["responses"];
            for (status, list) in codes {
                let schema = json!({"allOf": [
                    {"$ref": "#/components/schemas/ErrorBody"},
                    {"type": "object", "properties": {"code": {"type": "string", "enum": list}}}
                ]});
                let example = json!({"code": list[0], "message": "…"});
                let description =
                    match responses.get(status.to_string()).and_then(|r| r["description"].as_str()) {
                        Some(d) => d.to_owned(),
                        None => reason(status).to_owned(),
                    };
                responses[status.to_string()] = json!({
                    "description": description,
                    "content": {"application/json": {"schema": schema, "example": example}}
                });
            }
            // The answers' own examples, built from real values (`crate::examples`).
            for (status, response) in op["responses"].as_object_mut().into_iter().flatten() {
                let found = status.parse().ok().and_then(|s| crate::examples::response(&id, s));
                let Some((media, example)) = found else { continue };
                if let Some(content) = response.get_mut("content").and_then(|c| c.get_mut(media)) {
                    content["example"] = example;
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_names_an_operation_and_every_operation_has_an_entry() {
        let doc = document();
        let mut ids = Vec::new();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                ids.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        for (id, _) in ERRORS {
            assert!(ids.iter().any(|i| i == id), "{id} is in ERRORS but not an operation");
        }
        let unlisted = [
            "healthz",
            "readyz",
            "metrics",
            "getOpenApiDocument",
            "codecEncodePreflight",
            "codecDecodePreflight",
        ];
        for id in &ids {
            assert!(
                ERRORS.iter().any(|(op, _)| op == id) || unlisted.contains(&id.as_str()),
                "operation {id} has no entry in ERRORS"
            );
        }
    }

    /// The other half of "the routes and the document are the same set": every documented
    /// operation reaches a handler (an unrouted one would answer `ROUTE_NOT_FOUND` or
    /// `METHOD_NOT_ALLOWED`). Requests carry no credentials, so nothing reaches Temporal.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        use tower::ServiceExt;
        let settings = crate::StarterSettings::from_lookup(crate::settings::required_and(&[])).unwrap();
        let app = crate::app(crate::AppState::offline(settings));
        let doc = document();
        let mut probed = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, _) in item.as_object().unwrap() {
                if path == "/readyz" {
                    continue; // would wait for Temporal
                }
                let uri = path
                    .replace("{id}", "ag-1")
                    .replace("{client_id}", "c1")
                    .replace("{owner}", "o")
                    .replace("{repo}", "r")
                    .replace("{issue}", "1");
                let req = axum::http::Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))))
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                let text = String::from_utf8_lossy(&body);
                assert!(
                    !text.contains("ROUTE_NOT_FOUND") && !text.contains("METHOD_NOT_ALLOWED"),
                    "{method} {uri}: {status} {text}"
                );
                probed += 1;
            }
        }
        assert!(probed >= 22, "{probed} operations probed");
        let stray = app
            .oneshot(axum::http::Request::get("/api/nothing-here").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(stray.status(), axum::http::StatusCode::NOT_FOUND);
    }

    /// The docs page is served from the binary and loads nothing from elsewhere: every asset its
    /// page names is relative, and served here.
    #[tokio::test]
    async fn the_docs_page_and_its_assets_are_served_from_the_binary() {
        use tower::ServiceExt;
        let settings = crate::StarterSettings::from_lookup(crate::settings::required_and(&[])).unwrap();
        let app = crate::app(crate::AppState::offline(settings));
        let get = |path: &str| {
            let app = app.clone();
            let req = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, page) = get("/api/docs/").await;
        assert_eq!(status, 200);
        let assets: Vec<&str> = page
            .split(['"', '\''])
            .filter(|s| s.ends_with(".js") || s.ends_with(".css") || s.ends_with(".png"))
            .collect();
        assert!(assets.len() >= 3, "{assets:?}");
        for asset in assets {
            assert!(!asset.contains("://") && !asset.starts_with("//"), "{asset} is not served here");
            let (status, _) = get(&format!("/api/docs/{}", asset.trim_start_matches("./"))).await;
            assert_eq!(status, 200, "{asset}");
        }
        let (_, init) = get("/api/docs/swagger-initializer.js").await;
        assert!(init.contains("/api/openapi.json"), "{init}");
        let (status, doc) = get("/api/openapi.json").await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&doc).unwrap(),
            document(),
            "the served document is the printed one"
        );
    }

    #[test]
    fn the_documented_regions_are_the_accepted_ones() {
        let doc = document();
        let regions: Vec<&str> = doc["components"]["schemas"]["Region"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(regions, crate::validate::REGIONS);
    }

    #[test]
    fn error_responses_restrict_the_code() {
        let doc = document();
        let r = &doc["paths"]["/api/agents/{id}/stop"]["post"]["responses"]["409"];
        let codes = &r["content"]["application/json"]["schema"]["allOf"][1]["properties"]["code"]["enum"];
        assert!(codes.as_array().unwrap().iter().any(|c| c == "AGENT_NOT_RUNNING"), "{r}");
        let unauth = &doc["paths"]["/api/agents"]["get"]["responses"]["401"];
        assert!(unauth.to_string().contains("INVALID_TOKEN"));
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
