//! Supabase Management API (`/supabase`, real base `https://api.supabase.com`).
//!
//! The product creates a Supabase project per customer, waits until it is healthy, reads its
//! API keys and applies its schema migrations over the API, so those calls are emulated:
//! projects (create, list, get, delete), service health, legacy API keys and "run a query".
//! Errors are `{"message": ...}`, the configured Bearer token (`SUPABASE_MANAGEMENT_TOKEN`) is
//! required (any other is 401 `Unauthorized`), and every answer carries the
//! `X-RateLimit-*` headers of the real API's limit of 120 requests per minute, counted per
//! token and scope (one project, or the account), with 429 and `Retry-After` beyond it.
//!
//! Project names are not unique, even within an organization: the description declares no
//! conflict for `POST /v1/projects`, so each create makes a project.
//!
//! A new project is `COMING_UP` until `supabase_ready_ms` have passed since its creation,
//! then `ACTIVE_HEALTHY`; like Hetzner actions, this is computed from timestamps on every
//! request rather than driven by timers.
//!
//! The sandbox cannot run SQL. `POST /v1/projects/{ref}/database/query` therefore emulates
//! only the migration bookkeeping the product does, and records every other statement in the
//! project's `executed` list (see `/_sandbox/state`) so tests can check what was applied, in
//! order. Keywords match case-insensitively, with the spacing shown:
//!
//! - a query containing `-- slipway:fail` fails with a Postgres syntax error (400) and records
//!   nothing, to exercise the product's failure path;
//! - `CREATE TABLE IF NOT EXISTS public.slipway_schema_migrations ...;` (up to the next `;`)
//!   creates the bookkeeping table;
//! - `INSERT INTO public.slipway_schema_migrations (version) VALUES ('<v>') ...;` records the
//!   version `<v>` (`''` in it is a quote): 400 if the table was never created, and 400
//!   (unique violation) if `<v>` is already recorded unless the statement says `ON CONFLICT`;
//! - a query that is exactly `SELECT version FROM public.slipway_schema_migrations ORDER BY
//!   version` (any whitespace, optional `;`) returns `[{"version": ...}]` sorted, or 400
//!   (`relation ... does not exist`) before the table exists;
//! - whatever text remains once the bookkeeping statements are cut out of a query is recorded
//!   as one `executed` entry; every successful query answers 201 `[]`.
//!
//! The database password is required but never stored, so it cannot leak into the inventory.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};

use crate::state::{
    Shared, credential, hmac_hex, json_response, parse_body, random_alnum, random_lower, zulu,
};

/// Requests per minute, per token and scope.
const RATE_LIMIT: u32 = 120;
/// `region` values the API accepts (`V1CreateProjectBody` in Supabase's OpenAPI spec).
const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ap-east-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "eu-central-1",
    "eu-central-2",
    "ca-central-1",
    "ap-south-1",
    "sa-east-1",
];
/// Services `GET /v1/projects/{ref}/health` knows (the `services` enum of Supabase's
/// description).
const SERVICES: &[&str] =
    &["auth", "db", "db_postgres_user", "pooler", "realtime", "rest", "storage", "pg_bouncer"];
const POSTGRES_VERSION: &str = "15.8.1.085";

const FAIL_MARKER: &str = "-- slipway:fail";
const CREATE_TABLE: &str = "create table if not exists public.slipway_schema_migrations";
const INSERT_VERSION: &str = "insert into public.slipway_schema_migrations (version) values ('";
const SELECT_VERSIONS: &str = "select version from public.slipway_schema_migrations order by version";
const NO_TABLE: &str = "ERROR: 42P01: relation \"public.slipway_schema_migrations\" does not exist";

#[derive(Default)]
pub(crate) struct SupabaseState {
    projects: Vec<Project>,
    next_id: u64,
    /// Fixed one-minute windows keyed by (token, scope): when the window began, requests in it.
    windows: HashMap<(String, String), (DateTime<Utc>, u32)>,
}

struct Project {
    /// The numeric id `DELETE` answers with (`V1ProjectRefResponse.id`).
    id: u64,
    reference: String,
    organization_id: String,
    name: String,
    region: String,
    created: DateTime<Utc>,
    ready_at: DateTime<Utc>,
    /// Signs the project's API keys.
    jwt_secret: String,
    migrations_table: bool,
    migrations: Vec<String>,
    executed: Vec<String>,
}

impl Project {
    fn healthy(&self, now: DateTime<Utc>) -> bool {
        now >= self.ready_at
    }

    fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.healthy(now) { "ACTIVE_HEALTHY" } else { "COMING_UP" }
    }

    fn to_json(&self, now: DateTime<Utc>) -> Value {
        json!({
            "id": self.reference, "ref": self.reference, "organization_id": self.organization_id,
            "organization_slug": self.organization_id,
            "name": self.name, "region": self.region, "created_at": zulu(self.created),
            "status": self.status(now),
            "database": {"host": format!("db.{}.supabase.co", self.reference), "version": POSTGRES_VERSION,
                "postgres_engine": "15", "release_channel": "ga"},
        })
    }

    /// A legacy API key: an HS256 JWT for `role`, as the real `anon` and `service_role` keys are.
    fn api_key(&self, role: &str) -> String {
        let iat = self.created.timestamp();
        let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({"iss": "supabase", "ref": self.reference, "role": role, "iat": iat,
            "exp": iat + 10 * 365 * 24 * 3600});
        let payload = base64url(claims.to_string().as_bytes());
        let signed = format!("{header}.{payload}");
        let signature = hex::decode(hmac_hex(&self.jwt_secret, signed.as_bytes())).unwrap_or_default();
        format!("{signed}.{}", base64url(&signature))
    }

    /// Runs `query` under the bookkeeping protocol of the module docs: the rows, or the
    /// Postgres error message. A failing query changes nothing.
    fn execute(&mut self, query: &str) -> Result<Vec<Value>, String> {
        if query.contains(FAIL_MARKER) {
            return Err(format!("ERROR: 42601: syntax error at or near \"{FAIL_MARKER}\""));
        }
        let normalized = query.to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        if normalized.trim_end_matches(';').trim_end() == SELECT_VERSIONS {
            if !self.migrations_table {
                return Err(NO_TABLE.to_owned());
            }
            let mut versions = self.migrations.clone();
            versions.sort();
            return Ok(versions.into_iter().map(|v| json!({"version": v})).collect());
        }
        let mut rest = query.to_owned();
        let mut creates = false;
        while let Some((start, end)) = statement(&rest, CREATE_TABLE, 0) {
            rest.replace_range(start..end, "");
            creates = true;
        }
        let mut versions: Vec<String> = Vec::new();
        while let Some(start) = rest.to_ascii_lowercase().find(INSERT_VERSION) {
            let value_at = start + INSERT_VERSION.len();
            let Some(len) = string_literal_len(&rest[value_at..]) else {
                return Err("ERROR: 42601: unterminated quoted string".to_owned());
            };
            let version = rest[value_at..value_at + len].replace("''", "'");
            let (_, end) = statement(&rest, INSERT_VERSION, value_at + len).unwrap_or((start, rest.len()));
            let on_conflict = rest[start..end].to_ascii_lowercase().contains("on conflict");
            if !(self.migrations_table || creates) {
                return Err(NO_TABLE.to_owned());
            }
            if !on_conflict && (self.migrations.contains(&version) || versions.contains(&version)) {
                return Err(format!(
                    "ERROR: 23505: duplicate key value violates unique constraint \
                     \"slipway_schema_migrations_pkey\"\nDETAIL: Key (version)=({version}) already exists."
                ));
            }
            if !versions.contains(&version) && !self.migrations.contains(&version) {
                versions.push(version);
            }
            rest.replace_range(start..end, "");
        }
        self.migrations_table |= creates;
        self.migrations.extend(versions);
        let rest = rest.trim();
        if !rest.is_empty() {
            self.executed.push(rest.to_owned());
        }
        Ok(Vec::new())
    }
}

/// Length of a SQL string literal's body (`''` is an escaped quote) up to its closing quote.
fn string_literal_len(text: &str) -> Option<usize> {
    let mut i = 0;
    loop {
        i += text[i..].find('\'')?;
        if !text[i + 1..].starts_with('\'') {
            return Some(i);
        }
        i += 2;
    }
}

/// Byte range of the first statement starting with `prefix` (lowercase; matched without
/// regard to case), through the first `;` at or after `from` past its start, or to the end.
fn statement(text: &str, prefix: &str, from: usize) -> Option<(usize, usize)> {
    let start = text.to_ascii_lowercase().find(prefix)?;
    let search = from.max(start + prefix.len());
    let end = text[search..].find(';').map_or(text.len(), |i| search + i + 1);
    Some((start, end))
}

/// Unpadded base64url, as used in JWTs.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl SupabaseState {
    /// Projects with their recorded SQL, for `/_sandbox/state` (no passwords, no keys).
    pub(crate) fn dump(&self) -> Value {
        let now = Utc::now();
        let projects: Vec<Value> = self
            .projects
            .iter()
            .map(|p| {
                let mut project = p.to_json(now);
                project["migrations_table"] = json!(p.migrations_table);
                project["migrations"] = json!(p.migrations);
                project["executed"] = json!(p.executed);
                project
            })
            .collect();
        json!({"projects": projects})
    }

    fn project(&mut self, reference: &str) -> Option<&mut Project> {
        self.projects.iter_mut().find(|p| p.reference == reference)
    }
}

pub(crate) fn router(app: Shared) -> Router<Shared> {
    Router::new()
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/projects/{ref}", get(get_project).delete(delete_project))
        .route("/v1/projects/{ref}/health", get(health))
        .route("/v1/projects/{ref}/api-keys", get(api_keys))
        .route("/v1/projects/{ref}/database/query", post(run_query))
        .fallback(|method: Method, uri: Uri| async move {
            message(StatusCode::NOT_FOUND, &format!("Cannot {method} {}", uri.path()))
        })
        .layer(from_fn_with_state(app, guard))
}

fn message(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"message": message}))
}

fn project_not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Project not found")
}

/// Authentication, then the rate limit, with `X-RateLimit-*` headers on every answer.
async fn guard(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = credential(req.headers()).map(str::to_owned) else {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    if token != app.config.supabase_token {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let scope = match req.uri().path().strip_prefix("/v1/projects/") {
        Some(rest) => format!("project:{}", rest.split('/').next().unwrap_or_default()),
        None => "account".to_owned(),
    };
    let (allowed, remaining, reset) = {
        let mut state = app.lock();
        let now = Utc::now();
        let window = state.supabase.windows.entry((token, scope)).or_insert((now, 0));
        if now - window.0 >= Duration::minutes(1) {
            *window = (now, 0);
        }
        let allowed = window.1 < RATE_LIMIT;
        if allowed {
            window.1 += 1;
        }
        let left_ms = (window.0 + Duration::minutes(1) - now).num_milliseconds().max(0);
        (allowed, RATE_LIMIT - window.1, (left_ms as u64).div_ceil(1000).max(1))
    };
    let mut response = if allowed {
        next.run(req).await
    } else {
        let mut response = message(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        response.headers_mut().insert("retry-after", HeaderValue::from(reset));
        response
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    response
}

/// The request body as a JSON object, or why it is not one.
fn object_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    match parse_body(body)? {
        Value::Object(body) => Ok(body),
        _ => Err("Request body must be a JSON object".to_owned()),
    }
}

async fn create_project(State(app): State<Shared>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(body) => body,
        Err(e) => return message(StatusCode::BAD_REQUEST, &e),
    };
    let field = |key: &str| body.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    // Supabase validates the body with class-validator; the exact wording is a guess.
    // Required by the Management API's description: `db_pass`, `name`, `organization_slug`
    // (`organization_id` is deprecated and no longer enough).
    if let Some(missing) = ["db_pass", "name", "organization_slug"].into_iter().find(|k| field(k).is_none()) {
        return message(StatusCode::BAD_REQUEST, &format!("{missing} should not be empty"));
    }
    let (name, organization_id) =
        (field("name").unwrap_or_default(), field("organization_slug").unwrap_or_default());
    let region = field("region").unwrap_or("us-east-1");
    if name.contains('.') {
        return message(StatusCode::BAD_REQUEST, "name should not contain dots");
    }
    if !REGIONS.contains(&region) {
        let allowed = REGIONS.join(", ");
        return message(
            StatusCode::BAD_REQUEST,
            &format!("region must be one of the following values: {allowed}"),
        );
    }
    let ready_ms = app.config.supabase_ready_ms;
    let mut state = app.lock();
    let s = &mut state.supabase;
    // Names are not unique: the description declares no conflict for a create, so a second
    // create with a name makes a second project.
    s.next_id += 1;
    let created = Utc::now();
    let project = Project {
        id: s.next_id,
        reference: random_lower(20),
        organization_id: organization_id.to_owned(),
        name: name.to_owned(),
        region: region.to_owned(),
        created,
        ready_at: created + Duration::milliseconds(ready_ms as i64),
        jwt_secret: random_alnum(40),
        migrations_table: false,
        migrations: Vec::new(),
        executed: Vec::new(),
    };
    tracing::info!(reference = %project.reference, name, "supabase: project created");
    let body = project.to_json(created);
    s.projects.push(project);
    json_response(StatusCode::CREATED, body)
}

async fn list_projects(State(app): State<Shared>) -> Response {
    let state = app.lock();
    let now = Utc::now();
    json_response(StatusCode::OK, Value::from_iter(state.supabase.projects.iter().map(|p| p.to_json(now))))
}

async fn get_project(State(app): State<Shared>, Path(reference): Path<String>) -> Response {
    match app.lock().supabase.project(&reference) {
        Some(p) => json_response(StatusCode::OK, p.to_json(Utc::now())),
        None => project_not_found(),
    }
}

async fn delete_project(State(app): State<Shared>, Path(reference): Path<String>) -> Response {
    let mut state = app.lock();
    let projects = &mut state.supabase.projects;
    let Some(index) = projects.iter().position(|p| p.reference == reference) else {
        return project_not_found();
    };
    let p = projects.remove(index);
    tracing::info!(reference = %p.reference, "supabase: project deleted");
    json_response(StatusCode::OK, json!({"id": p.id, "ref": p.reference, "name": p.name}))
}

/// `?services=db&services=rest`: one health entry per service asked for, in that order.
async fn health(
    State(app): State<Shared>,
    Path(reference): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let services = requested_services(&query);
    let mut state = app.lock();
    let Some(p) = state.supabase.project(&reference) else {
        return project_not_found();
    };
    let now = Utc::now();
    let (healthy, status) = (p.healthy(now), p.status(now));
    let body: Vec<Value> =
        services.iter().map(|name| json!({"name": name, "healthy": healthy, "status": status})).collect();
    json_response(StatusCode::OK, Value::from(body))
}

/// The services a health request asks for. Supabase's description declares `services` an
/// array of its service names with the default serialization of a query parameter (style form,
/// explode true), so each is its own `services=` pair; `services=db,rest` is one value, and not
/// a service name. The description declares no 400 for this operation, so a value that is not
/// a service name is left out of the answer rather than refused: a client sending the comma
/// form hears of no service at all, and never sees its project healthy.
fn requested_services(query: &[(String, String)]) -> Vec<&str> {
    query
        .iter()
        .filter(|(k, v)| k == "services" && SERVICES.contains(&v.as_str()))
        .map(|(_, v)| v.as_str())
        .collect()
}

async fn api_keys(State(app): State<Shared>, Path(reference): Path<String>) -> Response {
    let mut state = app.lock();
    let Some(p) = state.supabase.project(&reference) else {
        return project_not_found();
    };
    let keys: Vec<Value> = ["anon", "service_role"]
        .iter()
        .map(|role| json!({"name": role, "api_key": p.api_key(role), "id": role, "type": "legacy"}))
        .collect();
    json_response(StatusCode::OK, Value::from(keys))
}

async fn run_query(State(app): State<Shared>, Path(reference): Path<String>, body: Bytes) -> Response {
    let body = match object_body(&body) {
        Ok(body) => body,
        Err(e) => return message(StatusCode::BAD_REQUEST, &e),
    };
    let Some(query) = body.get("query").and_then(Value::as_str).filter(|q| !q.trim().is_empty()) else {
        return message(StatusCode::BAD_REQUEST, "query should not be empty");
    };
    let mut state = app.lock();
    let Some(p) = state.supabase.project(&reference) else {
        return project_not_found();
    };
    // Guess: the real status while the database is still coming up is not documented.
    if !p.healthy(Utc::now()) {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Project is not ready");
    }
    match p.execute(query) {
        Ok(rows) => json_response(StatusCode::CREATED, Value::from(rows)),
        Err(e) => message(StatusCode::BAD_REQUEST, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        let now = Utc::now();
        Project {
            id: 1,
            reference: "abcdefghijklmnopqrst".into(),
            organization_id: "org".into(),
            name: "p".into(),
            region: "eu-central-1".into(),
            created: now,
            ready_at: now,
            jwt_secret: "secret".into(),
            migrations_table: false,
            migrations: Vec::new(),
            executed: Vec::new(),
        }
    }

    #[test]
    fn migration_bookkeeping_protocol() {
        let mut p = project();
        let select = "select version\n  from public.slipway_schema_migrations order by version;";
        assert!(p.execute(select).unwrap_err().contains("does not exist"));
        let insert = "INSERT INTO public.slipway_schema_migrations (version) VALUES ('0001');";
        assert!(p.execute(insert).unwrap_err().contains("does not exist"));
        let create =
            "CREATE TABLE IF NOT EXISTS public.slipway_schema_migrations (version text primary key);";
        assert_eq!(p.execute(create), Ok(vec![]));
        assert!(p.migrations_table && p.executed.is_empty());

        let m2 = "BEGIN;\nCREATE TABLE b (id int);\nINSERT INTO public.slipway_schema_migrations (version) \
                  VALUES ('0002');\nCOMMIT;";
        assert_eq!(p.execute(m2), Ok(vec![]));
        let m1 =
            "create table a (id int); insert into public.slipway_schema_migrations (version) values ('0001')";
        p.execute(m1).unwrap();
        assert_eq!(p.migrations, ["0002", "0001"]);
        assert_eq!(p.executed, ["BEGIN;\nCREATE TABLE b (id int);\n\nCOMMIT;", "create table a (id int);"]);
        assert_eq!(p.execute(select), Ok(vec![json!({"version": "0001"}), json!({"version": "0002"})]));

        assert!(p.execute(insert).unwrap_err().contains("23505"));
        let again =
            "INSERT INTO public.slipway_schema_migrations (version) VALUES ('0001') ON CONFLICT DO NOTHING;";
        assert_eq!(p.execute(again), Ok(vec![]));
        let failing = "CREATE TABLE c (id int); -- slipway:fail\nINSERT INTO public.slipway_schema_migrations \
                       (version) VALUES ('0003');";
        assert!(p.execute(failing).unwrap_err().contains("syntax error at or near \"-- slipway:fail\""));
        assert_eq!((p.migrations.len(), p.executed.len()), (2, 2));

        let quoted =
            "INSERT INTO public.slipway_schema_migrations (version) VALUES ('003_o''brien'); SELECT 1;";
        assert_eq!(p.execute(quoted), Ok(vec![]));
        assert_eq!((p.migrations[2].as_str(), p.executed[2].as_str()), ("003_o'brien", "SELECT 1;"));
    }

    #[test]
    fn health_reads_services_as_repeated_parameters() {
        let pairs = |q: &[(&str, &str)]| -> Vec<(String, String)> {
            q.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let repeated =
            pairs(&[("services", "db"), ("services", "rest"), ("timeout_ms", "10"), ("services", "auth")]);
        assert_eq!(requested_services(&repeated), ["db", "rest", "auth"]);
        assert!(requested_services(&pairs(&[("services", "db,rest,auth")])).is_empty());
        assert!(requested_services(&pairs(&[("services[]", "db")])).is_empty());
        assert_eq!(
            requested_services(&pairs(&[("services", "kitchen"), ("services", "pg_bouncer")])),
            ["pg_bouncer"]
        );
    }

    #[test]
    fn api_keys_are_jwt_shaped() {
        assert_eq!(base64url(b"{\"alg\":\"HS256\",\"typ\":\"JWT\"}"), "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
        assert_eq!(
            (base64url(b"a"), base64url(b"ab"), base64url(b"abc")),
            ("YQ".into(), "YWI".into(), "YWJj".into())
        );
        let key = project().api_key("anon");
        let parts: Vec<&str> = key.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].len(), 43);
    }
}
