// GitHub's official JavaScript client (@octokit/rest) against the sandbox, for every operation
// Slipway calls, authenticated as Slipway authenticates: an App JWT for an installation token,
// the installation token on the repository (contents, git data, pulls, comments, permission), and
// a personal access token for the Actions dispatch and client-stack repositories (generate from a
// template, read, delete). Each answer is read through the fields Octokit's types declare; a wrong
// token is refused with 401 "Bad credentials".
//
// Usage: node octokit_client.mjs <sandbox base URL> <the sandbox's GitHub PAT> <App id> <App key PEM file>
import { createSign } from "node:crypto";
import { readFileSync } from "node:fs";
import { Octokit } from "@octokit/rest";

const [base, pat, appId, keyFile] = process.argv.slice(2);
const baseUrl = `${base}/github`;
const account = `octo${Date.now()}`;
const [owner, repo] = [account, "shop"];

function check(cond, what) {
  if (!cond) throw new Error(`unexpected answer: ${what}`);
}

function appJwt() {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: "RS256", typ: "JWT" })}.${b64({ iat: now - 60, exp: now + 540, iss: appId })}`;
  const signature = createSign("RSA-SHA256").update(unsigned).sign(readFileSync(keyFile), "base64url");
  return `${unsigned}.${signature}`;
}

async function control(path, body) {
  const res = await fetch(`${base}/_sandbox/github${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`sandbox control ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

async function main() {
  // What a customer does on github.com: install the App on a repository, add a collaborator.
  const installed = await control("/installations", { account, repos: [`${owner}/${repo}`] });
  await control(`/repos/${owner}/${repo}/collaborators/maintainer`, { permission: "write" });
  const installationId = installed.id ?? installed.installation_id;

  const asApp = new Octokit({ auth: appJwt(), baseUrl });
  const { data: token } = await asApp.rest.apps.createInstallationAccessToken({
    installation_id: installationId,
    repositories: [repo],
    permissions: { contents: "write", pull_requests: "write", issues: "write", metadata: "read" },
  });
  check(typeof token.token === "string" && !Number.isNaN(Date.parse(token.expires_at)), "access token");
  console.log(`apps.createInstallationAccessToken: expires ${token.expires_at}`);

  const gh = new Octokit({ auth: token.token, baseUrl });
  const { data: r } = await gh.rest.repos.get({ owner, repo });
  check(r.full_name === `${owner}/${repo}` && typeof r.default_branch === "string" && r.owner.login, "repo");
  console.log(`repos.get: ${r.full_name} (${r.default_branch})`);

  const { data: readme } = await gh.rest.repos.getContent({ owner, repo, path: "README.md" });
  check(!Array.isArray(readme) && readme.type === "file" && readme.encoding === "base64", "contents");
  console.log(`repos.getContent: ${readme.path} ${Buffer.from(readme.content, "base64").length} bytes`);

  const { data: ref } = await gh.rest.git.getRef({ owner, repo, ref: `heads/${r.default_branch}` });
  check(ref.object.type === "commit" && /^[0-9a-f]{40}$/.test(ref.object.sha), "ref");
  const { data: head } = await gh.rest.git.getCommit({ owner, repo, commit_sha: ref.object.sha });
  check(/^[0-9a-f]{40}$/.test(head.tree.sha), "commit");
  console.log(`git.getRef + git.getCommit: ${head.sha.slice(0, 7)}`);

  const { data: listing } = await gh.rest.git.getTree({ owner, repo, tree_sha: r.default_branch, recursive: "1" });
  check(listing.truncated === false && listing.tree.some((e) => e.path === "README.md" && e.type === "blob"), "tree");
  console.log(`git.getTree (recursive): ${listing.tree.length} entries`);

  const { data: tree } = await gh.rest.git.createTree({
    owner, repo, base_tree: head.tree.sha,
    tree: [{ path: "src/new.rs", mode: "100644", type: "blob", content: "pub fn new() {}\n" }],
  });
  const { data: commit } = await gh.rest.git.createCommit({
    owner, repo, message: "Add new", tree: tree.sha, parents: [head.sha],
  });
  check(commit.parents[0].sha === head.sha && commit.tree.sha === tree.sha, "new commit");
  console.log(`git.createTree + git.createCommit: ${commit.sha.slice(0, 7)}`);

  const branch = "slipway/issue-1";
  const { data: created } = await gh.rest.git.createRef({ owner, repo, ref: `refs/heads/${branch}`, sha: commit.sha });
  check(created.ref === `refs/heads/${branch}`, "created ref");
  try {
    await gh.rest.git.createRef({ owner, repo, ref: `refs/heads/${branch}`, sha: commit.sha });
    throw new Error("a second ref of the same name was created");
  } catch (e) {
    check(e.status === 422, `existing ref: ${e.status}`);
  }
  const { data: moved } = await gh.rest.git.updateRef({ owner, repo, ref: `heads/${branch}`, sha: commit.sha, force: true });
  check(moved.object.sha === commit.sha, "moved ref");
  console.log("git.createRef, 422 when it exists, git.updateRef");

  const { data: pr } = await gh.rest.pulls.create({ owner, repo, head: branch, base: r.default_branch, title: "Add new", body: "Closes #1" });
  check(pr.state === "open" && pr.head.ref === branch && typeof pr.html_url === "string", "pull request");
  const { data: open } = await gh.rest.pulls.list({ owner, repo, head: `${owner}:${branch}`, state: "open" });
  check(open.length === 1 && open[0].number === pr.number, "pulls.list");
  console.log(`pulls.create + pulls.list: #${pr.number}`);

  const { data: comment } = await gh.rest.issues.createComment({ owner, repo, issue_number: 1, body: "queued" });
  const { data: edited } = await gh.rest.issues.updateComment({ owner, repo, comment_id: comment.id, body: "done" });
  check(edited.id === comment.id && edited.body === "done", "comment");
  console.log(`issues.createComment + issues.updateComment: ${comment.id}`);

  const { data: perm } = await gh.rest.repos.getCollaboratorPermissionLevel({ owner, repo, username: "maintainer" });
  check(perm.permission === "write" && perm.user.login === "maintainer", `permission ${perm.permission}`);
  console.log(`repos.getCollaboratorPermissionLevel: ${perm.permission}`);

  // The Contents API's write (Slipway commits through Git Data, but people's tools use it).
  const b64 = (t) => Buffer.from(t).toString("base64");
  const put = await gh.rest.repos.createOrUpdateFileContents({ owner, repo, path: "docs/NOTES.md", message: "Add notes", content: b64("notes\n") });
  check(put.status === 201 && put.data.content.path === "docs/NOTES.md" && put.data.commit.sha, "file created");
  const again = await gh.rest.repos.createOrUpdateFileContents({ owner, repo, path: "docs/NOTES.md", message: "Edit notes", content: b64("notes, edited\n"), sha: put.data.content.sha });
  check(again.status === 200 && again.data.commit.parents[0].sha === put.data.commit.sha, "file updated");
  try {
    await gh.rest.repos.createOrUpdateFileContents({ owner, repo, path: "docs/NOTES.md", message: "Stale", content: b64("x\n"), sha: put.data.content.sha });
    throw new Error("a stale sha was accepted");
  } catch (e) {
    check(e.status === 409, `stale sha: ${e.status}`);
  }
  const { data: notes } = await gh.rest.repos.getContent({ owner, repo, path: "docs/NOTES.md" });
  check(Buffer.from(notes.content, "base64").toString() === "notes, edited\n", "updated content");
  console.log("repos.createOrUpdateFileContents: 201, 200, 409 on a stale sha");

  // The operator's token: the Actions dispatch and the client stacks' repositories.
  const ops = new Octokit({ auth: pat, baseUrl });
  const dispatch = await ops.request("POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches", {
    owner: "slipway", repo: "agents", workflow_id: "provision-agent.yml", ref: "main",
    inputs: { job_id: "j1", agent_id: "a1", region: "fsn1", callback_url: "https://example.com/cb" },
    return_run_details: true,
  });
  check([200, 204].includes(dispatch.status), `dispatch ${dispatch.status}`);
  console.log(`actions.createWorkflowDispatch: ${dispatch.status}`);

  const name = `acme-${Date.now()}`;
  const { data: generated } = await ops.rest.repos.createUsingTemplate({
    template_owner: "slipway", template_repo: "client-stack-template", owner: "slipway-clients", name, private: true,
  });
  check(generated.full_name === `slipway-clients/${name}` && generated.private === true, "generated repo");
  console.log(`repos.createUsingTemplate: ${generated.full_name}`);
  await ops.rest.repos.delete({ owner: "slipway-clients", repo: name });
  try {
    await ops.rest.repos.get({ owner: "slipway-clients", repo: name });
    throw new Error("a deleted repository was found");
  } catch (e) {
    check(e.status === 404, `deleted repo: ${e.status}`);
  }
  console.log("repos.delete, then get: 404");

  const wrong = new Octokit({ auth: "ghp_not_the_token", baseUrl });
  try {
    await wrong.rest.repos.get({ owner, repo });
    throw new Error("a wrong token was accepted");
  } catch (e) {
    check(e.status === 401 && e.response?.data?.message === "Bad credentials", `wrong token: ${e.status}`);
    console.log("wrong token: 401 Bad credentials");
  }
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
