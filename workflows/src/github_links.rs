//! `GitHubLinks`: the registry (`github-links@<task queue>`) that links GitHub accounts (where the App is
//! installed) to Slipway users and the Stripe customers billed for their jobs. A workflow rather
//! than a database table because Slipway keeps all its state in Temporal; updates are serialized
//! by the workflow, so two admins linking at once cannot lose a write.

use slipway_proto::jobs::{GitHubLink, GitHubLinks};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

/// The links workflow.
#[workflow]
pub struct GitHubLinksWorkflow {
    state: GitHubLinks,
    changes: u64,
}

#[workflow_methods]
impl GitHubLinksWorkflow {
    /// Restores the links (first start or continue-as-new).
    #[init]
    pub fn new(_ctx: &WorkflowContextView, state: GitHubLinks) -> Self {
        Self { state, changes: 0 }
    }

    /// Idles between updates; continues-as-new when the history grows.
    #[run(name = "GitHubLinks")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        loop {
            let seen = ctx.state(|s| s.changes);
            ctx.wait_condition(|s: &Self| s.changes != seen).await?;
            if ctx.continue_as_new_suggested() && ctx.all_handlers_finished() {
                let state = ctx.state(|s| s.state.clone());
                ctx.continue_as_new(state, ContinueAsNewOptions::default())?;
            }
        }
    }

    /// Link (or re-link) an account.
    #[update]
    pub fn link(
        &mut self,
        _ctx: &mut temporalio_sdk::SyncWorkflowContext<Self>,
        link: GitHubLink,
    ) -> Result<GitHubLink, Box<dyn std::error::Error + Send + Sync>> {
        let key = link.account.to_ascii_lowercase();
        self.state.links.insert(key, link.clone());
        self.changes += 1;
        Ok(link)
    }

    /// The link of an account, if any.
    #[query]
    pub fn get(&self, _ctx: &WorkflowContextView, account: String) -> Option<GitHubLink> {
        self.state.links.get(&account.to_ascii_lowercase()).cloned()
    }

    /// Every link.
    #[query]
    pub fn list(&self, _ctx: &WorkflowContextView) -> Vec<GitHubLink> {
        self.state.links.values().cloned().collect()
    }
}
