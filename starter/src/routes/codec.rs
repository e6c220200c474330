//! The codec server: `POST /codec/encode` and `POST /codec/decode`, Temporal's protocol
//! (`{"payloads": [...]}` in and out, see [`slipway_codec::wire`]), so the Web UI and the
//! `temporal` CLI (`--codec-endpoint <starter>/codec --codec-auth "Bearer <JWT>"`) show an
//! operator the payloads Slipway encrypts.
//!
//! Only operators: a bearer JWT with `role: admin`; anyone else gets 401/403 and sees the
//! ciphertext Temporal stores. A Web UI cannot send Slipway's token by itself, so for a local
//! stack (`scripts/dev`) `SLIPWAY_CODEC_TRUSTED_ORIGINS` lists the UI origins whose requests from
//! this machine are decoded without one; never set it on a deployment reachable by others. CORS
//! answers those origins (and only them), so the UI's browser may call the endpoint.

use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use slipway_codec::{
    Encryption,
    wire::{self, Payloads, WireError},
};

use crate::{AppState, auth, error::ApiError};

/// `POST /codec/encode`.
#[utoipa::path(
    post,
    path = "/codec/encode",
    tag = "codec",
    operation_id = "codecEncode",
    summary = "Encrypt payloads as Slipway's processes do (Temporal's codec server protocol)",
    request_body(content = Object, description = "`{\"payloads\": [{\"metadata\": {name: base64}, \"data\": base64}]}`"),
    responses((status = 200, description = "The payloads, encrypted", body = Object)),
    security(("bearer" = [])),
)]
pub async fn encode(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<Payloads>, axum::extract::rejection::JsonRejection>,
) -> Response {
    convert(&app, peer, &headers, body, wire::encode)
}

/// `POST /codec/decode`.
#[utoipa::path(
    post,
    path = "/codec/decode",
    tag = "codec",
    operation_id = "codecDecode",
    summary = "Decrypt payloads for an operator (Temporal's codec server protocol)",
    request_body(content = Object, description = "`{\"payloads\": [...]}` as Temporal stores them"),
    responses((status = 200, description = "The payloads, decrypted (those not encrypted, as they were)", body = Object)),
    security(("bearer" = [])),
)]
pub async fn decode(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<Payloads>, axum::extract::rejection::JsonRejection>,
) -> Response {
    convert(&app, peer, &headers, body, wire::decode)
}

/// `OPTIONS /codec/encode`: the CORS preflight of a trusted UI origin.
#[utoipa::path(
    options,
    path = "/codec/encode",
    tag = "codec",
    operation_id = "codecEncodePreflight",
    summary = "CORS preflight (answered for SLIPWAY_CODEC_TRUSTED_ORIGINS only)",
    responses((status = 204, description = "CORS headers for a trusted origin")),
)]
pub async fn preflight_encode(State(app): State<AppState>, headers: HeaderMap) -> Response {
    preflight(&app, &headers)
}

/// `OPTIONS /codec/decode`: the CORS preflight of a trusted UI origin.
#[utoipa::path(
    options,
    path = "/codec/decode",
    tag = "codec",
    operation_id = "codecDecodePreflight",
    summary = "CORS preflight (answered for SLIPWAY_CODEC_TRUSTED_ORIGINS only)",
    responses((status = 204, description = "CORS headers for a trusted origin")),
)]
pub async fn preflight_decode(State(app): State<AppState>, headers: HeaderMap) -> Response {
    preflight(&app, &headers)
}

fn preflight(app: &AppState, headers: &HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(app, headers, &mut resp);
    resp
}

fn convert(
    app: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: Result<Json<Payloads>, axum::extract::rejection::JsonRejection>,
    op: fn(&slipway_codec::Keys, &Payloads) -> Result<Payloads, WireError>,
) -> Response {
    let mut resp = match authorise(app, peer, headers).and_then(|()| {
        let Json(body) = body.map_err(crate::error::json_rejection)?;
        match &app.settings.encryption {
            Encryption::On(keys) => op(keys, &body).map_err(|e| match e {
                WireError::Malformed(m) => ApiError::bad_request("MALFORMED_PAYLOAD", m),
                WireError::Codec(e) => ApiError::unprocessable("UNDECODABLE_PAYLOAD", e.to_string()),
            }),
            // Encryption off: nothing to encode or decode.
            Encryption::Off => Ok(body),
        }
    }) {
        Ok(payloads) => Json(payloads).into_response(),
        Err(e) => e.into_response(),
    };
    cors(app, headers, &mut resp);
    resp
}

/// An operator's token, or a trusted local UI.
fn authorise(app: &AppState, peer: std::net::SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if header.is_none() && peer.ip().is_loopback() && trusted_origin(app, headers).is_some() {
        return Ok(());
    }
    let secret = app.settings.jwt_secret.expose_secret().as_bytes();
    let claims = auth::verify_bearer_pinned(header, secret, &app.settings.jwt_pins)
        .map_err(|e| ApiError::unauthorized(e.code(), e.to_string()))?;
    if claims.is_admin() { Ok(()) } else { Err(ApiError::admin_only()) }
}

/// The request's `Origin`, if `SLIPWAY_CODEC_TRUSTED_ORIGINS` lists it.
fn trusted_origin<'a>(app: &AppState, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    app.settings.codec_trusted_origins.iter().any(|o| o == text).then_some(origin)
}

/// CORS headers for a trusted origin (the Web UI's browser calls from another port).
fn cors(app: &AppState, headers: &HeaderMap, resp: &mut Response) {
    if let Some(origin) = trusted_origin(app, headers) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-namespace"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(Method::POST.as_str()));
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, extract::ConnectInfo, http::Request};
    use tower::ServiceExt;

    use crate::{AppState, StarterSettings, settings::required_and};

    const UI: &str = "http://localhost:8233";

    async fn call(
        app: &axum::Router,
        method: &str,
        origin: Option<&str>,
        peer: [u8; 4],
    ) -> (u16, Option<String>, String) {
        let mut req =
            Request::builder().method(method).uri("/codec/decode").header("content-type", "application/json");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let mut req = req.body(Body::from(r#"{"payloads":[]}"#)).unwrap();
        req.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from((peer, 9))));
        let resp = app.clone().oneshot(req).await.unwrap();
        let allowed =
            resp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, allowed, String::from_utf8_lossy(&body).into_owned())
    }

    /// Only the local UI origins configured are answered without a token, from this machine;
    /// CORS names them and nobody else.
    #[tokio::test]
    async fn a_trusted_local_ui_is_answered_and_anyone_else_needs_an_operators_token() {
        let settings = StarterSettings::from_lookup(required_and(&[
            ("SLIPWAY_PAYLOAD_ENCRYPTION", ""),
            ("SLIPWAY_PAYLOAD_KEYS", "k1:0000000000000000000000000000000000000000000000000000000000000001"),
            ("SLIPWAY_CODEC_TRUSTED_ORIGINS", UI),
        ]))
        .unwrap();
        let app = crate::app(AppState::offline(settings));
        assert_eq!(call(&app, "OPTIONS", Some(UI), [127, 0, 0, 1]).await.0, 204);
        assert_eq!(call(&app, "OPTIONS", Some(UI), [127, 0, 0, 1]).await.1.as_deref(), Some(UI));
        let (status, allowed, body) = call(&app, "POST", Some(UI), [127, 0, 0, 1]).await;
        assert_eq!((status, allowed.as_deref(), body.as_str()), (200, Some(UI), r#"{"payloads":[]}"#));
        let (status, allowed, body) = call(&app, "POST", Some("http://evil.example"), [127, 0, 0, 1]).await;
        assert_eq!((status, allowed), (401, None), "{body}");
        assert_eq!(call(&app, "POST", Some(UI), [10, 0, 0, 7]).await.0, 401, "not from this machine");
        assert_eq!(call(&app, "POST", None, [127, 0, 0, 1]).await.0, 401);
    }
}
