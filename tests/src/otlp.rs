//! A loopback OTLP/HTTP trace receiver: what an OpenTelemetry collector does with
//! `POST /v1/traces`, keeping the spans it was sent so a test can check that one webhook is one
//! trace across the starter and the worker. It decodes the same protobuf messages a collector
//! does (`opentelemetry-proto`), so what it accepts is what a real collector accepts.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
};
use prost::Message;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root span.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// String attributes.
    pub attributes: BTreeMap<String, String>,
}

/// A running receiver.
pub struct Collector {
    /// Base URL (`http://127.0.0.1:<port>`), what `OTEL_EXPORTER_OTLP_ENDPOINT` takes.
    pub url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Collector {
    /// Bind a free loopback port and serve until the test ends.
    pub async fn start() -> anyhow::Result<Self> {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/v1/traces", post(export)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, spans })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans lock").clone()
    }
}

async fn export(State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| string_value(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let attributes = span
                .attributes
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), string_value(kv.value.as_ref()?.value.as_ref()?)?)))
                .collect();
            received.push(ReceivedSpan {
                service: service.clone(),
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                name: span.name,
                attributes,
            });
        }
    }
    spans.lock().expect("spans lock").extend(received);
    (StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
}

fn string_value(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}
