// Vercel's official SDK (@vercel/sdk, generated from Vercel's own OpenAPI description, which
// validates every answer against its schemas) against the sandbox, for every operation Slipway
// calls: create a project linked to a GitHub repository with environment variables, read it,
// start a production deployment and poll it to READY, delete the project, get a 404 for it; and a
// wrong token refused the way Vercel refuses it.
//
// Usage: node vercel_client.mjs <sandbox base URL> <the sandbox's Vercel token> <owner/repo>
// (an existing GitHub repository: Vercel refuses to link one it cannot see)
import { Vercel } from "@vercel/sdk";

async function main() {
  const [base, token, repo] = process.argv.slice(2);
  const [org, repoName] = repo.split("/");
  const vercel = new Vercel({ bearerToken: token, serverURL: `${base}/vercel` });
  const teamId = "team_slipway";
  const name = `official-${Date.now()}`;

  const project = await vercel.projects.createProject({
    teamId,
    requestBody: {
      name,
      framework: "nextjs",
      gitRepository: { type: "github", repo },
      environmentVariables: [
        { key: "SUPABASE_URL", value: "https://x.supabase.co", target: ["production", "preview"], type: "encrypted" },
      ],
    },
  });
  if (project.name !== name || !project.id) throw new Error(`unexpected project ${JSON.stringify(project)}`);
  console.log(`projects.createProject: ${project.id}`);

  const read = await vercel.projects.getProject({ idOrName: name, teamId });
  if (read.id !== project.id) throw new Error(`getProject read ${read.id}`);
  console.log(`projects.getProject: ${read.id}`);

  const deployment = await vercel.deployments.createDeployment({
    teamId,
    requestBody: {
      name,
      project: name,
      target: "production",
      gitSource: { type: "github", org, repo: repoName, ref: "main" },
    },
  });
  console.log(`deployments.createDeployment: ${deployment.id} ${deployment.readyState}`);
  let state = deployment.readyState;
  for (let i = 0; i < 100 && state !== "READY"; i++) {
    await new Promise((r) => setTimeout(r, 100));
    state = (await vercel.deployments.getDeployment({ idOrUrl: deployment.id, teamId })).readyState;
  }
  if (state !== "READY") throw new Error(`deployment stayed ${state}`);
  console.log(`deployments.getDeployment: ${state}`);

  await vercel.projects.deleteProject({ idOrName: name, teamId });
  console.log("projects.deleteProject");
  try {
    await vercel.projects.getProject({ idOrName: name, teamId });
    throw new Error("a deleted project was found");
  } catch (e) {
    if (e.statusCode !== 404) throw e;
    console.log("projects.getProject after delete: 404");
  }

  const wrong = new Vercel({ bearerToken: "not-the-token", serverURL: `${base}/vercel` });
  try {
    await wrong.projects.getProject({ idOrName: name, teamId });
    throw new Error("a wrong token was accepted");
  } catch (e) {
    if (e.statusCode !== 403 || !String(e.body).includes("invalidToken")) throw e;
    console.log("wrong token: 403 forbidden invalidToken");
  }
  console.log("ok");
}

main().catch((e) => {
  // A schema mismatch names the field and the rule it broke.
  console.error(typeof e.pretty === "function" ? e.pretty() : e);
  process.exit(1);
});
