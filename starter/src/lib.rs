//! The Slipway starter: the thin ingress between the outside world and Temporal.
//!
//! It verifies what comes in (webhook signatures, Actions OIDC tokens or callback HMACs, API
//! tokens), maps it to a workflow start, update or signal, and answers only after Temporal
//! accepted it. It holds no state of its own, so any number of starters can run behind a load
//! balancer.
//!
//! # Layers, outside in
//! - [`routes`]: thin handlers (extract, call one service, answer), one module per endpoint
//!   family (`stripe`, `github`, `callbacks`, `api`, `events`, `billing`, `stack`, `health`),
//!   each registered with its OpenAPI description by [`openapi::router`]; [`views`] are the
//!   bodies they answer with.
//! - [`ingress`]: one extractor per sender that verifies, reads once and counts a delivery, and
//!   the pure mappings from a verified event to an intent.
//! - [`service`]: the decisions (ownership, entitlement, caps, checkout holds), shared by the
//!   REST API and the gRPC service ([`grpc`], `slipway.v1.AgentControl`).
//! - [`temporal`]: the [`temporal::Gateway`], one module per workflow type, the only code that
//!   talks to Temporal.
//!
//! Beside them: [`auth`] (JWT bearer tokens), [`limits`] (per-user and per-IP rate limits, 429,
//! in bounded memory), [`client_ip`] (the client behind trusted proxies),
//! [`metrics`], [`error`] (the one HTTP error type), [`settings`], [`validate`]. Webhook
//! verification, event types, the Actions OIDC verifier and the Stripe client come from each
//! provider's home in `slipway-providers`; the starter calls no provider any other way.

pub mod auth;
pub mod client_ip;
pub mod error;
pub mod examples;
pub mod grpc;
pub mod ingress;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod service;
pub mod settings;
pub mod temporal;
pub mod validate;
pub mod views;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath},
    http::Request,
    routing::get,
};
use slipway_proto::control::agent_control_server::AgentControlServer;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use settings::StarterSettings;
pub use temporal::Gateway;

/// Largest accepted request body. Stripe events are a few KiB; 1 MiB leaves room and caps abuse.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Configuration.
    pub settings: Arc<StarterSettings>,
    /// Temporal.
    pub gateway: Gateway,
    /// Counters.
    pub metrics: Arc<metrics::Metrics>,
    /// The one Stripe client (Checkout Sessions), built at start-up.
    pub stripe: slipway_providers::stripe::StripeClient,
    /// Rate limits (per user on the API, per IP on failed authentication).
    pub limits: Arc<limits::Limits>,
    /// The Actions OIDC verifier, when `GITHUB_ACTIONS_REPO` enables OIDC callbacks.
    pub oidc: Option<Arc<slipway_providers::github::actions_oidc::OidcVerifier>>,
    /// One poller per agent an event stream watches ([`service::events`]).
    pub feeds: Arc<service::events::Feeds>,
    /// The OpenAPI document as served (set by [`app`], from the routes it registers).
    pub openapi: Arc<serde_json::Value>,
}

impl AppState {
    /// A state whose Temporal is never reached (a gateway to nowhere): for tests of the
    /// router that stop before Temporal (auth, limits, routing, validation).
    pub fn offline(settings: StarterSettings) -> Self {
        let stripe = slipway_providers::stripe::StripeClient::new(
            &settings.stripe_api_url,
            &settings.stripe_secret_key,
        )
        .expect("a valid Stripe base URL");
        Self {
            gateway: Gateway::new(
                "unused".into(),
                std::time::Duration::from_secs(1),
                slipway_codec::Encryption::Off,
            ),
            limits: Arc::new(limits::Limits::per_minute(
                settings.api_rate_per_min,
                settings.auth_failures_per_min,
            )),
            settings: Arc::new(settings),
            metrics: Arc::default(),
            stripe,
            oidc: None,
            feeds: Arc::default(),
            openapi: Arc::default(),
        }
    }

    /// Lifecycle knobs given to new agents.
    pub fn lifecycle(&self) -> slipway_proto::model::LifecyclePolicy {
        slipway_proto::model::LifecyclePolicy {
            shutdown_wait_secs: self.settings.shutdown_wait_secs,
            history_limit: self.settings.history_limit,
            command_attempts: self.settings.command_attempts,
            checkout_retry_secs: self.settings.checkout_retry_secs,
        }
    }
}

/// The HTTP router (usable with `oneshot` in tests): every route of [`openapi::router`], which
/// describes each in the OpenAPI document as it registers it, and the docs page.
pub fn app(mut state: AppState) -> Router {
    // With an internal metrics address, `/metrics` is not on the public listener at all.
    let public_metrics = state.settings.metrics_addr.is_none();
    let (router, api) = openapi::router(public_metrics).split_for_parts();
    state.openapi = Arc::new(openapi::finish(api));
    // Swagger UI from the crate's own copy of its assets, reading the document above; no
    // validator badge (it would send the document to a public validator).
    let docs = utoipa_swagger_ui::SwaggerUi::new("/api/docs")
        .config(utoipa_swagger_ui::Config::from("/api/openapi.json").validator_url("none"));
    router
        .merge(docs)
        .fallback(routes::health::no_route)
        .method_not_allowed_fallback(routes::health::no_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limits::auth_failures))
        .route_layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let path = req.extensions().get::<MatchedPath>().map_or(req.uri().path(), MatchedPath::as_str);
            // Handlers fill in the ids they learn (`tracing::Span::current().record(..)`), so every
            // line of a request, its error answer included, names the event and the workflow.
            tracing::info_span!(
                "http",
                otel.name = %format_args!("{} {path}", req.method()),
                otel.kind = "server",
                method = %req.method(),
                path = %path,
                event_id = tracing::field::Empty,
                event_type = tracing::field::Empty,
                delivery_id = tracing::field::Empty,
                workflow_id = tracing::field::Empty,
            )
        }))
        .with_state(state)
}

/// The internal metrics listener's router: `/metrics` only.
pub fn metrics_app(state: AppState) -> Router {
    Router::new().route("/metrics", get(routes::health::metrics)).with_state(state)
}

/// A bound starter: HTTP and gRPC listeners (and the internal metrics one, if configured) ready
/// to serve.
pub struct Application {
    http: TcpListener,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    state: AppState,
}

impl Application {
    /// Bind both listeners (port 0 picks a free port).
    pub async fn build(settings: StarterSettings, gateway: Gateway) -> std::io::Result<Self> {
        let http = TcpListener::bind(settings.http_addr).await?;
        let grpc = TcpListener::bind(settings.grpc_addr).await?;
        let metrics = match settings.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let stripe = slipway_providers::stripe::StripeClient::new(
            &settings.stripe_api_url,
            &settings.stripe_secret_key,
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let limits =
            Arc::new(limits::Limits::per_minute(settings.api_rate_per_min, settings.auth_failures_per_min));
        let oidc = settings.actions_oidc.as_ref().map(|o| {
            Arc::new(slipway_providers::github::actions_oidc::OidcVerifier::new(&o.issuer, &o.audience))
        });
        let state = AppState {
            settings: Arc::new(settings),
            gateway,
            metrics: Arc::default(),
            stripe,
            limits,
            oidc,
            feeds: Arc::default(),
            openapi: Arc::default(),
        };
        Ok(Self { http, grpc, metrics, state })
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    /// Bound internal metrics address, if `/metrics` is served apart.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|l| l.local_addr().expect("bound listener"))
    }

    /// Bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    /// Serve until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let service = grpc::AgentControlService::new(self.state.clone());
        let mut grpc_rx = rx.clone();
        let grpc = tonic::transport::Server::builder()
            .add_service(AgentControlServer::new(service))
            .serve_with_incoming_shutdown(tokio_stream_listener(self.grpc), async move {
                let _ = grpc_rx.wait_for(|stop| *stop).await;
            });
        if let Some(listener) = self.metrics {
            let mut metrics_rx = rx.clone();
            let router = metrics_app(self.state.clone());
            tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = metrics_rx.wait_for(|stop| *stop).await;
                });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        let mut http_rx = rx;
        // The client address feeds the per-IP limit on failed authentication.
        let service = app(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let http = axum::serve(self.http, service).with_graceful_shutdown(async move {
            let _ = http_rx.wait_for(|stop| *stop).await;
        });
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let (h, g) = tokio::join!(http, grpc);
        h?;
        g?;
        Ok(())
    }
}

fn tokio_stream_listener(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
}
