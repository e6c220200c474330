//! End-to-end tests of the providers behind a customer's app stack: Supabase, GitHub
//! repositories from templates and their organization lists, Vercel and n8n, over HTTP as the
//! product's clients use them.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use slipway_sandbox::{RunningSandbox, SandboxConfig, spawn};

const TOKEN: &str = "test-token";

async fn start() -> RunningSandbox {
    let config = SandboxConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        supabase_ready_ms: 500,
        vercel_ready_ms: 150,
        github_token: TOKEN.into(),
        supabase_token: TOKEN.into(),
        vercel_token: TOKEN.into(),
        n8n_api_key: "n8n-key".into(),
        ..SandboxConfig::default()
    };
    spawn(config).await.expect("sandbox binds")
}

async fn send(req: RequestBuilder) -> (u16, HeaderMap, Value) {
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let text = res.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
    (status, headers, body)
}

async fn state(sb: &RunningSandbox) -> Value {
    send(Client::new().get(format!("{}/_sandbox/state", sb.base_url))).await.2
}

#[tokio::test]
async fn supabase_projects_health_keys_and_migrations() {
    let sb = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/supabase/v1{p}", sb.base_url);
    let post = |p: &str, body: Value| http.post(url(p)).bearer_auth(TOKEN).json(&body);
    let get = |p: &str| http.get(url(p)).bearer_auth(TOKEN);
    let project = json!({"name": "acme-app", "organization_slug": "org-acme", "region": "eu-central-1",
        "db_pass": "hunter2-secret-pass"});

    let (status, _, body) = send(http.get(url("/projects"))).await;
    assert_eq!((status, body), (401, json!({"message": "Unauthorized"})));
    let mut incomplete = project.clone();
    incomplete.as_object_mut().unwrap().remove("db_pass");
    let (status, _, body) = send(post("/projects", incomplete)).await;
    assert_eq!((status, body["message"].as_str()), (400, Some("db_pass should not be empty")));

    let (status, headers, created) = send(post("/projects", project.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(headers["x-ratelimit-limit"], "120");
    let reference = created["id"].as_str().unwrap().to_owned();
    assert!(reference.len() == 20 && reference.chars().all(|c| c.is_ascii_lowercase()));
    assert_eq!((created["ref"].as_str(), created["status"].as_str()), (Some(&*reference), Some("COMING_UP")));
    assert_eq!(created["database"]["host"], format!("db.{reference}.supabase.co"));
    // Names are not unique (the description declares no conflict): a second project, removed again.
    let (status, _, second) = send(post("/projects", project.clone())).await;
    assert_eq!(status, 201, "{second}");
    let twin = second["ref"].as_str().unwrap().to_owned();
    assert_ne!(twin, reference);
    let (status, _, _) = send(http.delete(url(&format!("/projects/{twin}"))).bearer_auth(TOKEN)).await;
    assert_eq!(status, 200);

    let query = |sql: &str| post(&format!("/projects/{reference}/database/query"), json!({"query": sql}));
    // `services` travels as repeated parameters; the comma form names no service (no 400 declared).
    let comma = send(get(&format!("/projects/{reference}/health?services=db,rest"))).await;
    assert_eq!((comma.0, comma.2), (200, json!([])));
    let health = format!("/projects/{reference}/health?services=db&services=rest&services=auth");
    let (_, _, body) = send(get(&health)).await;
    assert_eq!(body[0], json!({"name": "db", "healthy": false, "status": "COMING_UP"}));
    assert_eq!(body[2]["name"], "auth");
    let (status, _, body) = send(query("select 1")).await;
    assert_eq!((status, body["message"].as_str()), (503, Some("Project is not ready")));

    // Long enough that the checks above see it still coming up on a busy machine.
    tokio::time::sleep(Duration::from_millis(550)).await;
    let (_, _, body) = send(get(&format!("/projects/{reference}"))).await;
    assert_eq!(body["status"], "ACTIVE_HEALTHY");
    let (_, _, body) = send(get(&health)).await;
    assert_eq!(body[1], json!({"name": "rest", "healthy": true, "status": "ACTIVE_HEALTHY"}));
    let (_, _, keys) = send(get(&format!("/projects/{reference}/api-keys"))).await;
    assert_eq!((keys[0]["name"].as_str(), keys[1]["name"].as_str()), (Some("anon"), Some("service_role")));
    let anon = keys[0]["api_key"].as_str().unwrap();
    assert!(anon.starts_with("eyJ") && anon.split('.').count() == 3);

    // The migration bookkeeping protocol, as the product's migrator speaks it.
    let select = "SELECT version FROM public.slipway_schema_migrations ORDER BY version";
    let (status, _, body) = send(query(select)).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "ERROR: 42P01: relation \"public.slipway_schema_migrations\" does not exist");
    let create_table = "CREATE TABLE IF NOT EXISTS public.slipway_schema_migrations (version text primary key, \
                        applied_at timestamptz not null default now());";
    assert_eq!(send(query(create_table)).await.2, json!([]));
    let migration = |v: &str, sql: &str| {
        format!("{sql}\nINSERT INTO public.slipway_schema_migrations (version) VALUES ('{v}');")
    };
    let (status, _, body) =
        send(query(&migration("0001", "CREATE TABLE agents (id uuid primary key);"))).await;
    assert_eq!((status, body), (201, json!([])));
    send(query(&migration("0002", "ALTER TABLE agents ADD COLUMN name text;"))).await;
    let (status, _, body) = send(query(&migration("0003", "DROP TABLE agents; -- slipway:fail"))).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("ERROR: 42601: syntax error at or near \"-- slipway:fail\""))
    );
    let (status, _, body) = send(query(select)).await;
    assert_eq!((status, body), (201, json!([{"version": "0001"}, {"version": "0002"}])));

    let (_, _, list) = send(get("/projects")).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let inventory = state(&sb).await;
    let p = &inventory["supabase"]["projects"][0];
    assert_eq!(p["migrations"], json!(["0001", "0002"]));
    assert_eq!(
        p["executed"],
        json!(["CREATE TABLE agents (id uuid primary key);", "ALTER TABLE agents ADD COLUMN name text;"])
    );
    let text = inventory.to_string();
    assert!(!text.contains("hunter2-secret-pass") && !text.contains(anon), "no secrets in the inventory");

    let (status, _, body) =
        send(http.delete(url(&format!("/projects/{reference}"))).bearer_auth(TOKEN)).await;
    assert_eq!(
        (status, body["ref"].as_str(), body["name"].as_str()),
        (200, Some(&*reference), Some("acme-app"))
    );
    assert!(body["id"].is_u64());
    let (status, _, body) = send(get(&format!("/projects/{reference}"))).await;
    assert_eq!((status, body), (404, json!({"message": "Project not found"})));
    sb.shutdown().await;
}

#[tokio::test]
async fn supabase_rate_limit_per_token() {
    let sb = start().await;
    let http = Client::new();
    let list = |token: &str| http.get(format!("{}/supabase/v1/projects", sb.base_url)).bearer_auth(token);
    for i in 1..=120u32 {
        let (status, headers, _) = send(list(TOKEN)).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-remaining"], (120 - i).to_string().as_str());
    }
    let (status, headers, body) = send(list(TOKEN)).await;
    assert_eq!((status, body), (429, json!({"message": "Too many requests"})));
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    // A token Supabase does not know is refused before any budget is spent.
    assert_eq!(send(list("other-token")).await.2, json!({"message": "Unauthorized"}));
    sb.shutdown().await;
}

#[tokio::test]
async fn github_repositories_from_templates() {
    let sb = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/github{p}", sb.base_url);
    let generate = |template: &str, body: Value| {
        http.post(url(&format!("/repos/{template}/generate"))).bearer_auth(TOKEN).json(&body)
    };
    let new_repo =
        json!({"owner": "acme-customers", "name": "shop-a1", "description": "Shop", "private": true});

    assert_eq!(send(http.post(url("/repos/acme/app-template/generate")).json(&new_repo)).await.0, 401);
    let (status, _, repo) = send(generate("acme/app-template", new_repo.clone())).await;
    assert_eq!(status, 201, "{repo}");
    assert_eq!(
        (repo["full_name"].as_str(), repo["name"].as_str()),
        (Some("acme-customers/shop-a1"), Some("shop-a1"))
    );
    assert_eq!(
        (repo["owner"]["login"].as_str(), repo["private"].as_bool()),
        (Some("acme-customers"), Some(true))
    );
    assert_eq!(repo["html_url"], "https://github.com/acme-customers/shop-a1");
    assert_eq!((repo["default_branch"].as_str(), repo["is_template"].as_bool()), (Some("main"), Some(false)));
    assert_eq!(repo["template_repository"]["full_name"], "acme/app-template");
    assert!(repo["id"].is_u64() && repo["node_id"].is_string());

    let (status, _, body) =
        send(generate("acme/app-template", json!({"owner": "acme-customers", "name": "Shop-A1"}))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Repository creation failed.")));
    assert_eq!(body["errors"][0]["message"], "name already exists on this account");
    let (status, _, body) = send(generate("acme/app-template", json!({"owner": "acme-customers"}))).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (422, Some("Invalid request.\n\n\"name\" wasn't supplied."))
    );
    let (status, _, body) = send(generate("acme/app", new_repo.clone())).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not Found")));
    // A generated repository is not a template; one created with `is_template` is.
    assert_eq!(send(generate("acme-customers/shop-a1", json!({"name": "x"}))).await.0, 404);
    let org_repo = json!({"name": "starter", "is_template": true});
    assert_eq!(send(http.post(url("/orgs/acme/repos")).bearer_auth(TOKEN).json(&org_repo)).await.0, 201);
    let (status, _, body) = send(generate("acme/starter", json!({"name": "from-starter"}))).await;
    assert_eq!((status, body["full_name"].as_str()), (201, Some("acme/from-starter")));

    let repo_url = url("/repos/acme-customers/shop-a1");
    let (status, _, body) = send(http.get(&repo_url).bearer_auth(TOKEN)).await;
    assert_eq!((status, body["id"].clone()), (200, repo["id"].clone()));
    let names: Vec<Value> = state(&sb).await["github"]["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].clone())
        .collect();
    assert!(names.contains(&json!("acme-customers/shop-a1")) && names.contains(&json!("acme/app-template")));
    let (status, _, body) = send(http.delete(&repo_url).bearer_auth(TOKEN)).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(send(http.get(&repo_url).bearer_auth(TOKEN)).await.0, 404);
    assert_eq!(send(http.delete(&repo_url).bearer_auth(TOKEN)).await.0, 404);
    sb.shutdown().await;
}

/// The `Link` header's target for `rel`, if it names one.
fn link(headers: &HeaderMap, rel: &str) -> Option<String> {
    let value = headers.get("link")?.to_str().ok()?;
    value.split(", ").find_map(|part| {
        let (url, r) = part.split_once("; ")?;
        (r == format!("rel=\"{rel}\"")).then(|| url.trim_matches(['<', '>']).to_owned())
    })
}

fn full_names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|r| r["full_name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn github_lists_an_organizations_repositories() {
    let sb = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/github{p}", sb.base_url);
    let get = |u: String| http.get(u).bearer_auth(TOKEN);
    for (name, private) in [("shop-b", true), ("shop-a", false), ("shop-c", true)] {
        let (status, _, body) = send(
            http.post(url("/orgs/acme-customers/repos"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": name, "private": private})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let generated = json!({"owner": "acme-customers", "name": "shop-d"});
    let template = url("/repos/acme/app-template/generate");
    assert_eq!(send(http.post(template).bearer_auth(TOKEN).json(&generated)).await.0, 201);
    let other = json!({"name": "elsewhere"});
    assert_eq!(send(http.post(url("/orgs/umbrella/repos")).bearer_auth(TOKEN).json(&other)).await.0, 201);

    let (status, _, body) = send(http.get(url("/orgs/acme-customers/repos"))).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("Bad credentials")));
    assert_eq!(send(http.get(url("/orgs/acme-customers/repos")).bearer_auth("nope")).await.0, 401);

    // Newest first by default, every one of the organization's and only those.
    let (status, headers, all) = send(get(url("/orgs/acme-customers/repos"))).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        full_names(&all),
        ["acme-customers/shop-d", "acme-customers/shop-c", "acme-customers/shop-a", "acme-customers/shop-b"]
    );
    assert!(headers.get("link").is_none());
    let first = &all[0];
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(
        (first["owner"]["login"].as_str(), first["private"].as_bool()),
        (Some("acme-customers"), Some(false))
    );
    assert_eq!(first["permissions"]["admin"], true);
    assert!(first.get("template_repository").is_none() && first["id"].is_u64());

    // Page by page, following `Link` as clients do.
    let (_, headers, page) = send(get(url("/orgs/acme-customers/repos?per_page=3&sort=full_name"))).await;
    assert_eq!(
        full_names(&page),
        ["acme-customers/shop-a", "acme-customers/shop-b", "acme-customers/shop-c"]
    );
    let next = link(&headers, "next").expect("a next page");
    assert_eq!(link(&headers, "last").as_deref(), Some(next.as_str()));
    assert!(next.ends_with("/github/orgs/acme-customers/repos?per_page=3&sort=full_name&page=2"), "{next}");
    assert_eq!(link(&headers, "prev"), None);
    let (_, headers, page) = send(get(next)).await;
    assert_eq!(full_names(&page), ["acme-customers/shop-d"]);
    assert_eq!((link(&headers, "next"), link(&headers, "prev").is_some()), (None, true));
    assert!(link(&headers, "first").unwrap().ends_with("page=1"));

    let (_, _, private) = send(get(url("/orgs/Acme-Customers/repos?type=private&direction=asc"))).await;
    assert_eq!(full_names(&private), ["acme-customers/shop-b", "acme-customers/shop-c"]);
    let (_, _, public) = send(get(url("/orgs/acme-customers/repos?type=public&sort=full_name"))).await;
    assert_eq!(full_names(&public), ["acme-customers/shop-a", "acme-customers/shop-d"]);
    let (_, _, forks) = send(get(url("/orgs/acme-customers/repos?type=forks"))).await;
    assert_eq!(forks, json!([]));
    let (status, _, none) = send(get(url("/orgs/no-such-org/repos"))).await;
    assert_eq!((status, none), (200, json!([])));
    let (status, _, body) = send(get(url("/orgs/acme-customers/repos?type=owner"))).await;
    assert_eq!((status, body["message"].as_str()), (422, Some("Validation Failed")));
    assert_eq!(body["errors"][0]["field"], "type");

    // Deleted repositories leave the list.
    assert_eq!(send(http.delete(url("/repos/acme-customers/shop-d")).bearer_auth(TOKEN)).await.0, 204);
    let (_, _, all) = send(get(url("/orgs/acme-customers/repos?per_page=100"))).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    sb.shutdown().await;
}

#[tokio::test]
async fn vercel_projects_env_and_deployments() {
    let sb = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/vercel{p}", sb.base_url);
    let team = |p: &str| url(&format!("{p}{}teamId=team_acme", if p.contains('?') { "&" } else { "?" }));
    let post = |u: String, body: Value| http.post(u).bearer_auth(TOKEN).json(&body);
    let template = format!("{}/github/repos/acme/app-template/generate", sb.base_url);
    let (_, _, repo) = send(post(template, json!({"owner": "acme-customers", "name": "shop-a1"}))).await;

    let (status, _, body) = send(http.post(url("/v11/projects")).json(&json!({"name": "shop-a1"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let project = |repo: &str| {
        json!({"name": "shop-a1", "framework": "nextjs", "gitRepository": {"type": "github", "repo": repo},
            "environmentVariables": [
                {"key": "SUPABASE_URL", "value": "https://x.supabase.co", "target": ["production", "preview"], "type": "plain"},
                {"key": "SUPABASE_ANON_KEY", "value": "very-secret-anon", "target": ["production"], "type": "encrypted"}]})
    };
    let (status, _, body) = send(post(team("/v11/projects"), project("acme-customers/missing"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("repo_not_found")));
    let (status, _, created) = send(post(team("/v11/projects"), project("acme-customers/shop-a1"))).await;
    assert_eq!(status, 200, "{created}");
    assert!(created["id"].as_str().unwrap().starts_with("prj_"));
    assert_eq!(
        (created["accountId"].as_str(), created["framework"].as_str()),
        (Some("team_acme"), Some("nextjs"))
    );
    assert_eq!(created["link"]["repoId"], repo["id"]);
    assert_eq!(
        (created["link"]["org"].as_str(), created["link"]["productionBranch"].as_str()),
        (Some("acme-customers"), Some("main"))
    );
    assert_eq!(created["env"][0]["key"], "SUPABASE_URL");
    // Values are never shown back as they were sent: an opaque stand-in takes their place.
    assert!(
        created["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["value"].as_str().is_some_and(|v| v.starts_with("enc_")))
    );
    let (status, _, body) = send(post(team("/v10/projects"), project("acme-customers/shop-a1"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")));

    let get = |u: String| http.get(u).bearer_auth(TOKEN);
    assert_eq!(send(get(team("/v9/projects/shop-a1"))).await.2["id"], created["id"]);
    let (status, _, body) = send(get(url("/v9/projects/shop-a1"))).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": {"code": "not_found", "message": "Project not found"}}))
    );

    let env_url = team("/v10/projects/shop-a1/env");
    let one =
        json!({"key": "N8N_URL", "value": "https://n8n.example", "target": ["production"], "type": "plain"});
    let (status, _, body) = send(post(env_url.clone(), one.clone())).await;
    assert_eq!(
        (status, body["created"]["key"].as_str(), body["failed"].clone()),
        (201, Some("N8N_URL"), json!([]))
    );
    let (status, _, body) = send(post(env_url.clone(), one.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("ENV_CONFLICT")));
    let (status, _, body) = send(post(format!("{env_url}&upsert=true"), json!([one]))).await;
    assert_eq!((status, body["created"].as_array().map(Vec::len)), (201, Some(1)));

    let deploy = json!({"name": "shop-a1", "project": created["id"], "target": "production",
        "gitSource": {"type": "github", "repoId": repo["id"], "ref": "main"}});
    let (status, _, dpl) = send(post(team("/v13/deployments"), deploy)).await;
    assert_eq!(status, 200, "{dpl}");
    let id = dpl["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dpl_") && dpl["url"].as_str().unwrap().ends_with(".vercel.app"));
    assert_eq!(
        (dpl["readyState"].as_str(), dpl["projectId"].clone()),
        (Some("QUEUED"), created["id"].clone())
    );
    assert_eq!(dpl["alias"], json!([]));
    let bad_source = json!({"name": "shop-a1", "gitSource": {"type": "github", "org": "acme", "repo": "nope", "ref": "main"}});
    assert_eq!(send(post(team("/v13/deployments"), bad_source)).await.0, 400);

    let mut states = Vec::new();
    for _ in 0..40 {
        let (_, _, body) = send(get(team(&format!("/v13/deployments/{id}")))).await;
        let state = body["readyState"].as_str().unwrap().to_owned();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "READY" {
            assert_eq!(body["alias"], json!(["shop-a1.vercel.app"]));
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert_eq!(states.last().map(String::as_str), Some("READY"));
    assert!(states.iter().all(|s| ["QUEUED", "BUILDING", "READY"].contains(&s.as_str())));

    let inventory = state(&sb).await;
    let v = &inventory["vercel"];
    assert_eq!(v["deployments"][0]["id"], id.as_str());
    let env = v["projects"][0]["env"].as_array().unwrap();
    assert_eq!(env[0]["value"], "https://x.supabase.co");
    let opaque = env[1]["value"].as_str().is_some_and(|v| v.starts_with("enc_"));
    assert!(opaque && !inventory.to_string().contains("very-secret-anon"));
    assert!(v["calls"].as_array().unwrap().iter().any(|c| c["teamId"] == "team_acme"));

    // Generic fault injection reaches the new providers with Vercel-shaped errors.
    let fault = json!({"method": "GET", "path": "/vercel/v13/deployments/*", "status": 500, "count": 1});
    send(http.post(format!("{}/_sandbox/faults", sb.base_url)).json(&fault)).await;
    let (status, _, body) = send(get(team(&format!("/v13/deployments/{id}")))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (500, Some("internal_server_error")));

    assert_eq!(send(http.delete(team("/v9/projects/shop-a1")).bearer_auth(TOKEN)).await.0, 204);
    let (status, _, body) = send(get(team(&format!("/v13/deployments/{id}")))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    sb.shutdown().await;
}

#[tokio::test]
async fn vercel_lists_projects_page_by_page() {
    let sb = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/vercel{p}", sb.base_url);
    let create = |query: &str, name: &str| {
        http.post(url(&format!("/v11/projects{query}"))).bearer_auth(TOKEN).json(&json!({"name": name}))
    };
    for name in ["shop-a1", "blog-a2", "shop-a3", "shop-a4", "shop-a5"] {
        assert_eq!(send(create("?teamId=team_acme", name)).await.0, 200);
    }
    assert_eq!(send(create("", "personal-shop")).await.0, 200);
    let list = |query: &str| http.get(url(&format!("/v10/projects{query}"))).bearer_auth(TOKEN);
    let names = |body: &Value| -> Vec<String> {
        body["projects"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
    };

    let (status, _, body) = send(http.get(url("/v10/projects?teamId=team_acme"))).await;
    assert_eq!((status, body["error"]["missingToken"].as_bool()), (403, Some(true)));
    let (status, _, body) = send(http.get(url("/v10/projects?teamId=team_acme")).bearer_auth("nope")).await;
    assert_eq!((status, body["error"]["invalidToken"].as_bool()), (403, Some(true)));

    // Most recently updated first, `limit` at a time; `until=<next>` is the next page.
    let (status, _, first) = send(list("?teamId=team_acme&limit=2")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(names(&first), ["shop-a5", "shop-a4"]);
    let project = &first["projects"][1];
    assert_eq!(first["pagination"], json!({"count": 2, "next": project["updatedAt"], "prev": null}));
    assert!(project["createdAt"].as_i64().unwrap() > 1_600_000_000_000, "{project}");
    assert_eq!(project["accountId"], "team_acme");
    assert!(project.get("link").is_none(), "a project without a repository has no link: {project}");
    let next = first["pagination"]["next"].as_i64().unwrap();
    let (_, _, second) = send(list(&format!("?teamId=team_acme&limit=2&until={next}"))).await;
    assert_eq!(names(&second), ["shop-a3", "blog-a2"]);
    let next = second["pagination"]["next"].as_i64().unwrap();
    let (_, _, last) = send(list(&format!("?teamId=team_acme&limit=2&until={next}"))).await;
    assert_eq!(names(&last), ["shop-a1"]);
    assert_eq!(
        (last["pagination"]["count"].as_u64(), last["pagination"]["next"].clone()),
        (Some(1), Value::Null)
    );
    // `from=<prev>` goes back a page.
    let prev = last["pagination"]["prev"].as_i64().unwrap();
    let (_, _, back) = send(list(&format!("?teamId=team_acme&limit=2&from={prev}"))).await;
    assert_eq!(names(&back), names(&second));

    let (_, _, shops) = send(list("?teamId=team_acme&search=shop")).await;
    assert_eq!(names(&shops), ["shop-a5", "shop-a4", "shop-a3", "shop-a1"]);
    assert_eq!(shops["pagination"], json!({"count": 4, "next": null, "prev": null}));
    let (_, _, personal) = send(list("")).await;
    assert_eq!(names(&personal), ["personal-shop"]);
    let (_, _, other) = send(list("?teamId=team_other")).await;
    assert_eq!(other, json!({"projects": [], "pagination": {"count": 0, "next": null, "prev": null}}));
    for bad in ["?limit=101", "?limit=0", "?limit=ten", "?until=yesterday"] {
        let (status, _, body) = send(list(bad)).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{bad}");
    }
    let calls = state(&sb).await["vercel"]["calls"].clone();
    assert!(
        calls
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["method"] == "GET" && c["path"] == "/v10/projects" && c["teamId"] == "team_acme")
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn n8n_workflows_and_activation() {
    let sb = start().await;
    let http = Client::new();
    let url = |p: &str| format!("{}/n8n/api/v1{p}", sb.base_url);
    let post = |p: &str, body: Value| http.post(url(p)).header("X-N8N-API-KEY", "n8n-key").json(&body);
    let get = |p: &str| http.get(url(p)).header("X-N8N-API-KEY", "n8n-key");
    let workflow = |name: &str, kind: &str, path: &str| {
        json!({"name": name, "settings": {"executionOrder": "v1"}, "connections": {},
            "nodes": [{"name": "Start", "type": kind, "typeVersion": 2, "position": [0, 0], "parameters": {"path": path}}]})
    };

    let (status, _, body) = send(http.get(url("/workflows"))).await;
    assert_eq!((status, body), (401, json!({"message": "'X-N8N-API-KEY' header required"})));
    let mut incomplete = workflow("hook", "n8n-nodes-base.webhook", "agent-a1");
    incomplete.as_object_mut().unwrap().remove("settings");
    let (status, _, body) = send(post("/workflows", incomplete)).await;
    assert_eq!(
        (status, body),
        (400, json!({"message": "request/body must have required property 'settings'"}))
    );
    let mut read_only = workflow("hook", "n8n-nodes-base.webhook", "agent-a1");
    read_only["active"] = json!(true);
    assert_eq!(send(post("/workflows", read_only)).await.2["message"], "request/body/active is read-only");

    let (status, _, hook) =
        send(post("/workflows", workflow("hook", "n8n-nodes-base.webhook", "/agent-a1"))).await;
    assert_eq!(status, 200, "{hook}");
    assert_eq!((hook["active"].as_bool(), hook["isArchived"].as_bool()), (Some(false), Some(false)));
    assert!(hook["createdAt"].is_string() && hook["updatedAt"].is_string());
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let (_, _, manual) =
        send(post("/workflows", workflow("manual", "n8n-nodes-base.manualTrigger", ""))).await;
    let (_, _, twin) = send(post("/workflows", workflow("twin", "n8n-nodes-base.webhook", "agent-a1"))).await;

    let (status, _, body) =
        send(post(&format!("/workflows/{}/activate", manual["id"].as_str().unwrap()), json!({}))).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("Workflow has no node to start the workflow"));
    let (status, _, body) = send(post(&format!("/workflows/{hook_id}/activate"), json!({}))).await;
    assert_eq!((status, body["active"].as_bool()), (200, Some(true)));
    let twin_activate = format!("/workflows/{}/activate", twin["id"].as_str().unwrap());
    assert_eq!(send(post(&twin_activate, json!({}))).await.0, 400, "webhook path already taken");

    let (_, _, page) = send(get("/workflows?limit=2")).await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, _, rest) = send(get(&format!("/workflows?limit=2&cursor={cursor}"))).await;
    assert_eq!((rest["data"][0]["name"].as_str(), rest["nextCursor"].clone()), (Some("twin"), Value::Null));
    let (_, _, active) = send(get("/workflows?active=true")).await;
    assert_eq!(
        (active["data"].as_array().map(Vec::len), active["data"][0]["id"].as_str()),
        (Some(1), Some(&*hook_id))
    );
    let (_, _, named) = send(get("/workflows?name=manual")).await;
    assert_eq!(named["data"][0]["id"], manual["id"]);
    assert_eq!(send(get("/workflows?active=maybe")).await.0, 400);

    let hooks = state(&sb).await["n8n"]["workflows"].clone();
    assert_eq!(hooks[0]["webhookPaths"], json!(["agent-a1"]));
    let (_, _, body) = send(post(&format!("/workflows/{hook_id}/deactivate"), json!({}))).await;
    assert_eq!(body["active"], false);
    let (status, _, body) =
        send(http.delete(url(&format!("/workflows/{hook_id}"))).header("X-N8N-API-KEY", "n8n-key")).await;
    assert_eq!((status, body["id"].as_str()), (200, Some(&*hook_id)));
    let (status, _, body) = send(get(&format!("/workflows/{hook_id}"))).await;
    assert_eq!((status, body), (404, json!({"message": "Not Found"})));
    let wrong = http.get(url("/workflows")).header("X-N8N-API-KEY", "another-key");
    assert_eq!(send(wrong).await.2, json!({"message": "unauthorized"}));
    sb.shutdown().await;
}
