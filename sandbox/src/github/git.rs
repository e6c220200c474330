//! Git data of the repositories the app is installed on: blobs, trees, commits, branches.
//!
//! A coding bot changes a repository without a clone, through the Git Data API: read the
//! branch head, create a tree on top of its tree, create a commit, create or move a branch,
//! and read files back through the Contents API. Each repository is a small object store in
//! memory that answers those calls with GitHub's shapes and refusals (an existing reference,
//! an unknown tree or parent, a move that is not a fast-forward without `force`).
//!
//! Object ids are 40 hex digits like git's, but SHA-256-based and truncated (the sandbox has
//! no SHA-1): blobs and trees are content-addressed, commits unique. Trees are stored flat
//! (path → blob); every directory also gets its own tree id so subtrees can be read and used
//! as `base_tree`. Only blobs (`100644`, `100755`, `120000`) can be written; submodules and
//! writing whole subtrees by id are not modelled.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Failure, GithubState, fail};
use crate::github_events::{BOT_LOGIN, repository, stable_id};
use crate::state::{Shared, json_response, parse_body, zulu};

const REFS_DOCS: &str = "https://docs.github.com/rest/git/refs";
const COMMITS_DOCS: &str = "https://docs.github.com/rest/git/commits";
const TREES_DOCS: &str = "https://docs.github.com/rest/git/trees";
const CONTENTS_DOCS: &str = "https://docs.github.com/rest/repos/contents#get-repository-content";
const BLOB_MODES: &[&str] = &["100644", "100755", "120000"];
const DEFAULT_BRANCH: &str = "main";

type Params = Query<Vec<(String, String)>>;

pub(super) struct GitRepo {
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) id: u64,
    pub(super) installation: u64,
    /// Branch name → commit id.
    pub(super) branches: BTreeMap<String, String>,
    /// Lowercase login → role (`admin`, `maintain`, `write`, `triage`, `read`).
    pub(super) collaborators: BTreeMap<String, String>,
    commits: HashMap<String, Commit>,
    /// Commit ids in the order they were made.
    log: Vec<String>,
    trees: HashMap<String, Tree>,
    blobs: HashMap<String, String>,
    seq: u64,
}

#[derive(Clone, PartialEq)]
struct Entry {
    mode: String,
    sha: String,
}

/// Flat: path relative to the tree → blob.
type Tree = BTreeMap<String, Entry>;

struct Commit {
    sha: String,
    tree: String,
    parents: Vec<String>,
    message: String,
    author: Value,
}

/// 40 hex digits naming an object of `kind` with `data`.
fn object_id(kind: &str, data: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{kind} {}\0", data.len()).as_bytes());
    hash.update(data);
    hex::encode(hash.finalize())[..40].to_owned()
}

fn tree_id(tree: &Tree) -> String {
    let listing: String = tree.iter().map(|(path, e)| format!("{} {path} {}\n", e.mode, e.sha)).collect();
    object_id("tree", listing.as_bytes())
}

/// The part of `tree` under directory `dir`, with paths relative to it.
fn subtree(tree: &Tree, dir: &str) -> Tree {
    let prefix = format!("{dir}/");
    tree.iter()
        .filter_map(|(p, e)| p.strip_prefix(&prefix).map(|rest| (rest.to_owned(), e.clone())))
        .collect()
}

/// Every directory of `tree` (`src`, `src/bin`, ...).
fn directories(tree: &Tree) -> BTreeSet<String> {
    tree.keys().flat_map(|path| path.match_indices('/').map(move |(i, _)| path[..i].to_owned())).collect()
}

/// A relative path without empty, `.` or `..` components.
pub(super) fn valid_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// A branch name git accepts, roughly (`git check-ref-format`).
fn valid_branch(name: &str) -> bool {
    valid_path(name)
        && !name.contains("..")
        && !name.ends_with(".lock")
        && !name.ends_with('.')
        && !name.chars().any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c))
}

/// Standard base64 with padding, in lines of 60 characters each ending in `\n`, as GitHub
/// returns file contents.
fn base64_lines(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for line in encoded.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out
}

impl GitRepo {
    /// A repository whose `main` has one commit with `files`.
    pub(super) fn new(
        owner: &str,
        name: &str,
        id: u64,
        installation: u64,
        files: &BTreeMap<String, String>,
    ) -> GitRepo {
        let mut repo = GitRepo {
            owner: owner.to_owned(),
            name: name.to_owned(),
            id,
            installation,
            branches: BTreeMap::new(),
            collaborators: BTreeMap::new(),
            commits: HashMap::new(),
            log: Vec::new(),
            trees: HashMap::new(),
            blobs: HashMap::new(),
            seq: 0,
        };
        let tree: Tree = files
            .iter()
            .map(|(path, content)| {
                (path.clone(), Entry { mode: "100644".to_owned(), sha: repo.put_blob(content) })
            })
            .collect();
        let tree = repo.put_tree(tree);
        let commit = repo.put_commit(tree, Vec::new(), "Initial commit".to_owned(), None);
        repo.branches.insert(DEFAULT_BRANCH.to_owned(), commit);
        repo
    }

    pub(super) fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The repository as payloads and pull requests embed it, with its real id.
    pub(super) fn repository_json(&self) -> Value {
        let mut repo = repository(&self.full_name());
        repo["id"] = json!(self.id);
        repo["node_id"] = json!(format!("R_kgDO{}", self.id));
        repo
    }

    fn api(&self, base_url: &str) -> String {
        format!("{base_url}/github/repos/{}", self.full_name())
    }

    fn put_blob(&mut self, content: &str) -> String {
        let sha = object_id("blob", content.as_bytes());
        self.blobs.entry(sha.clone()).or_insert_with(|| content.to_owned());
        sha
    }

    /// Stores `tree` and each of its directories as trees of their own; returns its id.
    fn put_tree(&mut self, tree: Tree) -> String {
        for dir in directories(&tree) {
            let sub = subtree(&tree, &dir);
            self.trees.entry(tree_id(&sub)).or_insert(sub);
        }
        let sha = tree_id(&tree);
        self.trees.entry(sha.clone()).or_insert(tree);
        sha
    }

    fn put_commit(
        &mut self,
        tree: String,
        parents: Vec<String>,
        message: String,
        author: Option<Value>,
    ) -> String {
        self.seq += 1;
        let now = Utc::now();
        let header =
            format!("tree {tree}\nparents {}\nseq {} {}\n\n{message}", parents.join(" "), self.seq, now);
        let sha = object_id("commit", header.as_bytes());
        let author = author.unwrap_or_else(|| {
            let email = format!("{}+{BOT_LOGIN}@users.noreply.github.com", stable_id("user", BOT_LOGIN));
            json!({"name": BOT_LOGIN, "email": email, "date": zulu(now)})
        });
        self.commits.insert(sha.clone(), Commit { sha: sha.clone(), tree, parents, message, author });
        self.log.push(sha.clone());
        sha
    }

    /// The commit a branch name (`main`, `heads/main`, `refs/heads/main`) or commit id names.
    fn resolve(&self, reference: &str) -> Option<&Commit> {
        let branch = reference.trim_start_matches("refs/").trim_start_matches("heads/");
        match self.branches.get(branch) {
            Some(sha) => self.commits.get(sha),
            None => self.commits.get(reference),
        }
    }

    fn tree_of(&self, commit: &str) -> Option<&Tree> {
        self.commits.get(commit).and_then(|c| self.trees.get(&c.tree))
    }

    /// Path → content of a commit's files.
    fn files_at(&self, commit: &str) -> BTreeMap<String, String> {
        self.tree_of(commit)
            .map(|tree| {
                tree.iter()
                    .map(|(p, e)| (p.clone(), self.blobs.get(&e.sha).cloned().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Commit ids reachable from `commit`, itself included.
    fn ancestors(&self, commit: &str) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([commit.to_owned()]);
        while let Some(sha) = queue.pop_front() {
            if let Some(c) = self.commits.get(&sha).filter(|_| seen.insert(sha.clone())) {
                queue.extend(c.parents.iter().cloned());
            }
        }
        seen
    }

    pub(super) fn is_ancestor(&self, ancestor: &str, commit: &str) -> bool {
        self.ancestors(commit).contains(ancestor)
    }

    /// Merges `head` into branch `base` like GitHub's merge button: a merge commit whose tree
    /// is `base`'s with the changes `head` made since their merge base. Returns its id.
    pub(super) fn merge(&mut self, base: &str, head_sha: &str, message: String) -> Option<String> {
        let base_sha = self.branches.get(base)?.clone();
        if self.is_ancestor(head_sha, &base_sha) {
            return Some(base_sha);
        }
        let base_ancestors = self.ancestors(&base_sha);
        let mut queue = VecDeque::from([head_sha.to_owned()]);
        let mut seen = HashSet::new();
        let mut merge_base = None;
        while let Some(sha) = queue.pop_front() {
            if base_ancestors.contains(&sha) {
                merge_base = Some(sha);
                break;
            }
            if let Some(c) = self.commits.get(&sha).filter(|_| seen.insert(sha.clone())) {
                queue.extend(c.parents.iter().cloned());
            }
        }
        let empty = Tree::new();
        let old = merge_base.as_deref().and_then(|m| self.tree_of(m)).unwrap_or(&empty);
        let new = self.tree_of(head_sha)?;
        let mut tree = self.tree_of(&base_sha)?.clone();
        for path in old.keys().filter(|p| !new.contains_key(*p)) {
            tree.remove(path);
        }
        for (path, entry) in new.iter().filter(|(p, e)| old.get(*p) != Some(*e)) {
            tree.insert(path.clone(), entry.clone());
        }
        let tree = self.put_tree(tree);
        let sha = self.put_commit(tree, vec![base_sha, head_sha.to_owned()], message, None);
        self.branches.insert(base.to_owned(), sha.clone());
        Some(sha)
    }

    /// `{path, status}` of the files a commit changed relative to its first parent.
    fn changes(&self, commit: &Commit) -> Vec<Value> {
        let empty = Tree::new();
        let new = self.trees.get(&commit.tree).unwrap_or(&empty);
        let old = commit.parents.first().and_then(|p| self.tree_of(p)).unwrap_or(&empty);
        let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        paths
            .into_iter()
            .filter_map(|path| {
                let status = match (old.get(path), new.get(path)) {
                    (None, Some(_)) => "added",
                    (Some(_), None) => "removed",
                    (Some(a), Some(b)) if a != b => "modified",
                    _ => return None,
                };
                Some(json!({"path": path, "status": status}))
            })
            .collect()
    }

    pub(super) fn dump(&self) -> Value {
        let head = self.branches.get(DEFAULT_BRANCH).cloned().unwrap_or_default();
        json!({"full_name": self.full_name(), "id": self.id, "installation_id": self.installation,
            "default_branch": DEFAULT_BRANCH, "branches": self.branches, "files": self.files_at(&head),
            "collaborators": self.collaborators})
    }

    pub(super) fn dump_commits(&self) -> Vec<Value> {
        self.log
            .iter()
            .filter_map(|sha| self.commits.get(sha))
            .map(|c| {
                json!({"repo": self.full_name(), "sha": c.sha, "message": c.message, "parents": c.parents,
                    "files_changed": self.changes(c)})
            })
            .collect()
    }

    fn ref_json(&self, base_url: &str, branch: &str, sha: &str) -> Value {
        let api = self.api(base_url);
        json!({"ref": format!("refs/heads/{branch}"), "node_id": format!("REF_kwDO{}", &sha[..12]),
            "url": format!("{api}/git/refs/heads/{branch}"),
            "object": {"type": "commit", "sha": sha, "url": format!("{api}/git/commits/{sha}")}})
    }

    fn commit_json(&self, base_url: &str, c: &Commit) -> Value {
        let api = self.api(base_url);
        let full = self.full_name();
        let parents: Vec<Value> = c
            .parents
            .iter()
            .map(|p| {
                json!({"sha": p, "url": format!("{api}/git/commits/{p}"),
                    "html_url": format!("https://github.com/{full}/commit/{p}")})
            })
            .collect();
        json!({
            "sha": c.sha, "node_id": format!("C_kwDO{}", &c.sha[..12]),
            "url": format!("{api}/git/commits/{}", c.sha),
            "html_url": format!("https://github.com/{full}/commit/{}", c.sha),
            "author": c.author, "committer": c.author, "message": c.message,
            "tree": {"sha": c.tree, "url": format!("{api}/git/trees/{}", c.tree)}, "parents": parents,
            "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null,
                "verified_at": null},
        })
    }

    /// Entries of `tree`: its top level, or everything below it when `recursive`.
    fn tree_entries(&self, base_url: &str, tree: &Tree, recursive: bool) -> Vec<Value> {
        let api = self.api(base_url);
        let mut entries: BTreeMap<String, Value> = BTreeMap::new();
        for dir in directories(tree).into_iter().filter(|d| recursive || !d.contains('/')) {
            let sha = tree_id(&subtree(tree, &dir));
            let url = format!("{api}/git/trees/{sha}");
            entries.insert(
                dir.clone(),
                json!({"path": dir, "mode": "040000", "type": "tree", "sha": sha, "url": url}),
            );
        }
        for (path, e) in tree.iter().filter(|(p, _)| recursive || !p.contains('/')) {
            let size = self.blobs.get(&e.sha).map_or(0, String::len);
            entries.insert(
                path.clone(),
                json!({"path": path, "mode": e.mode, "type": "blob", "sha": e.sha, "size": size,
                    "url": format!("{api}/git/blobs/{}", e.sha)}),
            );
        }
        entries.into_values().collect()
    }

    fn tree_json(&self, base_url: &str, sha: &str, recursive: bool) -> Value {
        let tree = self.trees.get(sha).cloned().unwrap_or_default();
        json!({"sha": sha, "url": format!("{}/git/trees/{sha}", self.api(base_url)),
            "tree": self.tree_entries(base_url, &tree, recursive), "truncated": false})
    }

    /// A Contents API entry for a file or directory at `path` of the tree, at `git_ref`.
    fn content_json(
        &self,
        base_url: &str,
        path: &str,
        git_ref: &str,
        file: Option<&Entry>,
        tree: &Tree,
    ) -> Value {
        let api = self.api(base_url);
        let full = self.full_name();
        let name = path.rsplit('/').next().unwrap_or(path);
        let self_url = format!("{api}/contents/{path}?ref={git_ref}");
        match file {
            Some(e) => {
                let content = self.blobs.get(&e.sha).map_or("", String::as_str);
                let git_url = format!("{api}/git/blobs/{}", e.sha);
                let html_url = format!("https://github.com/{full}/blob/{git_ref}/{path}");
                json!({"type": "file", "encoding": "base64", "size": content.len(), "name": name,
                    "path": path,
                    "content": base64_lines(content.as_bytes()), "sha": e.sha, "url": self_url,
                    "git_url": git_url, "html_url": html_url,
                    "download_url": format!("https://raw.githubusercontent.com/{full}/{git_ref}/{path}"),
                    "_links": {"self": self_url, "git": git_url, "html": html_url}})
            }
            None => {
                let sha = tree_id(&subtree(tree, path));
                let git_url = format!("{api}/git/trees/{sha}");
                let html_url = format!("https://github.com/{full}/tree/{git_ref}/{path}");
                json!({"type": "dir", "size": 0, "name": name, "path": path, "sha": sha, "url": self_url,
                    "git_url": git_url, "html_url": html_url, "download_url": null,
                    "_links": {"self": self_url, "git": git_url, "html": html_url}})
            }
        }
    }
}

fn invalid(message: &str, doc: &str) -> Response {
    fail(StatusCode::UNPROCESSABLE_ENTITY, message, doc)
}

fn not_supplied(field: &str, doc: &str) -> Response {
    invalid(&format!("Invalid request.\n\n\"{field}\" wasn't supplied."), doc)
}

fn body_object(body: &[u8], doc: &str) -> Result<Map<String, Value>, Failure> {
    match parse_body(body) {
        Ok(Value::Object(body)) => Ok(body),
        _ => Err(Failure::new(StatusCode::BAD_REQUEST, "Problems parsing JSON", doc)),
    }
}

/// Locks the state and runs `f` on the installed repository the request may act on.
fn with_repo(
    app: &Shared,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
    doc: &str,
    f: impl FnOnce(&mut GitRepo) -> Response,
) -> Response {
    let mut state = app.lock();
    let gh: &mut GithubState = &mut state.github;
    match gh.authorized_repo(headers, owner, name, doc) {
        Ok(repo) => f(repo),
        Err(failure) => failure.into_response(),
    }
}

/// `GET /repos/{owner}/{repo}/git/ref/heads/{branch}`.
pub(super) async fn get_ref(
    State(app): State<Shared>,
    Path((owner, name, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{REFS_DOCS}#get-a-reference");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| {
        match reference.strip_prefix("heads/").and_then(|b| repo.branches.get(b).map(|sha| (b, sha))) {
            Some((branch, sha)) => json_response(StatusCode::OK, repo.ref_json(&app.base_url, branch, sha)),
            None => fail(StatusCode::NOT_FOUND, "Not Found", &doc),
        }
    })
}

/// `POST /repos/{owner}/{repo}/git/refs` `{"ref": "refs/heads/<branch>", "sha"}`.
pub(super) async fn create_ref(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{REFS_DOCS}#create-a-reference");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| {
        let body = match body_object(&body, &doc) {
            Ok(body) => body,
            Err(failure) => return failure.into_response(),
        };
        let Some(reference) = body.get("ref").and_then(Value::as_str) else {
            return not_supplied("ref", &doc);
        };
        let Some(sha) = body.get("sha").and_then(Value::as_str) else {
            return not_supplied("sha", &doc);
        };
        // Guess: the wording for names outside `refs/heads/` or not valid; only branches
        // are modelled.
        let Some(branch) = reference.strip_prefix("refs/heads/").filter(|b| valid_branch(b)) else {
            return invalid("Reference name is invalid", &doc);
        };
        if repo.branches.contains_key(branch) {
            return invalid("Reference already exists", &doc);
        }
        if !repo.commits.contains_key(sha) {
            return invalid("Object does not exist", &doc);
        }
        repo.branches.insert(branch.to_owned(), sha.to_owned());
        tracing::info!(repo = %repo.full_name(), branch, "github: branch created");
        json_response(StatusCode::CREATED, repo.ref_json(&app.base_url, branch, sha))
    })
}

/// `PATCH /repos/{owner}/{repo}/git/refs/heads/{branch}` `{"sha", "force"?}`.
pub(super) async fn update_ref(
    State(app): State<Shared>,
    Path((owner, name, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{REFS_DOCS}#update-a-reference");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| {
        let body = match body_object(&body, &doc) {
            Ok(body) => body,
            Err(failure) => return failure.into_response(),
        };
        let Some(sha) = body.get("sha").and_then(Value::as_str) else {
            return not_supplied("sha", &doc);
        };
        let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
        let Some((branch, current)) =
            reference.strip_prefix("heads/").and_then(|b| repo.branches.get(b).map(|c| (b, c.clone())))
        else {
            return invalid("Reference does not exist", &doc);
        };
        if !repo.commits.contains_key(sha) {
            return invalid("Object does not exist", &doc);
        }
        if !force && !repo.is_ancestor(&current, sha) {
            return invalid("Update is not a fast forward", &doc);
        }
        repo.branches.insert(branch.to_owned(), sha.to_owned());
        json_response(StatusCode::OK, repo.ref_json(&app.base_url, branch, sha))
    })
}

/// `DELETE /repos/{owner}/{repo}/git/refs/heads/{branch}`; the default branch stays.
pub(super) async fn delete_ref(
    State(app): State<Shared>,
    Path((owner, name, reference)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{REFS_DOCS}#delete-a-reference");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| match reference.strip_prefix("heads/") {
        // Guess: GitHub refuses to delete the default branch; the wording is not documented.
        Some(DEFAULT_BRANCH) => invalid("Cannot delete the default branch", &doc),
        Some(branch) if repo.branches.remove(branch).is_some() => StatusCode::NO_CONTENT.into_response(),
        _ => invalid("Reference does not exist", &doc),
    })
}

/// `GET /repos/{owner}/{repo}/git/commits/{sha}`.
pub(super) async fn get_commit(
    State(app): State<Shared>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{COMMITS_DOCS}#get-a-commit-object");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| match repo.commits.get(&sha) {
        Some(commit) => json_response(StatusCode::OK, repo.commit_json(&app.base_url, commit)),
        None => fail(StatusCode::NOT_FOUND, "Not Found", &doc),
    })
}

/// `POST /repos/{owner}/{repo}/git/commits` `{"message", "tree", "parents", "author"?}`.
pub(super) async fn create_commit(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{COMMITS_DOCS}#create-a-commit");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| {
        let body = match body_object(&body, &doc) {
            Ok(body) => body,
            Err(failure) => return failure.into_response(),
        };
        let Some(message) = body.get("message").and_then(Value::as_str) else {
            return not_supplied("message", &doc);
        };
        let Some(tree) = body.get("tree").and_then(Value::as_str) else {
            return not_supplied("tree", &doc);
        };
        let parents: Vec<String> = match body.get("parents") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
                list.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(_) => {
                return invalid(
                    "Invalid request.\n\nFor 'properties/parents', it is not an array of strings.",
                    &doc,
                );
            }
        };
        if !repo.trees.contains_key(tree) {
            return invalid("Tree SHA does not exist", &doc);
        }
        if parents.iter().any(|p| !repo.commits.contains_key(p)) {
            return invalid("Parent SHA does not exist or is not a commit object", &doc);
        }
        let author =
            body.get("author").filter(|a| a.get("name").is_some() && a.get("email").is_some()).map(|a| {
                let date =
                    a.get("date").and_then(Value::as_str).map_or_else(|| zulu(Utc::now()), str::to_owned);
                json!({"name": a["name"], "email": a["email"], "date": date})
            });
        let sha = repo.put_commit(tree.to_owned(), parents, message.to_owned(), author);
        tracing::info!(repo = %repo.full_name(), %sha, "github: commit created");
        let commit = &repo.commits[&sha];
        json_response(StatusCode::CREATED, repo.commit_json(&app.base_url, commit))
    })
}

/// `POST /repos/{owner}/{repo}/git/trees` `{"base_tree"?, "tree": [{path, mode, type, content | sha}]}`;
/// `"sha": null` deletes the path (and everything under it).
pub(super) async fn create_tree(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let doc = format!("{TREES_DOCS}#create-a-tree");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| {
        let body = match body_object(&body, &doc) {
            Ok(body) => body,
            Err(failure) => return failure.into_response(),
        };
        let Some(entries) = body.get("tree").and_then(Value::as_array) else {
            return not_supplied("tree", &doc);
        };
        let mut tree = match body.get("base_tree") {
            None | Some(Value::Null) => Tree::new(),
            Some(Value::String(base)) => match repo.trees.get(base) {
                Some(tree) => tree.clone(),
                None => return invalid("Invalid tree info", &doc),
            },
            Some(_) => return invalid("Invalid tree info", &doc),
        };
        for entry in entries {
            let Some(path) = entry.get("path").and_then(Value::as_str) else {
                return not_supplied("tree.path", &doc);
            };
            if !valid_path(path) {
                // Guess: GitHub's wording for a path like `a//b` or `../x`.
                return invalid("tree.path contains a malformed path component", &doc);
            }
            let mode = entry.get("mode").and_then(Value::as_str).unwrap_or("100644");
            let kind = entry.get("type").and_then(Value::as_str).unwrap_or("blob");
            if kind != "blob" || !BLOB_MODES.contains(&mode) {
                return invalid("Invalid tree info", &doc);
            }
            let blob = match (entry.get("content"), entry.get("sha")) {
                (Some(Value::String(content)), None | Some(Value::Null)) => Some(repo.put_blob(content)),
                (None, Some(Value::Null)) => None,
                (None, Some(Value::String(sha))) if repo.blobs.contains_key(sha) => Some(sha.clone()),
                _ => return invalid("Invalid tree info", &doc),
            };
            // A path replaces whatever was there: a file, a directory, or a file where one of
            // its directories goes.
            let prefix = format!("{path}/");
            tree.retain(|p, _| p != path && !p.starts_with(&prefix) && !path.starts_with(&format!("{p}/")));
            if let Some(sha) = blob {
                tree.insert(path.to_owned(), Entry { mode: mode.to_owned(), sha });
            }
        }
        let sha = repo.put_tree(tree);
        json_response(StatusCode::CREATED, repo.tree_json(&app.base_url, &sha, false))
    })
}

/// `GET /repos/{owner}/{repo}/git/trees/{tree_sha}` (a tree id, commit id or branch);
/// `recursive` with any value lists everything below.
pub(super) async fn get_tree(
    State(app): State<Shared>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let doc = format!("{TREES_DOCS}#get-a-tree");
    let recursive = query.iter().any(|(k, _)| k == "recursive");
    with_repo(&app, &headers, &owner, &name, &doc, |repo| {
        let tree = if repo.trees.contains_key(&sha) {
            Some(sha.clone())
        } else {
            repo.resolve(&sha).map(|c| c.tree.clone())
        };
        match tree {
            Some(tree) => json_response(StatusCode::OK, repo.tree_json(&app.base_url, &tree, recursive)),
            None => fail(StatusCode::NOT_FOUND, "Not Found", &doc),
        }
    })
}

/// `GET /repos/{owner}/{repo}/contents/{path}?ref=`.
pub(super) async fn get_contents(
    State(app): State<Shared>,
    Path((owner, name, path)): Path<(String, String, String)>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    contents(&app, &headers, &owner, &name, path.trim_matches('/'), &query)
}

/// `PUT /repos/{owner}/{repo}/contents/{path}` `{"message", "content" (base64), "sha"?,
/// "branch"?}`: one commit creating or replacing a file on a branch (default `main`). Replacing
/// needs the blob `sha` of the file replaced (422 without it, 409 when it is not the current
/// one); 201 for a new file, 200 for a replaced one, with the `content` and the `commit`.
pub(super) async fn put_contents(
    State(app): State<Shared>,
    Path((owner, name, path)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use base64::Engine as _;
    let doc = "https://docs.github.com/rest/repos/contents#create-or-update-file-contents";
    let path = path.trim_matches('/').to_owned();
    with_repo(&app, &headers, &owner, &name, doc, |repo| {
        let body = match body_object(&body, doc) {
            Ok(body) => body,
            Err(failure) => return failure.into_response(),
        };
        let Some(message) = body.get("message").and_then(Value::as_str) else {
            return not_supplied("message", doc);
        };
        let Some(encoded) = body.get("content").and_then(Value::as_str) else {
            return not_supplied("content", doc);
        };
        let compact: String = encoded.split_whitespace().collect();
        let Some(content) = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return invalid("content is not valid Base64", doc);
        };
        if !valid_path(&path) {
            return invalid(&format!("path {path:?} is not valid"), doc);
        }
        let branch = body.get("branch").and_then(Value::as_str).unwrap_or(DEFAULT_BRANCH).to_owned();
        let Some(head) = repo.branches.get(&branch).cloned() else {
            return fail(StatusCode::NOT_FOUND, &format!("Branch {branch} not found"), doc);
        };
        let mut tree = repo.tree_of(&head).cloned().unwrap_or_default();
        let existing = tree.get(&path).map(|e| e.sha.clone());
        match (existing.as_deref(), body.get("sha").and_then(Value::as_str)) {
            (Some(_), None) => return not_supplied("sha", doc),
            (Some(current), Some(given)) if current != given => {
                return fail(StatusCode::CONFLICT, &format!("{path} does not match {given}"), doc);
            }
            _ => {}
        }
        let blob = repo.put_blob(&content);
        tree.insert(path.clone(), Entry { mode: "100644".to_owned(), sha: blob.clone() });
        let tree = repo.put_tree(tree);
        let author = body
            .get("committer")
            .filter(|a| a.get("name").is_some() && a.get("email").is_some())
            .map(|a| json!({"name": a["name"], "email": a["email"], "date": zulu(Utc::now())}));
        let sha = repo.put_commit(tree, vec![head], message.to_owned(), author);
        repo.branches.insert(branch.clone(), sha.clone());
        tracing::info!(repo = %repo.full_name(), %path, %sha, "github: file committed");
        let files = repo.trees.get(&repo.commits[&sha].tree).cloned().unwrap_or_default();
        let mut file = repo.content_json(&app.base_url, &path, &branch, files.get(&path), &files);
        if let Some(map) = file.as_object_mut() {
            map.remove("content");
            map.remove("encoding");
        }
        let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
        json_response(
            status,
            json!({"content": file, "commit": repo.commit_json(&app.base_url, &repo.commits[&sha])}),
        )
    })
}

/// `GET /repos/{owner}/{repo}/contents?ref=`: the top directory.
pub(super) async fn get_root_contents(
    State(app): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    contents(&app, &headers, &owner, &name, "", &query)
}

/// A file (base64 content) or a directory listing at `path` of `ref` (default `main`).
fn contents(
    app: &Shared,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
    path: &str,
    query: &[(String, String)],
) -> Response {
    let git_ref = query.iter().find(|(k, _)| k == "ref").map_or(DEFAULT_BRANCH, |(_, v)| v.as_str());
    with_repo(app, headers, owner, name, CONTENTS_DOCS, |repo| {
        let Some(commit) = repo.resolve(git_ref) else {
            return fail(
                StatusCode::NOT_FOUND,
                &format!("No commit found for the ref {git_ref}"),
                CONTENTS_DOCS,
            );
        };
        let tree = repo.trees.get(&commit.tree).cloned().unwrap_or_default();
        if let Some(entry) = tree.get(path) {
            return json_response(
                StatusCode::OK,
                repo.content_json(&app.base_url, path, git_ref, Some(entry), &tree),
            );
        }
        let dir = if path.is_empty() { tree.clone() } else { subtree(&tree, path) };
        if !path.is_empty() && dir.is_empty() {
            return fail(StatusCode::NOT_FOUND, "Not Found", CONTENTS_DOCS);
        }
        let listing: Vec<Value> = repo
            .tree_entries(&app.base_url, &dir, false)
            .iter()
            .filter_map(|e| e["path"].as_str())
            .map(|child| {
                let full = if path.is_empty() { child.to_owned() } else { format!("{path}/{child}") };
                repo.content_json(&app.base_url, &full, git_ref, tree.get(&full), &tree)
            })
            .map(|mut e| {
                if let Some(map) = e.as_object_mut() {
                    map.remove("content");
                    map.remove("encoding");
                }
                e
            })
            .collect();
        json_response(StatusCode::OK, Value::from(listing))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_github_layout() {
        assert_eq!(base64_lines(b""), "");
        assert_eq!(base64_lines(b"# shop\n"), "IyBzaG9wCg==\n");
        assert_eq!(base64_lines(b"ab"), "YWI=\n");
        let long = base64_lines(&[b'x'; 100]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].len() == 60 && lines[1].len() == 60);
        assert!(long.ends_with("==\n"));
    }

    #[test]
    fn merge_applies_head_changes_on_top_of_base() {
        let files = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".to_owned(), "1".to_owned())]);
        let mut repo = GitRepo::new("acme", "shop", 1, 1, &files);
        let root = repo.branches["main"].clone();
        let mut head_tree = repo.tree_of(&root).unwrap().clone();
        head_tree.insert("c".to_owned(), Entry { mode: "100644".to_owned(), sha: repo.put_blob("new") });
        head_tree.remove("a");
        let head_tree = repo.put_tree(head_tree);
        let head = repo.put_commit(head_tree, vec![root.clone()], "head".to_owned(), None);
        let mut base_tree = repo.tree_of(&root).unwrap().clone();
        base_tree.insert("b".to_owned(), Entry { mode: "100644".to_owned(), sha: repo.put_blob("2") });
        let base_tree = repo.put_tree(base_tree);
        let base = repo.put_commit(base_tree, vec![root], "base".to_owned(), None);
        repo.branches.insert("main".to_owned(), base);
        let merged = repo.merge("main", &head, "merge".to_owned()).unwrap();
        let files = repo.files_at(&merged);
        assert_eq!(files.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(files["b"], "2");
        assert!(repo.is_ancestor(&head, &merged));
    }
}
