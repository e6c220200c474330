//! End-to-end tests of what the coding bot uses: the GitHub App (JWT, installation tokens,
//! Git data, contents, pull requests, comments, permissions), GitHub webhooks, and the
//! OpenAI-compatible chat completions, over HTTP as the product's clients call them.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use sha2::Sha256;
use slipway_sandbox::{RunningSandbox, SandboxConfig, github_events, spawn};
use tokio::sync::mpsc;

/// The repository's throwaway test key; its public half is the sandbox's default.
const TEST_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/github-app-test-key.pem");
/// A public key whose private half was thrown away: nothing verifies against it.
const UNRELATED_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuYEnm4gcAoham0wCrcjq
HqTJy2uerviFTLCe8NGhtqbmbVOq2YPSpZWKhBOBpPHxyWDKaozRTIXPs7x5Okov
DaAOT6GZKIOOrOuqmQfTC7G8067FvPx3eaIjx5ujV2wQWHHD1hCyyAgwipWiQV/V
lUc03m1sRbLBJdKfcyHflfQ4cStfvqd/ywK7in426sHe4lbPOoyWIU7sfGFDuEoR
Bnw6Aui+UxjeAvaXHWhsOcp94CJDGsgII7wl6+PL1SwUEGL19xSOk0Q09Jynmzd9
my9c03MtVRdmERsjPuRMdsmcE4G96AfwKSDffCuNNJydXEK2fY9OF0YOLj80S1uf
RQIDAQAB
-----END PUBLIC KEY-----
";
const WEBHOOK_SECRET: &str = "gh-hook-secret";

fn config() -> SandboxConfig {
    SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        github_webhook_secret: WEBHOOK_SECRET.into(),
        llm_api_key: "sk-test".into(),
        ..SandboxConfig::default()
    }
}

async fn start(config: SandboxConfig) -> RunningSandbox {
    spawn(config).await.expect("sandbox binds")
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An app JWT signed with the test key, issued `iat` and expiring `exp` seconds from now.
fn jwt(iss: Value, iat: i64, exp: i64) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(TEST_KEY).unwrap()).unwrap();
    let claims = json!({"iss": iss, "iat": now() + iat, "exp": now() + exp});
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

fn app_jwt() -> String {
    jwt(json!("424242"), -60, 540)
}

async fn send(req: RequestBuilder) -> (u16, HeaderMap, Value) {
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let text = res.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, headers, body)
}

async fn control(sb: &RunningSandbox, path: &str, body: Value) -> (u16, Value) {
    let (status, _, body) =
        send(Client::new().post(format!("{}/_sandbox{path}", sb.base_url)).json(&body)).await;
    (status, body)
}

async fn state(sb: &RunningSandbox) -> Value {
    send(Client::new().get(format!("{}/_sandbox/state", sb.base_url))).await.2
}

/// Installs the app on `acme` with `acme/shop` and returns an installation token.
async fn install_and_token(sb: &RunningSandbox) -> (u64, String) {
    let (status, body) =
        control(sb, "/github/installations", json!({"account": "acme", "repos": ["acme/shop"]})).await;
    assert_eq!(status, 201, "{body}");
    let id = body["installation_id"].as_u64().unwrap();
    let url = format!("{}/github/app/installations/{id}/access_tokens", sb.base_url);
    let (status, _, body) = send(Client::new().post(url).bearer_auth(app_jwt())).await;
    assert_eq!(status, 201, "{body}");
    (id, body["token"].as_str().unwrap().to_owned())
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits: Vec<u32> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .map(|b| ALPHABET.iter().position(|a| *a == b).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0, |n, (i, d)| n | (d << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// A tiny webhook receiver answering `status`, forwarding what it gets.
async fn receiver(status: u16) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let tx = tx.clone();
        async move {
            tx.send((headers, body)).unwrap();
            StatusCode::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) -> (HeaderMap, Bytes) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("delivery arrives in time").unwrap()
}

#[tokio::test]
async fn app_jwt_authentication() {
    let sb = start(config()).await;
    let http = Client::new();
    let url = format!("{}/github/app/installations", sb.base_url);
    let undecodable = Some("A JSON web token could not be decoded");

    let (status, _, body) = send(http.get(&url).bearer_auth(app_jwt())).await;
    assert_eq!((status, body), (200, json!([])));
    control(&sb, "/github/installations", json!({"account": "acme", "repos": ["shop"]})).await;
    // Octokit sends the app id as a number.
    let (status, _, body) = send(http.get(&url).bearer_auth(jwt(json!(424242), -30, 500))).await;
    assert_eq!(status, 200, "{body}");
    let installation = &body[0];
    assert_eq!(installation["account"]["login"], "acme");
    assert_eq!(installation["account"]["type"], "Organization");
    assert_eq!(
        (installation["app_id"].as_u64(), installation["target_type"].as_str()),
        (Some(424242), Some("Organization"))
    );
    assert_eq!(installation["permissions"]["contents"], "write");
    assert!(installation["events"].as_array().unwrap().contains(&json!("issues")));

    let (status, _, body) = send(http.get(&url)).await;
    assert_eq!((status, body["message"].as_str()), (401, undecodable));
    let (status, _, body) = send(http.get(&url).bearer_auth("not-a-jwt")).await;
    assert_eq!((status, body["message"].as_str()), (401, undecodable));
    assert_eq!(body["documentation_url"], "https://docs.github.com/rest");
    let mut tampered = app_jwt();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(send(http.get(&url).bearer_auth(tampered)).await.0, 401);
    let (status, _, body) = send(http.get(&url).bearer_auth(jwt(json!("999"), -60, 500))).await;
    assert_eq!((status, body["message"].as_str()), (401, undecodable));
    let (status, _, body) = send(http.get(&url).bearer_auth(jwt(json!("424242"), -700, -90))).await;
    assert_eq!(status, 401);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("'Expiration time' claim ('exp') must be a numeric value")
    );
    // Within the 60 s clock skew, a just-expired token still passes.
    assert_eq!(send(http.get(&url).bearer_auth(jwt(json!("424242"), -600, -30))).await.0, 200);
    let (status, _, body) = send(http.get(&url).bearer_auth(jwt(json!("424242"), 0, 900))).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("'Expiration time' claim ('exp') is too far in the future"))
    );
    let (status, _, body) = send(http.get(&url).bearer_auth(jwt(json!("424242"), 300, 500))).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().starts_with("'Issued at' claim ('iat')"));

    // The same JWT fails against a sandbox configured with another app key.
    let other =
        start(SandboxConfig { github_app_public_key_pem: UNRELATED_PUBLIC_KEY.into(), ..config() }).await;
    let (status, _, body) =
        send(http.get(format!("{}/github/app/installations", other.base_url)).bearer_auth(app_jwt())).await;
    assert_eq!((status, body["message"].as_str()), (401, undecodable));
}

#[tokio::test]
async fn organization_lists_show_an_installation_token_its_private_repositories_only() {
    let sb = start(config()).await;
    let http = Client::new();
    let pat = SandboxConfig::default().github_token;
    let orgs = format!("{}/github/orgs/acme/repos", sb.base_url);
    for name in ["secret", "hidden"] {
        let body = json!({"name": name, "private": true});
        assert_eq!(send(http.post(&orgs).bearer_auth(&pat).json(&body)).await.0, 201);
    }
    let install = json!({"account": "acme", "repos": ["acme/shop", "acme/secret"]});
    let (status, body) = control(&sb, "/github/installations", install).await;
    assert_eq!(status, 201, "{body}");
    let id = body["installation_id"].as_u64().unwrap();
    let url = format!("{}/github/app/installations/{id}/access_tokens", sb.base_url);
    let token = send(http.post(url).bearer_auth(app_jwt())).await.2["token"].as_str().unwrap().to_owned();
    let names = |list: &Value| -> Vec<String> {
        list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect()
    };

    let (status, _, list) = send(http.get(format!("{orgs}?sort=full_name")).bearer_auth(&pat)).await;
    assert_eq!((status, names(&list)), (200, vec!["hidden".to_owned(), "secret".into(), "shop".into()]));
    // The installation covers `secret` and `shop` (public); `hidden` is private and not its.
    let (status, _, list) = send(http.get(format!("{orgs}?sort=full_name")).bearer_auth(&token)).await;
    assert_eq!((status, names(&list)), (200, vec!["secret".to_owned(), "shop".into()]));
    assert!(list[0].get("permissions").is_none(), "{}", list[0]);
    let (_, _, list) = send(http.get(format!("{orgs}?type=private")).bearer_auth(&token)).await;
    assert_eq!(names(&list), ["secret"]);
    // The app's JWT is not a token for repository routes.
    assert_eq!(send(http.get(&orgs).bearer_auth(app_jwt())).await.0, 401);
    sb.shutdown().await;
}

#[tokio::test]
async fn installation_tokens_guard_repositories() {
    let sb = start(config()).await;
    let http = Client::new();
    let (id, token) = install_and_token(&sb).await;
    assert!(
        token.starts_with("ghs_")
            && token.len() == 40
            && token[4..].chars().all(|c| c.is_ascii_alphanumeric())
    );

    let (status, _, body) =
        send(http.get(format!("{}/github/repos/acme/shop/installation", sb.base_url)).bearer_auth(app_jwt()))
            .await;
    assert_eq!((status, body["id"].as_u64()), (200, Some(id)));
    let (status, _, body) = send(
        http.get(format!("{}/github/repos/acme/other/installation", sb.base_url)).bearer_auth(app_jwt()),
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
    let (status, _, body) =
        send(http.get(format!("{}/github/repos/acme/shop/installation", sb.base_url)).bearer_auth(&token))
            .await;
    assert_eq!(status, 401, "installation tokens are not app JWTs: {body}");

    let (status, _, body) =
        send(http.get(format!("{}/github/app", sb.base_url)).bearer_auth(app_jwt())).await;
    assert_eq!((status, body["slug"].as_str(), body["id"].as_u64()), (200, Some("slipway"), Some(424242)));
    let covered = format!("{}/github/installation/repositories", sb.base_url);
    let (status, _, body) = send(http.get(&covered).bearer_auth(&token)).await;
    assert_eq!((status, body["repositories"][0]["full_name"].as_str()), (200, Some("acme/shop")));
    assert_eq!(send(http.get(&covered).bearer_auth(app_jwt())).await.0, 401);

    let url = format!("{}/github/app/installations/{id}/access_tokens", sb.base_url);
    let (status, _, body) = send(http.post(&url).bearer_auth(app_jwt())).await;
    assert_eq!((status, body["repository_selection"].as_str()), (201, Some("selected")));
    assert_eq!(body["permissions"]["pull_requests"], "write");
    assert_eq!(body["repositories"][0]["full_name"], "acme/shop");
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap().timestamp();
    assert!((expires - now() - 3600).abs() <= 5, "expires in an hour");
    let (status, _, body) =
        send(http.post(&url).bearer_auth(app_jwt()).json(&json!({"repositories": ["nope"]}))).await;
    assert_eq!(status, 422, "{body}");
    let unknown = format!("{}/github/app/installations/999/access_tokens", sb.base_url);
    assert_eq!(send(http.post(unknown).bearer_auth(app_jwt())).await.0, 404);

    let main = format!("{}/github/repos/acme/shop/git/ref/heads/main", sb.base_url);
    let (status, _, body) = send(http.get(&main).bearer_auth(&token)).await;
    assert_eq!((status, body["ref"].as_str()), (200, Some("refs/heads/main")));
    assert_eq!(body["object"]["type"], "commit");
    let (status, _, body) = send(http.get(&main).header("authorization", format!("token {token}"))).await;
    assert_eq!(status, 200, "{body}");
    for bad in ["ghs_000000000000000000000000000000000000", "any-old-token"] {
        let (status, _, body) = send(http.get(&main).bearer_auth(bad)).await;
        assert_eq!((status, body["message"].as_str()), (401, Some("Bad credentials")));
    }
    assert_eq!(send(http.get(&main)).await.0, 401);

    // Another account's installation cannot see acme's repository.
    let (_, body) =
        control(&sb, "/github/installations", json!({"account": "umbrella", "repos": ["umbrella/lab"]}))
            .await;
    let other = body["installation_id"].as_u64().unwrap();
    let url = format!("{}/github/app/installations/{other}/access_tokens", sb.base_url);
    let other_token =
        send(http.post(url).bearer_auth(app_jwt())).await.2["token"].as_str().unwrap().to_owned();
    assert_eq!(send(http.get(&main).bearer_auth(&other_token)).await.0, 404);

    // A personal access token works where GitHub takes one: the repository and its git refs
    // alike; any other credential is refused.
    let repo = format!("{}/github/repos/acme/shop", sb.base_url);
    let pat = SandboxConfig::default().github_token;
    let (status, _, body) = send(http.get(&repo).bearer_auth(&pat)).await;
    assert_eq!((status, body["full_name"].as_str()), (200, Some("acme/shop")));
    assert_eq!(send(http.get(&main).bearer_auth(&pat)).await.0, 200, "a PAT reads git refs too");
    let (status, _, body) = send(http.get(&repo).bearer_auth("any-old-token")).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Bad credentials")));

    let inventory = state(&sb).await;
    assert_eq!(inventory["github"]["tokens_issued"][id.to_string()], 2);
    assert!(!inventory.to_string().contains(&token), "token values stay out of the inventory");

    // Tokens expire.
    let short = start(SandboxConfig { github_token_ttl_secs: 1, ..config() }).await;
    let (_, token) = install_and_token(&short).await;
    let main = format!("{}/github/repos/acme/shop/git/ref/heads/main", short.base_url);
    assert_eq!(send(http.get(&main).bearer_auth(&token)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = send(http.get(&main).bearer_auth(&token)).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Bad credentials")));
}

#[tokio::test]
async fn branch_tree_commit_and_contents() {
    let sb = start(config()).await;
    let http = Client::new();
    let (_, token) = install_and_token(&sb).await;
    let api = |p: &str| format!("{}/github/repos/acme/shop{p}", sb.base_url);
    let get = |p: &str| http.get(api(p)).bearer_auth(&token);
    let post = |p: &str, body: Value| http.post(api(p)).bearer_auth(&token).json(&body);

    let (_, _, main) = send(get("/git/ref/heads/main")).await;
    let base = main["object"]["sha"].as_str().unwrap().to_owned();
    assert_eq!(base.len(), 40);
    let (status, _, commit) = send(get(&format!("/git/commits/{base}"))).await;
    assert_eq!((status, commit["sha"].as_str()), (200, Some(base.as_str())));
    assert_eq!(commit["parents"], json!([]));
    let base_tree = commit["tree"]["sha"].as_str().unwrap().to_owned();
    assert_eq!(send(get("/git/ref/heads/nope")).await.0, 404);
    assert_eq!(send(get(&format!("/git/commits/{}", "0".repeat(40)))).await.0, 404);

    let (status, _, tree) = send(post(
        "/git/trees",
        json!({"base_tree": base_tree, "tree": [
            {"path": "src/slipway_generated.rs", "mode": "100644", "type": "blob", "content": "pub fn answer() -> u32 { 42 }\n"},
            {"path": "README.md", "mode": "100644", "type": "blob", "sha": null},
        ]}),
    ))
    .await;
    assert_eq!(status, 201, "{tree}");
    let tree_sha = tree["sha"].as_str().unwrap().to_owned();
    assert_eq!(tree["tree"][0]["path"], "src");
    assert_eq!(tree["tree"][0]["type"], "tree");
    let (status, _, body) = send(post("/git/trees", json!({"base_tree": "f".repeat(40), "tree": []}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Invalid tree info")));

    let (status, _, commit) =
        send(post("/git/commits", json!({"message": "Add answer", "tree": tree_sha, "parents": [base]})))
            .await;
    assert_eq!(status, 201, "{commit}");
    let new = commit["sha"].as_str().unwrap().to_owned();
    assert_eq!(
        (commit["tree"]["sha"].as_str(), commit["parents"][0]["sha"].as_str()),
        (Some(&*tree_sha), Some(&*base))
    );
    assert_eq!(commit["message"], "Add answer");
    let (status, _, body) =
        send(post("/git/commits", json!({"message": "x", "tree": "a".repeat(40), "parents": []}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Tree SHA does not exist")));
    let (status, _, body) =
        send(post("/git/commits", json!({"message": "x", "tree": tree_sha, "parents": ["b".repeat(40)]})))
            .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (422, Some("Parent SHA does not exist or is not a commit object"))
    );

    let branch = json!({"ref": "refs/heads/slipway/issue-7", "sha": new});
    let (status, _, body) = send(post("/git/refs", branch.clone())).await;
    assert_eq!((status, body["ref"].as_str()), (201, Some("refs/heads/slipway/issue-7")));
    let (status, _, body) = send(post("/git/refs", branch)).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Reference already exists")));
    let (status, _, body) = send(get("/git/ref/heads/slipway/issue-7")).await;
    assert_eq!((status, body["object"]["sha"].as_str()), (200, Some(new.as_str())));

    // Contents read back, on the branch and on main.
    let (status, _, file) = send(get("/contents/src/slipway_generated.rs?ref=slipway/issue-7")).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!((file["type"].as_str(), file["encoding"].as_str()), (Some("file"), Some("base64")));
    assert_eq!(
        (file["name"].as_str(), file["path"].as_str()),
        (Some("slipway_generated.rs"), Some("src/slipway_generated.rs"))
    );
    assert!(file["content"].as_str().unwrap().ends_with('\n'));
    assert_eq!(base64_decode(file["content"].as_str().unwrap()), b"pub fn answer() -> u32 { 42 }\n");
    assert_eq!(file["size"], 30);
    let (status, _, file) = send(get(&format!("/contents/src/slipway_generated.rs?ref={new}"))).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(send(get("/contents/README.md?ref=slipway/issue-7")).await.0, 404);
    let (status, _, readme) = send(get("/contents/README.md")).await;
    assert_eq!(status, 200);
    assert_eq!(base64_decode(readme["content"].as_str().unwrap()), b"# shop\n");
    let (status, _, listing) = send(get("/contents/src?ref=slipway/issue-7")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listing.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["lib.rs", "slipway_generated.rs"]);
    let (status, _, body) = send(get("/contents/README.md?ref=nope")).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("No commit found for the ref nope")));

    // Moving a branch: fast-forward only, unless forced.
    let patch =
        |body: Value| http.patch(api("/git/refs/heads/slipway/issue-7")).bearer_auth(&token).json(&body);
    let (status, _, body) = send(patch(json!({"sha": base}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Update is not a fast forward")));
    let (status, _, body) = send(patch(json!({"sha": base, "force": true}))).await;
    assert_eq!((status, body["object"]["sha"].as_str()), (200, Some(base.as_str())));
    assert_eq!(send(patch(json!({"sha": new}))).await.0, 200);
    let (status, _, body) =
        send(http.patch(api("/git/refs/heads/missing")).bearer_auth(&token).json(&json!({"sha": new}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Reference does not exist")));

    let inventory = state(&sb).await;
    let repo = &inventory["github"]["app_repos"][0];
    assert_eq!(repo["full_name"], "acme/shop");
    assert_eq!(repo["branches"]["slipway/issue-7"], new.as_str());
    assert_eq!(repo["files"]["README.md"], "# shop\n");
    let commits = inventory["github"]["commits"].as_array().unwrap();
    let made = commits.iter().find(|c| c["sha"] == new.as_str()).unwrap();
    assert_eq!(made["message"], "Add answer");
    assert_eq!(
        made["files_changed"],
        json!([{"path": "README.md", "status": "removed"}, {"path": "src/slipway_generated.rs", "status": "added"}])
    );
}

#[tokio::test]
async fn pull_requests_comments_permissions_and_webhooks() {
    let (hook_url, mut deliveries) = receiver(202).await;
    let sb = start(SandboxConfig { github_webhook_url: hook_url, ..config() }).await;
    let http = Client::new();
    let (installation, token) = install_and_token(&sb).await;
    let api = |p: &str| format!("{}/github/repos/acme/shop{p}", sb.base_url);
    let get = |p: &str| http.get(api(p)).bearer_auth(&token);
    let post = |p: &str, body: Value| http.post(api(p)).bearer_auth(&token).json(&body);

    // An issue arrives as a signed webhook.
    let issue = github_events::issues(
        "opened",
        "acme/shop",
        installation,
        7,
        "Add a button",
        "Please",
        &["slipway"],
        "alice",
    );
    let (status, body) =
        control(&sb, "/github/webhooks", json!({"event": "issues", "payload": issue, "delivery_id": "d-1"}))
            .await;
    assert_eq!(
        (status, body["delivery_id"].as_str(), body["status"].as_u64()),
        (200, Some("d-1"), Some(202))
    );
    let (headers, raw) = recv(&mut deliveries).await;
    assert_eq!(headers["x-github-event"], "issues");
    assert_eq!(headers["x-github-delivery"], "d-1");
    assert_eq!(headers["x-github-hook-installation-target-type"], "integration");
    assert_eq!(headers["x-github-hook-installation-target-id"], "424242");
    assert!(headers.contains_key("x-github-hook-id"));
    assert!(headers["user-agent"].to_str().unwrap().starts_with("GitHub-Hookshot/"));
    assert_eq!(headers["content-type"], "application/json");
    let expected = format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &raw));
    assert_eq!(headers["x-hub-signature-256"].to_str().unwrap(), expected);
    assert_eq!(github_events::signature(&raw, WEBHOOK_SECRET), expected);
    let received: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        (received["issue"]["title"].as_str(), received["installation"]["id"].as_u64()),
        (Some("Add a button"), Some(installation))
    );
    control(&sb, "/github/webhooks", json!({"event": "issues", "payload": received, "delivery_id": "d-1"}))
        .await;
    recv(&mut deliveries).await;

    // The bot pushes a branch and opens a pull request.
    let (_, _, main) = send(get("/git/ref/heads/main")).await;
    let base = main["object"]["sha"].as_str().unwrap().to_owned();
    let (_, _, commit) = send(get(&format!("/git/commits/{base}"))).await;
    let (_, _, tree) = send(post(
        "/git/trees",
        json!({"base_tree": commit["tree"]["sha"], "tree": [{"path": "SLIPWAY.md", "mode": "100644", "type": "blob", "content": "# Add a button\n"}]}),
    ))
    .await;
    let tree = tree["sha"].as_str().unwrap().to_owned();
    let (_, _, commit) =
        send(post("/git/commits", json!({"message": "Add a button", "tree": tree, "parents": [base]}))).await;
    let head = commit["sha"].as_str().unwrap().to_owned();
    assert_eq!(
        send(post("/git/refs", json!({"ref": "refs/heads/slipway/issue-7", "sha": head}))).await.0,
        201
    );
    let new_pull =
        json!({"title": "Add a button", "head": "slipway/issue-7", "base": "main", "body": "Closes #7"});
    let (status, _, pull) = send(post("/pulls", new_pull.clone())).await;
    assert_eq!(status, 201, "{pull}");
    let number = pull["number"].as_u64().unwrap();
    assert_eq!(number, 8, "issue #7 is taken");
    assert_eq!(
        (pull["state"].as_str(), pull["user"]["login"].as_str()),
        (Some("open"), Some("slipway[bot]"))
    );
    assert_eq!(
        (pull["head"]["ref"].as_str(), pull["head"]["sha"].as_str()),
        (Some("slipway/issue-7"), Some(head.as_str()))
    );
    assert_eq!(pull["base"]["ref"], "main");
    assert_eq!(pull["html_url"], "https://github.com/acme/shop/pull/8");
    let (status, _, body) =
        send(post("/pulls", json!({"title": "Again", "head": "acme:slipway/issue-7", "base": "main"}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Validation Failed")));
    assert_eq!(
        body["errors"][0],
        json!({"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for acme:slipway/issue-7."})
    );
    let (status, _, body) = send(post("/pulls", json!({"title": "x", "head": "nope", "base": "main"}))).await;
    assert_eq!((status, body["errors"][0]["field"].as_str()), (422, Some("head")));
    let (_, _, list) = send(get("/pulls?head=acme:slipway/issue-7&state=open")).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, _, list) = send(get("/pulls?head=acme:other&state=all")).await;
    assert_eq!(list, json!([]));
    let (status, _, body) = send(get(&format!("/pulls/{number}"))).await;
    assert_eq!((status, body["title"].as_str()), (200, Some("Add a button")));

    // The bot keeps the issue informed.
    let (status, _, comment) = send(post("/issues/7/comments", json!({"body": "Working on it"}))).await;
    assert_eq!(status, 201, "{comment}");
    assert_eq!(
        (comment["user"]["login"].as_str(), comment["body"].as_str()),
        (Some("slipway[bot]"), Some("Working on it"))
    );
    assert!(
        comment["html_url"]
            .as_str()
            .unwrap()
            .starts_with("https://github.com/acme/shop/issues/7#issuecomment-")
    );
    let id = comment["id"].as_u64().unwrap();
    let edit = http
        .patch(api(&format!("/issues/comments/{id}")))
        .bearer_auth(&token)
        .json(&json!({"body": "Done: #8"}));
    let (status, _, edited) = send(edit).await;
    assert_eq!((status, edited["body"].as_str(), edited["id"].as_u64()), (200, Some("Done: #8"), Some(id)));
    let (_, _, comments) = send(get("/issues/7/comments")).await;
    assert_eq!(comments.as_array().unwrap().len(), 1);
    assert_eq!(comments[0]["body"], "Done: #8");
    let missing = http.patch(api("/issues/comments/1")).bearer_auth(&token).json(&json!({"body": "x"}));
    assert_eq!(send(missing).await.0, 404);

    // Who may ask the bot for work.
    let (status, _) =
        control(&sb, "/github/repos/acme/shop/collaborators/alice", json!({"permission": "write"})).await;
    assert_eq!(status, 200);
    let (status, _, body) = send(get("/collaborators/alice/permission")).await;
    assert_eq!(
        (status, body["permission"].as_str(), body["role_name"].as_str()),
        (200, Some("write"), Some("write"))
    );
    assert_eq!(body["user"]["login"], "alice");
    let (_, _, body) = send(get("/collaborators/mallory/permission")).await;
    assert_eq!(body["permission"], "none");

    // A maintainer merges; the product hears about it.
    let (status, closed) =
        control(&sb, &format!("/github/repos/acme/shop/pulls/{number}/close"), json!({"merged": true})).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!((closed["merged"].as_bool(), closed["delivery"]["status"].as_u64()), (Some(true), Some(202)));
    let (headers, raw) = recv(&mut deliveries).await;
    assert_eq!(headers["x-github-event"], "pull_request");
    assert_eq!(
        headers["x-hub-signature-256"].to_str().unwrap(),
        format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &raw))
    );
    let event: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!((event["action"].as_str(), event["number"].as_u64()), (Some("closed"), Some(number)));
    assert_eq!(
        (event["pull_request"]["merged"].as_bool(), event["pull_request"]["head"]["ref"].as_str()),
        (Some(true), Some("slipway/issue-7"))
    );
    assert_eq!(event["installation"]["id"], installation);
    assert_eq!(event["repository"]["full_name"], "acme/shop");
    let (status, _, file) = send(get("/contents/SLIPWAY.md")).await;
    assert_eq!(status, 200, "merged into main");
    assert_eq!(base64_decode(file["content"].as_str().unwrap()), b"# Add a button\n");
    let (_, _, list) = send(get("/pulls?state=closed")).await;
    assert_eq!((list[0]["state"].as_str(), list[0]["merged"].as_bool()), (Some("closed"), Some(true)));
    let (status, _) = control(&sb, &format!("/github/repos/acme/shop/pulls/{number}/close"), json!({})).await;
    assert_eq!(status, 409);

    let inventory = state(&sb).await;
    let gh = &inventory["github"];
    let delivered: Vec<(&str, bool)> = gh["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["event"].as_str().unwrap(), d["redelivery"].as_bool().unwrap()))
        .collect();
    assert_eq!(delivered, [("issues", false), ("issues", true), ("pull_request", false)]);
    assert_eq!(gh["pulls"][0]["state"], "closed");
    assert_eq!(gh["comments"][0]["body"], "Done: #8");
    assert_eq!(gh["installations"][0]["account"], "acme");
    assert_eq!(gh["app_repos"][0]["files"]["SLIPWAY.md"], "# Add a button\n");

    // An unreachable receiver is reported, not retried.
    drop(deliveries);
    let quiet =
        start(SandboxConfig { github_webhook_url: "http://127.0.0.1:9/hook".into(), ..config() }).await;
    let (status, body) =
        control(&quiet, "/github/webhooks", json!({"event": "ping", "payload": github_events::ping(1)}))
            .await;
    assert_eq!((status, body["status"].clone()), (200, Value::Null));
    assert!(body["error"].is_string() && body["delivery_id"].is_string());
}

/// A chat completion request: a system message, the data as user message and, for a step, the
/// JSON schema named `schema` as `response_format` (how the stand-in tells the steps apart).
fn chat(
    http: &Client,
    sb: &RunningSandbox,
    system: &str,
    user: &str,
    schema: Option<&str>,
) -> RequestBuilder {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    });
    if let Some(name) = schema {
        body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": name, "strict": true,
            "schema": {"type": "object", "properties": {}, "additionalProperties": false}}});
    }
    http.post(format!("{}/openai/v1/chat/completions", sb.base_url)).bearer_auth("sk-test").json(&body)
}

fn usage_of(system: &str, user: &str, answer: &str) -> (u64, u64) {
    let prompt = (system.chars().count() + user.chars().count()).div_ceil(4) as u64;
    (prompt, answer.chars().count().div_ceil(4) as u64)
}

fn content(body: &Value) -> Value {
    serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn openai_chat_completions_route_on_the_requests_structure() {
    let sb = start(config()).await;
    let http = Client::new();
    let url = format!("{}/openai/v1/chat/completions", sb.base_url);
    let issue =
        json!({"repository": "acme/shop", "title": "Add a button", "body": "The shop needs a buy button."});

    let (status, _, body) = send(http.post(&url).json(&json!({"model": "m", "messages": []}))).await;
    assert_eq!((status, body["error"]["code"].clone()), (401, Value::Null), "no key: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let wrong =
        http.post(&url).bearer_auth("sk-another-key-9xyz").json(&json!({"model": "m", "messages": []}));
    let (status, _, body) = send(wrong).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    assert!(body["error"]["message"].as_str().unwrap().contains("sk-************9xyz"), "{body}");
    let (status, _, body) = send(
        http.post(&url)
            .bearer_auth("sk-test")
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    let (status, _, body) = send(http.post(&url).bearer_auth("sk-test").json(&json!({"model": "m"}))).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("messages")));
    let (status, _, body) = send(http.post(&url).bearer_auth("sk-test").body("{not json")).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));

    // Planning: the files the issue names, the README the tree has, the generated module.
    let system = "You plan changes.";
    let data = json!({"issue": issue, "tree": ["README.md", "src/lib.rs"]}).to_string();
    let (status, headers, body) = send(chat(&http, &sb, system, &data, Some("slipway_plan"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-request-id"));
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        (body["object"].as_str(), body["model"].as_str()),
        (Some("chat.completion"), Some("gpt-4o-mini"))
    );
    let choice = &body["choices"][0];
    assert_eq!((choice["index"].as_u64(), choice["finish_reason"].as_str()), (Some(0), Some("stop")));
    assert_eq!(choice["message"]["role"], "assistant");
    let plan = content(&body);
    assert_eq!(plan["summary"], "Plan for: Add a button");
    assert_eq!(plan["files"], json!(["README.md", "src/slipway_generated.rs"]));
    let answer = choice["message"]["content"].as_str().unwrap();
    let (prompt, completion) = usage_of(system, &data, answer);
    assert_eq!(body["usage"]["prompt_tokens"].as_u64(), Some(prompt));
    assert_eq!(body["usage"]["completion_tokens"].as_u64(), Some(completion));
    assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(prompt + completion));

    // Coding: an edit of each existing file, whole content of each new one.
    let data = json!({"issue": issue, "plan": "p", "files": [{"path": "README.md", "content": "# shop\nSells.\n"}],
        "new_files": ["src/slipway_generated.rs"], "review_feedback": null});
    let (_, _, body) =
        send(chat(&http, &sb, "You write code.", &data.to_string(), Some("slipway_edits"))).await;
    let code = content(&body);
    assert_eq!(
        code["edits"],
        json!([{"path": "README.md", "search": "# shop\n", "replace": "# shop\n\n> Slipway: Add a button\n"},
            {"path": "src/slipway_generated.rs", "search": "",
             "replace": "// generated for: Add a button\npub fn answer() -> u32 { 42 }\n"}])
    );
    let mut revised = data.clone();
    revised["review_feedback"] = json!("document answer()");
    let (_, _, body) =
        send(chat(&http, &sb, "You write code.", &revised.to_string(), Some("slipway_edits"))).await;
    assert!(content(&body)["edits"][1]["replace"].as_str().unwrap().contains("// revised after review\n"));

    let review = |sb: &RunningSandbox, title: &str| {
        let data = json!({"issue": {"title": title, "body": ""}, "plan": "p", "diff": "+x"});
        chat(&http, sb, "You review.", &data.to_string(), Some("slipway_review")).send()
    };
    let verdict = |res: reqwest::Response| async move {
        let body: Value = res.json().await.unwrap();
        let review = content(&body);
        assert!(review["comments"].is_string());
        review["verdict"].as_str().unwrap().to_owned()
    };
    assert_eq!(verdict(review(&sb, "Add a button").await.unwrap()).await, "approve");
    assert_eq!(control(&sb, "/openai/review", json!({"changes_first": 2})).await.0, 200);
    assert_eq!(verdict(review(&sb, "Add a button").await.unwrap()).await, "changes");
    assert_eq!(verdict(review(&sb, "Other issue").await.unwrap()).await, "changes");
    assert_eq!(verdict(review(&sb, "Add a button").await.unwrap()).await, "changes");
    assert_eq!(verdict(review(&sb, "Add a button").await.unwrap()).await, "approve");

    // Words in a prompt route nothing: no schema, a plain answer.
    let (_, _, body) = send(chat(&http, &sb, "slipway:plan", "Hello there", None)).await;
    assert_eq!(body["choices"][0]["message"]["content"], "Sandbox answer to: Hello there");

    let calls = state(&sb).await["openai"]["calls"].clone();
    let tags: Vec<Value> = calls.as_array().unwrap().iter().map(|c| c["tag"].clone()).collect();
    assert_eq!(tags[..3], [json!("plan"), json!("code"), json!("code")]);
    assert_eq!(tags.last(), Some(&Value::Null));
    assert_eq!(calls[0]["model"], "gpt-4o-mini");
    assert!(calls[0]["prompt_tokens"].is_u64() && calls[0]["completion_tokens"].is_u64());

    // Faults apply, with OpenAI's error body.
    let (status, body) = control(
        &sb,
        "/faults",
        json!({"method": "POST", "path": "/openai/v1/chat/completions", "status": 429, "retry_after": 2, "count": 1}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let data = json!({"issue": issue, "tree": []}).to_string();
    let (status, headers, body) = send(chat(&http, &sb, "You plan.", &data, Some("slipway_plan"))).await;
    assert_eq!((status, headers["retry-after"].to_str().unwrap()), (429, "2"));
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("Rate limit reached"));
    assert_eq!(send(chat(&http, &sb, "You plan.", &data, Some("slipway_plan"))).await.0, 200);
}

/// The `rel="next"` URL of a `Link` header, if any.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .map(|part| part.trim().trim_start_matches('<').split('>').next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn app_webhook_deliveries_are_listed_shown_and_redelivered() {
    let (failing_url, mut failing) = receiver(503).await;
    let (healthy_url, mut healthy) = receiver(200).await;
    let sb = start(SandboxConfig { github_webhook_url: failing_url.clone(), ..config() }).await;
    let http = Client::new();
    let api = |p: &str| format!("{}/github/app/hook{p}", sb.base_url);
    let jwt_get = |p: &str| http.get(api(p)).bearer_auth(app_jwt());

    // Only the App's JWT opens them.
    let (status, _, body) = send(http.get(api("/deliveries"))).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("A JSON web token could not be decoded")));
    let (status, _, body) = send(jwt_get("/deliveries")).await;
    assert_eq!((status, body), (200, json!([])));

    // A delivery the receiver refuses.
    let issue = github_events::issues("opened", "acme/shop", 61, 3, "Fix", "Please", &[], "alice");
    let (_, sent) = control(&sb, "/github/webhooks", json!({"event": "issues", "payload": issue})).await;
    assert_eq!(sent["status"], 503);
    let (headers, raw) = recv(&mut failing).await;
    let guid = sent["delivery_id"].as_str().unwrap().to_owned();
    assert_eq!(headers["x-github-delivery"].to_str().unwrap(), guid);
    let (status, _, list) = send(jwt_get("/deliveries")).await;
    assert_eq!(status, 200);
    let item = &list[0];
    let id = item["id"].as_u64().unwrap();
    assert_eq!(Some(id), sent["id"].as_u64());
    assert_eq!(
        (item["guid"].as_str(), item["status_code"].as_u64(), item["status"].as_str()),
        (Some(guid.as_str()), Some(503), Some("Invalid HTTP Response: 503"))
    );
    assert_eq!((item["event"].as_str(), item["action"].as_str()), (Some("issues"), Some("opened")));
    assert_eq!((item["installation_id"].as_u64(), item["redelivery"].as_bool()), (Some(61), Some(false)));
    assert!(item["repository_id"].is_u64() && item["duration"].is_number() && item["throttled_at"].is_null());
    assert!(item["delivered_at"].as_str().unwrap().ends_with('Z'));
    let (_, _, failures) = send(jwt_get("/deliveries?status=failure")).await;
    assert_eq!(failures.as_array().unwrap().len(), 1);
    let (_, _, successes) = send(jwt_get("/deliveries?status=success")).await;
    assert_eq!(successes, json!([]));

    // The whole delivery: what was sent and what came back.
    let (status, _, full) = send(jwt_get(&format!("/deliveries/{id}"))).await;
    assert_eq!((status, full["url"].as_str()), (200, Some(failing_url.as_str())));
    assert_eq!(full["request"]["payload"], serde_json::from_slice::<Value>(&raw).unwrap());
    assert_eq!(full["request"]["headers"]["X-GitHub-Delivery"], guid.as_str());
    assert_eq!(full["request"]["headers"]["X-GitHub-Event"], "issues");
    assert_eq!(
        full["request"]["headers"]["X-Hub-Signature-256"].as_str().unwrap(),
        format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &raw))
    );
    assert!(full["response"]["headers"].is_object() && full["response"]["payload"].is_string());
    for missing in ["/deliveries/1", "/deliveries/nope"] {
        let (status, _, body) = send(jwt_get(missing)).await;
        assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
        assert!(body["documentation_url"].is_string());
    }
    let (status, _, _) = send(http.post(api("/deliveries/1/attempts")).bearer_auth(app_jwt())).await;
    assert_eq!(status, 404);

    // The receiver moves; the redelivery goes there with the same GUID.
    let (status, _, shown) = send(jwt_get("/config")).await;
    assert_eq!(
        (status, shown),
        (200, json!({"url": failing_url, "content_type": "json", "insecure_ssl": "0", "secret": "********"}))
    );
    let patch = http.patch(api("/config")).bearer_auth(app_jwt()).json(&json!({"url": healthy_url}));
    let (status, _, shown) = send(patch).await;
    assert_eq!(
        (status, shown["url"].as_str(), shown["secret"].as_str()),
        (200, Some(healthy_url.as_str()), Some("********"))
    );
    let bad = http.patch(api("/config")).bearer_auth(app_jwt()).json(&json!({"content_type": "xml"}));
    assert_eq!(send(bad).await.0, 422);
    let redeliver = http.post(api(&format!("/deliveries/{id}/attempts"))).bearer_auth(app_jwt());
    let (status, _, body) = send(redeliver).await;
    assert_eq!((status, body), (202, json!({})));
    let (headers, again) = recv(&mut healthy).await;
    assert_eq!(headers["x-github-delivery"].to_str().unwrap(), guid);
    assert_eq!(again, raw, "the same payload");
    let mut list = Value::Null;
    for _ in 0..50 {
        list = send(jwt_get("/deliveries")).await.2;
        if list.as_array().is_some_and(|l| l.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let newest = &list[0];
    assert!(newest["id"].as_u64().unwrap() > id);
    assert_eq!(
        (newest["guid"].as_str(), newest["redelivery"].as_bool(), newest["status_code"].as_u64()),
        (Some(guid.as_str()), Some(true), Some(200))
    );
    assert_eq!(newest["status"], "OK");
    assert_eq!(list[1]["id"].as_u64(), Some(id));

    // Pages follow the cursor of the Link header.
    for n in 0..3 {
        control(&sb, "/github/webhooks", json!({"event": "ping", "payload": github_events::ping(n)})).await;
        recv(&mut healthy).await;
    }
    let mut seen = Vec::new();
    let mut url = Some(api("/deliveries?per_page=2"));
    while let Some(next) = url.take() {
        let (status, headers, page) = send(http.get(&next).bearer_auth(app_jwt())).await;
        assert_eq!(status, 200);
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|d| d["id"].as_u64().unwrap()));
        url = next_link(&headers);
        if let Some(next) = &url {
            assert!(next.contains("cursor=") && next.contains("per_page=2"), "{next}");
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first: {seen:?}");
    let (status, _, _) = send(jwt_get("/deliveries?cursor=bogus")).await;
    assert_eq!(status, 400);

    // Form deliveries without a secret: `payload=<JSON>`, unsigned.
    let patch = http
        .patch(api("/config"))
        .bearer_auth(app_jwt())
        .json(&json!({"content_type": "form", "secret": ""}));
    let (status, _, shown) = send(patch).await;
    assert_eq!((status, shown.get("secret"), shown["content_type"].as_str()), (200, None, Some("form")));
    control(&sb, "/github/webhooks", json!({"event": "ping", "payload": github_events::ping(9)})).await;
    let (headers, raw) = recv(&mut healthy).await;
    assert_eq!(headers["content-type"], "application/x-www-form-urlencoded");
    assert!(!headers.contains_key("x-hub-signature-256"));
    let (key, value) = url::form_urlencoded::parse(&raw).next().unwrap();
    assert_eq!(
        (key.as_ref(), serde_json::from_str::<Value>(&value).unwrap()["zen"].is_string()),
        ("payload", true)
    );

    // A reset goes back to the configured receiver.
    send(Client::new().post(format!("{}/_sandbox/reset", sb.base_url))).await;
    let (_, _, shown) = send(jwt_get("/config")).await;
    assert_eq!(shown["url"].as_str(), Some(failing_url.as_str()));
    assert_eq!(send(jwt_get("/deliveries")).await.2, json!([]));
}
