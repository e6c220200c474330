//! Talking to a running starter: its REST API with a freshly minted token, and the output
//! helpers (`--json` or a table) the read commands share.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::Value;
use slipway_starter::auth::Claims;
use temporalio_client::{Client, ClientOptions, Connection, envconfig::LoadClientConfigProfileOptions};

use crate::env;

/// Who to be when calling the API.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Identity {
    /// Act as this user (the token's `sub`); without it, as an admin.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Carry the admin role (implied when no --user is given).
    #[arg(long)]
    pub(crate) admin: bool,
}

impl Identity {
    /// True when the token carries `role: admin`.
    pub(crate) fn is_admin(&self) -> bool {
        self.admin || self.user.is_none()
    }

    /// An HS256 token for this identity, signed with `SLIPWAY_JWT_SECRET`, valid for an hour.
    pub(crate) fn token(&self) -> anyhow::Result<String> {
        let sub = self.user.clone().unwrap_or_else(|| "slipway-cli".to_owned());
        mint_token(&sub, self.is_admin().then_some("admin"), &env::get("SLIPWAY_JWT_SECRET"))
    }
}

/// A signed HS256 JWT with the claims the starter reads, valid for an hour.
pub(crate) fn mint_token(sub: &str, role: Option<&str>, secret: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims { sub: sub.to_owned(), role: role.map(str::to_owned), exp: now + 3600 };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Options of every command that reads the starter's API: who to be, `--json`, `--url`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    #[command(flatten)]
    pub(crate) who: Identity,
    /// Print the API's answer as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Starter URL [default: http://$SLIPWAY_HTTP_ADDR].
    #[arg(long)]
    pub(crate) url: Option<String>,
}

impl ApiArgs {
    /// A client of the API as this identity.
    pub(crate) fn api(&self) -> anyhow::Result<Api> {
        Api::new(self.url.clone(), &self.who)
    }

    /// `GET path` and print the answer: as JSON with `--json`, else as `describe` renders it.
    pub(crate) async fn show(&self, path: &str, describe: fn(&Value) -> String) -> anyhow::Result<i32> {
        let answer = self.api()?.get(path).await?;
        if self.json {
            print_json(&answer)?;
        } else {
            println!("{}", describe(&answer));
        }
        Ok(0)
    }
}

/// The starter's REST API.
pub(crate) struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// `base`: the starter's URL (`--url`, default `http://$SLIPWAY_HTTP_ADDR`).
    pub(crate) fn new(base: Option<String>, who: &Identity) -> anyhow::Result<Self> {
        let base = base.unwrap_or_else(env::starter_url).trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
        Ok(Self { base, token: who.token()?, http })
    }

    /// `GET path`: the JSON answer, or an error naming the API's `code` and `message`.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path).await
    }

    /// `POST path` (no body), the same way as [`Api::get`].
    pub(crate) async fn post(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path).await
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{status} from {url}: {}", api_error(&body));
        }
        Ok(body)
    }
}

/// `CODE: message` from the starter's error body.
pub(crate) fn api_error(body: &Value) -> String {
    match (body["code"].as_str(), body["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => body.to_string(),
    }
}

/// The error for a starter that does not answer.
pub(crate) fn unreachable(url: &str, e: reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the starter at {url}: {e}\n  is the stack running (`slipway dev`)? otherwise set --url or SLIPWAY_HTTP_ADDR"
    )
}

/// Payload encryption as the stack's processes have it: `SLIPWAY_PAYLOAD_KEYS` (else the local
/// stack's key from `scripts/dev.env`), or `SLIPWAY_PAYLOAD_ENCRYPTION=off`.
pub(crate) fn encryption() -> anyhow::Result<slipway_codec::Encryption> {
    let vars = crate::env::resolved();
    slipway_codec::Encryption::from_lookup(|k| {
        std::env::var(k).ok().filter(|v| !v.is_empty()).or_else(|| vars.get(k).cloned())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A client configured like the worker's (Temporal's env config, the same payload keys),
/// failing fast when unreachable.
pub(crate) async fn connect_temporal() -> anyhow::Result<Client> {
    let (conn_opts, mut client_opts) =
        ClientOptions::load_from_config(LoadClientConfigProfileOptions::default())
            .map_err(|e| anyhow::anyhow!("Temporal client configuration: {e}"))?;
    client_opts.data_converter = encryption()?.data_converter();
    let target = conn_opts.target.to_string();
    let connection = tokio::time::timeout(Duration::from_secs(10), Connection::connect(conn_opts))
        .await
        .map_err(|_| anyhow::anyhow!("Temporal at {target} did not answer within 10 s"))?
        .with_context(|| {
            format!("cannot reach Temporal at {target} (set TEMPORAL_ADDRESS; is `slipway dev` running?)")
        })?;
    Ok(Client::new(connection, client_opts)?)
}

/// Print `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("serialising the answer")?);
    Ok(())
}

/// Print a listing: a JSON array with `json`, `empty` on stderr when there is nothing, else a
/// table of `headers` with one `row` per item.
pub(crate) fn print_list<T: serde::Serialize>(
    items: &[T],
    json: bool,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<i32> {
    if json {
        print_json(&items)?;
    } else if items.is_empty() {
        eprintln!("{empty}");
    } else {
        let rows: Vec<Vec<String>> = items.iter().map(row).collect();
        println!("{}", table(headers, &rows));
    }
    Ok(0)
}

/// A plain text table: a header row and left-aligned columns.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A JSON value as a table cell (`-` for null / missing).
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATUS"],
            &[vec!["a-long-id".into(), "active".into()], vec!["b".into(), "-".into()]],
        );
        assert_eq!(t, "ID         STATUS\na-long-id  active\nb          -");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(3)), "3");
    }

    #[test]
    fn tokens_verify_with_the_starter_and_carry_the_role() {
        let t = mint_token("u1", Some("admin"), "s").unwrap();
        let claims = slipway_starter::auth::verify_bearer(Some(&format!("Bearer {t}")), b"s").unwrap();
        assert_eq!(claims.sub, "u1");
        assert!(claims.is_admin());
        assert!(slipway_starter::auth::verify_bearer(Some(&format!("Bearer {t}")), b"other").is_err());
        assert_eq!(api_error(&json!({"code": "FORBIDDEN", "message": "no"})), "FORBIDDEN: no");
    }
}
