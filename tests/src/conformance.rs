//! Checking what Slipway sends and what the sandbox answers against each provider's own API
//! description (`contracts/<provider>/openapi.json`, pinned by `scripts/pin-contracts`).
//!
//! An exchange (as the sandbox records it, `GET /_sandbox/exchanges`) is checked on both sides:
//! - **request**: a known operation (method + path template of the provider's description), its
//!   required path, query and header parameters present and no undeclared query parameter, each
//!   query value read the way its `style` and `explode` say and checked against its schema (see
//!   [`Contract::check_query_values`]), the
//!   credential the operation's security scheme asks for (scheme only: the log never holds
//!   secrets), a body where one is required, and a JSON body valid against the operation's
//!   schema (form bodies, Stripe's, are checked for undeclared top-level fields);
//! - **response**: a status the operation declares, and a JSON body valid against the schema of
//!   that status (provider error bodies included). Answers a test injected as faults (marked
//!   `x-sandbox-fault`) are not the emulation's and are not checked.
//!
//! OpenAPI 3.0 schemas are JSON Schema draft 4 with `nullable`; they are rewritten to draft 4
//! (`nullable: true` becomes "or null") before validation. 3.1 schemas are validated as JSON
//! Schema 2020-12.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// One problem found in an exchange.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// `github`, `stripe`, …
    pub provider: String,
    /// `METHOD /template` (or the raw path when no operation matched).
    pub operation: String,
    /// `request` or `response`.
    pub side: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({}): {}", self.provider, self.operation, self.side, self.message)
    }
}

/// The sandbox prefix of each provider, longest first.
pub const PREFIXES: [(&str, &str); 8] = [
    ("/hetzner/v1", "hetzner"),
    ("/tailscale", "tailscale"),
    ("/github", "github"),
    ("/stripe", "stripe"),
    ("/supabase", "supabase"),
    ("/vercel", "vercel"),
    ("/n8n", "n8n"),
    ("/openai", "openai"),
];

/// The provider a sandbox path belongs to, and the path the provider would see.
pub fn provider_of(path: &str) -> Option<(&'static str, &str)> {
    PREFIXES.iter().find_map(|(prefix, name)| {
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some((*name, rest))
    })
}

/// The `contracts/` folder of the repository.
pub fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts")
}

/// One provider's pinned description.
pub struct Contract {
    provider: String,
    spec: Value,
    /// The path part of the provider's server URL (e.g. `/v1`), stripped before matching.
    base: String,
    /// `(method, template, regex, literal length)`, most specific first.
    routes: Vec<(String, String, regex::Regex, usize)>,
    draft4: bool,
    /// Read `oneOf` as `anyOf` (a documented amendment for generated descriptions).
    oneof_as_anyof: bool,
}

impl Contract {
    /// Loads `contracts/<provider>/openapi.json`, with the documented amendments of
    /// `amendments.json` applied (each names why and the provider's reference page).
    pub fn load(provider: &str) -> anyhow::Result<Self> {
        let dir = contracts_dir().join(provider);
        let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("openapi.json"))?)?;
        let amendments: Value = match std::fs::read_to_string(dir.join("amendments.json")) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(_) => Value::Null,
        };
        for a in amendments["responses"].as_array().into_iter().flatten() {
            let (method, template) =
                a["operation"].as_str().unwrap_or_default().split_once(' ').unwrap_or_default();
            let status = a["status"].as_str().unwrap_or_default();
            let op = &mut spec["paths"][template][method.to_lowercase().as_str()];
            anyhow::ensure!(op.is_object(), "amendment of an unknown operation: {}", a["operation"]);
            anyhow::ensure!(
                a["why"].is_string() && a["source"].is_string(),
                "an amendment needs its why and source"
            );
            op["responses"][status] =
                json!({"description": a["why"], "content": {"application/json": {"schema": a["schema"]}}});
        }
        let mut contract = Self::from_spec(provider, spec)?;
        contract.oneof_as_anyof = amendments["oneof_as_anyof"] == json!(true);
        Ok(contract)
    }

    /// From a parsed description.
    pub fn from_spec(provider: &str, spec: Value) -> anyhow::Result<Self> {
        let server = spec["servers"][0]["url"].as_str().unwrap_or_default();
        // `https://host/v1` → `/v1`; a relative server (`/api/v1`) is the base itself.
        let base = if server.starts_with('/') {
            server
        } else {
            server.split_once("://").map_or("", |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]))
        }
        .trim_end_matches('/')
        .to_owned();
        let mut routes = Vec::new();
        for (template, item) in spec["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                let multi: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["x-multi-segment"] == json!(true))
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let mut pattern = String::from("^");
                let mut literal = 0;
                for part in template.split_inclusive(['{', '}']) {
                    if let Some(name) = part.strip_suffix('}') {
                        pattern.push_str(if multi.contains(&name) { "(.+)" } else { "([^/]+)" });
                    } else {
                        let text = part.trim_end_matches('{');
                        literal += text.len();
                        pattern.push_str(&regex::escape(text));
                    }
                }
                pattern.push('$');
                routes.push((method.to_uppercase(), template.clone(), regex::Regex::new(&pattern)?, literal));
            }
        }
        routes.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.1.cmp(&b.1)));
        let draft4 = spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.0"));
        Ok(Self { provider: provider.to_owned(), spec, base, routes, draft4, oneof_as_anyof: false })
    }

    /// The same description with every object closed: a property it does not declare is a
    /// violation. For Slipway's own document, so that a field added to an answer without its
    /// schema fails the suite (providers add fields without notice, so theirs stay open). An
    /// object composed with `allOf`, or named by `$ref`, is closed where it is used, with
    /// `unevaluatedProperties` (JSON Schema 2020-12), so the properties its members and its
    /// reference declare all count; the members themselves stay open.
    pub fn closed(mut self) -> Self {
        self.spec = close_objects(&self.spec, Position::Value);
        self
    }

    /// Every operation, as `METHOD /template`.
    pub fn operations(&self) -> Vec<String> {
        let mut ops: Vec<String> = self.routes.iter().map(|(m, t, ..)| format!("{m} {t}")).collect();
        ops.sort();
        ops
    }

    /// The operation a request calls: `(METHOD /template, operation object)`.
    pub fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let path = path.strip_prefix(&self.base).filter(|p| p.starts_with('/')).unwrap_or(path);
        self.routes.iter().find(|(m, _, re, _)| m == method && re.is_match(path)).map(|(m, t, ..)| {
            (format!("{m} {t}"), &self.spec["paths"][t.as_str()][m.to_lowercase().as_str()])
        })
    }

    /// Checks one recorded exchange whose path is relative to the provider (prefix removed).
    pub fn check(&self, exchange: &Value) -> Vec<Violation> {
        let req = &exchange["request"];
        let method = req["method"].as_str().unwrap_or_default();
        let path = req["path"].as_str().unwrap_or_default();
        let path = provider_of(path).map_or(path, |(_, rest)| rest);
        let mut out = Vec::new();
        let Some((name, op)) = self.operation(method, path) else {
            out.push(self.violation(
                &format!("{method} {path}"),
                "request",
                "not an operation of the provider's description".into(),
            ));
            return out;
        };
        let template = name.split_once(' ').map_or("", |(_, t)| t);
        let item = &self.spec["paths"][template];
        let mut v = |side: &'static str, message: String| out.push(self.violation(&name, side, message));
        for m in self.check_request(op, Some(item), req) {
            v("request", m);
        }
        // An answer a test injected (`x-sandbox-fault`) is the test's choice, not the emulation's.
        if exchange["response"]["headers"].get("x-sandbox-fault").is_none() {
            for m in self.check_response(op, &exchange["response"]) {
                v("response", m);
            }
        }
        out
    }

    /// Problems of one answer (status and JSON body, `null` for none) to `method path`, against
    /// the operation the request matched; `None` when no operation matches.
    pub fn check_answer(&self, method: &str, path: &str, status: u16, body: &Value) -> Option<Vec<String>> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        let (_, op) = self.operation(method, path)?;
        Some(self.check_response(op, &json!({"status": status, "body": body})))
    }

    fn violation(&self, operation: &str, side: &'static str, message: String) -> Violation {
        Violation { provider: self.provider.clone(), operation: operation.to_owned(), side, message }
    }

    /// The operation's parameters, then those of its path item the operation does not redefine
    /// (same `name` and `in`), as OpenAPI reads them.
    fn parameters<'a>(&'a self, op: &'a Value, template_item: Option<&'a Value>) -> Vec<&'a Value> {
        let mut params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
        if let Some(item) = template_item {
            let inherited: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| !params.iter().any(|o| o["name"] == p["name"] && o["in"] == p["in"]))
                .collect();
            params.extend(inherited);
        }
        params
    }

    fn check_request(&self, op: &Value, template_item: Option<&Value>, req: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let headers = req["headers"].as_object().cloned().unwrap_or_default();
        // Every pair, in order: a repeated key is how an exploded array travels.
        let pairs: Vec<(String, String)> = req["query"]
            .as_str()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let query: BTreeMap<&str, &str> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let params = self.parameters(op, template_item);
        for p in &params {
            let name = p["name"].as_str().unwrap_or_default();
            let required = p["required"] == json!(true);
            match p["in"].as_str() {
                Some("query") if required && !query.keys().any(|k| base_name(k) == name) => {
                    problems.push(format!("required query parameter `{name}` missing"));
                }
                Some("header") if required && !headers.contains_key(&name.to_ascii_lowercase()) => {
                    problems.push(format!("required header `{name}` missing"));
                }
                _ => {}
            }
        }
        for k in query.keys() {
            let declared =
                params.iter().any(|p| p["in"] == "query" && p["name"].as_str() == Some(base_name(k)));
            if !declared {
                problems.push(format!("query parameter `{k}` is not declared"));
            }
        }
        for p in params.iter().filter(|p| p["in"] == "query") {
            problems.extend(self.check_query_values(p, &pairs));
        }
        if let Some(m) = self.check_security(op, &headers) {
            problems.push(m);
        }
        let body = &req["body"];
        let content = &op["requestBody"]["content"];
        if body.is_null() {
            if op["requestBody"]["required"] == json!(true) {
                problems.push("request body required, none sent".into());
            }
        } else if let Some(pairs) = body.get("$form").and_then(Value::as_array) {
            let schema = &content["application/x-www-form-urlencoded"]["schema"];
            if schema.is_null() {
                problems.push("form body sent; the operation takes none".into());
            }
            let props = schema["properties"].as_object();
            for pair in pairs {
                let key = base_name(pair[0].as_str().unwrap_or_default());
                if props.is_some_and(|p| !p.contains_key(key)) {
                    problems.push(format!("form field `{key}` is not declared"));
                }
            }
        } else {
            let schema = &content["application/json"]["schema"];
            if content.is_null() {
                problems.push("body sent; the operation takes none".into());
            } else if schema.is_null() {
                problems.push("JSON body sent; the operation takes another content type".into());
            } else {
                problems.extend(self.validate(schema, body).into_iter().map(|m| format!("body: {m}")));
            }
        }
        problems
    }

    /// The credential the operation (or the description) asks for, checked by scheme.
    fn check_security(&self, op: &Value, headers: &Map<String, Value>) -> Option<String> {
        let requirements = op.get("security").or_else(|| self.spec.get("security"))?.as_array()?;
        if requirements.is_empty() || requirements.iter().any(|r| r.as_object().is_some_and(Map::is_empty)) {
            return None;
        }
        let schemes = &self.spec["components"]["securitySchemes"];
        let auth =
            headers.get("authorization").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        let satisfied = requirements.iter().any(|req| {
            req.as_object().into_iter().flatten().all(|(name, _)| {
                let s = &schemes[name.as_str()];
                match (s["type"].as_str(), s["scheme"].as_str(), s["in"].as_str()) {
                    (Some("http"), Some(scheme), _) => auth == scheme.to_ascii_lowercase(),
                    (Some("oauth2" | "openIdConnect"), ..) => auth == "bearer",
                    (Some("apiKey"), _, Some("header")) => {
                        headers.contains_key(&s["name"].as_str().unwrap_or_default().to_ascii_lowercase())
                    }
                    (Some("apiKey"), _, Some("query")) => false,
                    _ => true,
                }
            })
        });
        (!satisfied).then(|| format!("credential missing or of the wrong scheme (Authorization: `{auth}`)"))
    }

    fn check_response(&self, op: &Value, resp: &Value) -> Vec<String> {
        let status = resp["status"].as_u64().unwrap_or_default().to_string();
        let responses = &op["responses"];
        let class = format!("{}XX", &status[..1.min(status.len())]);
        let declared = [status.as_str(), class.as_str(), "default"]
            .into_iter()
            .find_map(|k| responses.get(k).map(|r| (k, r)));
        let Some((_, response)) = declared else {
            return vec![format!("status {status} is not declared")];
        };
        let body = &resp["body"];
        if body.is_null() || body.get("$text").is_some() {
            return Vec::new();
        }
        let content = response["content"].as_object();
        let schema = content.and_then(|c| {
            c.iter()
                .find(|(k, _)| k.starts_with("application/json") || k.ends_with("+json"))
                .map(|(_, v)| &v["schema"])
        });
        match schema {
            Some(schema) if !schema.is_null() => {
                self.validate(schema, body).into_iter().map(|m| format!("body: {m}")).collect()
            }
            _ if content.is_none_or(Map::is_empty) => {
                vec![format!("status {status} declares no body; one was sent")]
            }
            _ => Vec::new(),
        }
    }

    /// Problems of one query parameter's values. The values are read the way the parameter's
    /// serialization says: `style` (default `form`) and `explode` (default true for `form`). An
    /// array with `explode: true` travels as repeated parameters (`services=db&services=rest`),
    /// with `explode: false` as one value split on `,` (`|` for `pipeDelimited`, a space for
    /// `spaceDelimited`). Each item of an array, or the one value of a scalar, must read as an
    /// instance of its schema (type, enum, bounds, pattern); a scalar sent more than once, or an
    /// unexploded array sent more than once, is wrong too. `deepObject` parameters (Stripe's
    /// `expand[]`, `created[gte]`) and objects are judged by their names alone, as before.
    pub fn check_query_values(&self, param: &Value, pairs: &[(String, String)]) -> Vec<String> {
        let mut problems = Vec::new();
        let name = param["name"].as_str().unwrap_or_default();
        let style = param["style"].as_str().unwrap_or("form");
        let explode = param["explode"].as_bool().unwrap_or(style == "form");
        let schema = self.resolve(&param["schema"]);
        if style == "deepObject" || schema.is_null() {
            return problems;
        }
        for (k, _) in pairs.iter().filter(|(k, _)| k != name && base_name(k) == name) {
            problems.push(format!("query parameter `{k}`: style {style} sends it as `{name}=…`"));
        }
        let values: Vec<&str> = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect();
        let types = schema_types(schema);
        if values.is_empty() || types.contains(&"object") {
            return problems;
        }
        if !(types.contains(&"array") || types.is_empty() && schema.get("items").is_some()) {
            if values.len() > 1 {
                problems
                    .push(format!("query parameter `{name}` sent {} times; it is one value", values.len()));
            }
            for v in values {
                if let Some(m) = self.judge_text(schema, v) {
                    problems.push(format!("query parameter `{name}` = `{v}`: {m}"));
                }
            }
            return problems;
        }
        let items: Vec<&str> = if explode {
            values
        } else {
            let separator = match style {
                "pipeDelimited" => '|',
                "spaceDelimited" => ' ',
                _ => ',',
            };
            if values.len() > 1 {
                problems.push(format!(
                    "query parameter `{name}` sent {} times; it is declared one `{separator}`-separated \
                     value (style {style}, explode false)",
                    values.len()
                ));
            }
            values.iter().flat_map(|v| v.split(separator)).collect()
        };
        for item in items {
            if let Some(m) = self.judge_text(&schema["items"], item) {
                let hint = if explode && item.contains(',') {
                    format!(
                        "; an array is sent as repeated parameters (`{name}=a&{name}=b`: style {style}, \
                         explode true)"
                    )
                } else {
                    String::new()
                };
                problems.push(format!("query parameter `{name}`, item `{item}`: {m}{hint}"));
            }
        }
        problems
    }

    /// `schema`, its `$ref` followed (a few levels at most) within the description.
    fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..8 {
            match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')).and_then(|p| self.spec.pointer(p))
            {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    /// `None` if the text of a query value reads as an instance of `schema`, else the first
    /// error. A query value is text, so `42` may be the integer or the string, `true` the
    /// boolean or the string; the error reported is that of the most specific reading.
    fn judge_text(&self, schema: &Value, text: &str) -> Option<String> {
        let mut readings = Vec::new();
        if let Ok(n) = text.parse::<i64>() {
            readings.push(json!(n));
        } else if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
            readings.push(json!(f));
        }
        if let Ok(b) = text.parse::<bool>() {
            readings.push(json!(b));
        }
        readings.push(json!(text));
        // Small parameter schemas compile alone; the component schemas only when referenced.
        let with_components = schema.to_string().contains("\"$ref\"");
        let mut first = None;
        for reading in &readings {
            let errors = match self.validator(schema, with_components) {
                Ok(validator) => validator.iter_errors(reading).map(|e| e.to_string()).collect(),
                Err(e) => vec![e],
            };
            if errors.is_empty() {
                return None;
            }
            if first.is_none() {
                first = errors.into_iter().next();
            }
        }
        first.map(|m| truncate(&m, 200))
    }

    fn validator(&self, schema: &Value, with_components: bool) -> Result<jsonschema::Validator, String> {
        // The schema, with the description's component schemas beside it so its `$ref`s
        // (`#/components/schemas/…`) resolve within the one document.
        let document = if with_components {
            json!({"allOf": [schema], "components": {"schemas": self.spec["components"]["schemas"]}})
        } else {
            json!({"allOf": [schema]})
        };
        let mut schema = if self.draft4 { openapi30_to_draft4(&document) } else { document };
        if self.oneof_as_anyof {
            schema = rename_key(&schema, "oneOf", "anyOf");
        }
        let draft = if self.draft4 { jsonschema::Draft::Draft4 } else { jsonschema::Draft::Draft202012 };
        jsonschema::options()
            .with_draft(draft)
            .build(&schema)
            .map_err(|e| format!("schema does not compile: {e}"))
    }

    /// Errors of `instance` against an OpenAPI schema (first 5, deepest paths).
    pub fn validate(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let validator = match self.validator(schema, true) {
            Ok(v) => v,
            Err(e) => return vec![e],
        };
        validator
            .iter_errors(instance)
            .take(100)
            .map(|e| {
                // "<whole object> is not valid under …": the object is in the log already.
                let m = e.to_string();
                let m = m.rsplit_once("} is ").map_or(m.clone(), |(_, rest)| format!("the object is {rest}"));
                format!("{} at `{}`", truncate(&m, 200), e.instance_path)
            })
            .collect()
    }
}

/// Where a schema sits: used as a value, or a member of an `allOf` (or a component definition,
/// which is a member of whatever references it).
#[derive(Clone, Copy, PartialEq)]
enum Position {
    Value,
    Member,
}

/// `node` (a description, or one schema of it) with every object used as a value closed: see
/// [`Contract::closed`]. Maps of their own (`additionalProperties`) stay as declared.
fn close_objects(node: &Value, at: Position) -> Value {
    match node {
        Value::Array(items) => Value::Array(items.iter().map(|v| close_objects(v, at)).collect()),
        Value::Object(map) => {
            let each = |v: &Value, at: Position| -> Value {
                let entries = v.as_object().into_iter().flatten();
                Value::Object(entries.map(|(name, s)| (name.clone(), close_objects(s, at))).collect())
            };
            let mut out = Map::new();
            for (k, v) in map {
                let inner = match k.as_str() {
                    "allOf" => close_objects(v, Position::Member),
                    "properties" => each(v, Position::Value),
                    "schemas" => each(v, Position::Member),
                    "example" | "examples" | "enum" | "const" | "default" => v.clone(),
                    _ => close_objects(v, Position::Value),
                };
                out.insert(k.clone(), inner);
            }
            let named = map
                .get("$ref")
                .and_then(Value::as_str)
                .is_some_and(|r| r.starts_with("#/components/schemas/"));
            let object = named || map.contains_key("properties") || map.contains_key("allOf");
            let open = map.contains_key("additionalProperties") || map.contains_key("unevaluatedProperties");
            if at == Position::Value && object && !open {
                out.insert("unevaluatedProperties".into(), json!(false));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `schema` with every `from` keyword renamed `to`.
fn rename_key(schema: &Value, from: &str, to: &str) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (if k == from { to.to_owned() } else { k.clone() }, rename_key(v, from, to)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| rename_key(v, from, to)).collect()),
        other => other.clone(),
    }
}

/// The types a schema declares: `type` as one name (3.0) or a list (3.1); none if it has none.
fn schema_types(schema: &Value) -> Vec<&str> {
    match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// `metadata[userId]` → `metadata`; `items[0][price]` → `items`; `expand[]` → `expand`.
fn base_name(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// OpenAPI 3.0 → JSON Schema draft 4: `nullable: true` becomes "this, or null", OpenAPI-only
/// keywords are dropped.
pub fn openapi30_to_draft4(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                match k.as_str() {
                    "nullable" | "discriminator" | "xml" | "externalDocs" | "example" | "deprecated"
                    | "readOnly" | "writeOnly" => {}
                    "properties" | "patternProperties" | "definitions" => {
                        let inner = v.as_object().map(|m| {
                            m.iter()
                                .map(|(name, s)| (name.clone(), openapi30_to_draft4(s)))
                                .collect::<Map<_, _>>()
                        });
                        out.insert(k.clone(), inner.map_or(Value::Null, Value::Object));
                    }
                    _ => {
                        out.insert(k.clone(), openapi30_to_draft4(v));
                    }
                }
            }
            if map.get("nullable") == Some(&json!(true)) {
                json!({"anyOf": [Value::Object(out), {"type": "null"}]})
            } else {
                Value::Object(out)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(openapi30_to_draft4).collect()),
        other => other.clone(),
    }
}

/// Checks every exchange against its provider's contract; exchanges of providers without a
/// loaded contract are reported as such.
pub fn check_all(contracts: &BTreeMap<String, Contract>, exchanges: &[Value]) -> Vec<Violation> {
    let mut out = Vec::new();
    for ex in exchanges {
        let path = ex["request"]["path"].as_str().unwrap_or_default();
        let Some((provider, _)) = provider_of(path) else { continue };
        match contracts.get(provider) {
            Some(c) => out.extend(c.check(ex)),
            None => out.push(Violation {
                provider: provider.to_owned(),
                operation: format!("{} {path}", ex["request"]["method"].as_str().unwrap_or_default()),
                side: "request",
                message: "no pinned contract".into(),
            }),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The operations the exchanges called: provider → `METHOD /template` (unmatched ones as the raw
/// path).
pub fn operations_called(
    contracts: &BTreeMap<String, Contract>,
    exchanges: &[Value],
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ex in exchanges {
        let method = ex["request"]["method"].as_str().unwrap_or_default();
        let Some((provider, rest)) = provider_of(ex["request"]["path"].as_str().unwrap_or_default()) else {
            continue;
        };
        let name = contracts
            .get(provider)
            .and_then(|c| c.operation(method, rest))
            .map_or_else(|| format!("{method} {rest}"), |(n, _)| n);
        let ops = out.entry(provider.to_owned()).or_default();
        if !ops.contains(&name) {
            ops.push(name);
        }
    }
    for ops in out.values_mut() {
        ops.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A description of one `GET /things` taking `params`.
    fn contract(openapi: &str, params: Value) -> Contract {
        let spec = json!({
            "openapi": openapi,
            "paths": {"/things": {"get": {"parameters": params, "responses": {"200": {"description": ""}}}}},
            "components": {"schemas": {"Colour": {"type": "string", "enum": ["red", "blue"]}}},
        });
        Contract::from_spec("test", spec).expect("a description")
    }

    /// The request problems of `GET /things?<query>`.
    fn problems(contract: &Contract, query: &str) -> Vec<String> {
        let exchange = json!({
            "request": {"method": "GET", "path": "/things", "query": query, "headers": {}},
            "response": {"status": 200},
        });
        contract.check(&exchange).into_iter().map(|v| v.message).collect()
    }

    #[test]
    fn a_closed_description_refuses_undeclared_fields_at_any_depth_through_all_of_and_refs() {
        let spec = json!({
            "openapi": "3.1.0",
            "paths": {"/agents": {"get": {"responses": {"200": {"description": "", "content": {
                "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/View"}}}}}}}}},
            "components": {"schemas": {
                "Record": {"type": "object", "required": ["id"], "properties": {
                    "id": {"type": "string"},
                    "audit": {"type": "array", "items": {"type": "object", "properties": {"to": {"type": "string"}}}},
                    "owner": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Owner"}]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                }},
                "Owner": {"type": "object", "properties": {"email": {"type": "string"}}},
                "View": {"allOf": [{"$ref": "#/components/schemas/Record"},
                                   {"type": "object", "properties": {"workflow_id": {"type": "string"}}}]},
            }},
        });
        let open = Contract::from_spec("test", spec.clone()).expect("a description");
        let closed = Contract::from_spec("test", spec).expect("a description").closed();
        let check =
            |c: &Contract, body: Value| c.check_answer("GET", "/agents", 200, &body).expect("an operation");
        let valid = json!([{"id": "a", "workflow_id": "agent-a", "audit": [{"to": "active"}],
                            "owner": {"email": "x@example.com"}, "labels": {"any": "thing"}}]);
        assert_eq!(check(&closed, valid), Vec::<String>::new());
        for (extra, at) in [
            (json!([{"id": "a", "secret": 1}]), "/0"),
            (json!([{"id": "a", "audit": [{"to": "active", "by": "x"}]}]), "/0/audit/0"),
            (json!([{"id": "a", "owner": {"email": "x@example.com", "token": "t"}}]), "/0/owner"),
        ] {
            assert!(check(&open, extra.clone()).is_empty(), "an open description takes {extra}");
            let found = check(&closed, extra.clone());
            assert!(found.iter().any(|m| m.contains(&format!("at `{at}`"))), "{extra}: {found:?}");
        }
    }

    #[test]
    fn supabase_health_services_travel_as_repeated_parameters() {
        let supabase = Contract::load("supabase").expect("the pinned Supabase description");
        let check = |query: &str| {
            let exchange = json!({
                "request": {"method": "GET", "path": "/supabase/v1/projects/abcdefghijklmnopqrst/health",
                            "query": query, "headers": {"authorization": "Bearer"}},
                "response": {"status": 401},
            });
            supabase.check(&exchange).into_iter().map(|v| v.message).collect::<Vec<_>>()
        };
        assert_eq!(check("services=db&services=rest&services=auth"), Vec::<String>::new());
        let found = check("services=db,rest,auth");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("query parameter `services`, item `db,rest,auth`"), "{found:?}");
        assert!(found[0].contains("is not one of") && found[0].contains("repeated parameters"), "{found:?}");
        let found = check("services=db&services=kitchen&timeout_ms=20000");
        assert!(found.iter().any(|m| m.contains("item `kitchen`")), "{found:?}");
        assert!(
            found.iter().any(|m| m.contains("`timeout_ms` = `20000`") && m.contains("maximum")),
            "{found:?}"
        );
    }

    #[test]
    fn an_exploded_array_is_repeated_an_unexploded_one_comma_separated() {
        let items = json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}});
        let exploded = contract("3.0.3", json!([{"name": "x", "in": "query", "schema": items}]));
        assert!(problems(&exploded, "x=a&x=b").is_empty());
        assert_eq!(problems(&exploded, "x=a,b").len(), 1);
        let form = json!([{"name": "x", "in": "query", "style": "form", "explode": false, "schema": items}]);
        let unexploded = contract("3.0.3", form);
        assert!(problems(&unexploded, "x=a,b").is_empty());
        let repeated = problems(&unexploded, "x=a&x=b");
        assert!(repeated.len() == 1 && repeated[0].contains("sent 2 times"), "{repeated:?}");
        let wrong = problems(&unexploded, "x=a,c");
        assert!(wrong.len() == 1 && wrong[0].contains("item `c`"), "{wrong:?}");
        let pipes = json!([{"name": "x", "in": "query", "style": "pipeDelimited", "explode": false, "schema": items}]);
        assert!(problems(&contract("3.0.3", pipes), "x=a|b").is_empty());
        // A bracketed name is not how style form sends an array.
        let bracketed = problems(&exploded, "x[]=a");
        assert!(bracketed.len() == 1 && bracketed[0].contains("`x[]`"), "{bracketed:?}");
    }

    #[test]
    fn scalars_are_judged_by_type_enum_and_bounds() {
        let params = json!([
            {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 10}},
            {"name": "b", "in": "query", "schema": {"type": "boolean"}},
            {"name": "s", "in": "query", "schema": {"type": "string", "enum": ["1", "0"]}},
            {"name": "c", "in": "query", "schema": {"$ref": "#/components/schemas/Colour"}},
            {"name": "free", "in": "query", "schema": {"type": "string"}},
        ]);
        for version in ["3.0.3", "3.1.0"] {
            let c = contract(version, params.clone());
            assert!(problems(&c, "n=3&b=true&s=1&c=red&free=42").is_empty(), "{version}");
            for (query, expected) in [
                ("n=three", "`n` = `three`"),
                ("n=1.5", "`n` = `1.5`"),
                ("n=11", "maximum"),
                ("b=yes", "`b` = `yes`"),
                ("s=2", "`s` = `2`"),
                ("c=green", "`c` = `green`"),
                ("n=1&n=2", "sent 2 times"),
            ] {
                let found = problems(&c, query);
                assert!(found.len() == 1 && found[0].contains(expected), "{version} {query}: {found:?}");
            }
        }
    }

    #[test]
    fn deep_objects_and_path_item_parameters() {
        let params = json!([{"name": "expand", "in": "query", "style": "deepObject", "explode": true,
                             "schema": {"type": "array", "items": {"type": "string", "maxLength": 3}}}]);
        assert!(problems(&contract("3.0.3", params), "expand[]=customer&expand[]=x").is_empty());
        // A parameter declared on the path item is the operation's too.
        let mut c = contract("3.0.3", json!([]));
        c.spec["paths"]["/things"]["parameters"] =
            json!([{"name": "n", "in": "query", "required": true, "schema": {"type": "integer"}}]);
        assert!(problems(&c, "n=1").is_empty());
        assert_eq!(problems(&c, "n=x").len(), 1);
        assert_eq!(problems(&c, ""), ["required query parameter `n` missing"]);
    }
}
