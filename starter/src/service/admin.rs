//! Operator and reporting operations: which GitHub account bills to which customer, a coding
//! job's status (its linked user may read it too), and client stacks. Admin-only operations
//! refuse other callers here, not in the handlers, so the REST and gRPC surfaces agree.

use slipway_proto::{
    jobs::{GitHubLink, JobStatus, job_workflow_id},
    stack::{ClientStackRequest, ClientStackStatus},
};

use super::{Kind, ServiceError};
use crate::{AppState, auth::Claims, temporal::GatewayError, validate};

/// The operations.
pub struct AdminService {
    app: AppState,
}

fn require_admin(user: &Claims) -> Result<(), ServiceError> {
    if user.is_admin() { Ok(()) } else { Err(ServiceError::admin_only()) }
}

/// Field-by-field problems of a link request. Pure.
pub fn link_problems(link: &GitHubLink) -> Vec<(String, String)> {
    let mut details = Vec::new();
    let login = &link.account;
    if login.is_empty() || login.len() > 39 || !login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        details.push(("account".to_owned(), "must be a GitHub login".to_owned()));
    }
    if validate::user_id(&link.user_id).is_err() {
        details.push(("userId".to_owned(), "must be a user id".to_owned()));
    }
    if !link.customer_id.starts_with("cus_") {
        details.push(("customerId".to_owned(), "must be a Stripe customer id (cus_…)".to_owned()));
    }
    details
}

impl AdminService {
    /// Over the app state.
    pub fn new(app: AppState) -> Self {
        Self { app }
    }

    /// Bills a GitHub account's jobs to a customer.
    pub async fn link_github(&self, user: &Claims, link: GitHubLink) -> Result<GitHubLink, ServiceError> {
        require_admin(user)?;
        let details = link_problems(&link);
        if !details.is_empty() {
            return Err(ServiceError::invalid("the link is invalid", details));
        }
        Ok(self.app.gateway.link_github(link).await?)
    }

    /// Every link.
    pub async fn github_links(&self, user: &Claims) -> Result<Vec<GitHubLink>, ServiceError> {
        require_admin(user)?;
        Ok(self.app.gateway.github_links().await?)
    }

    /// A job's status: admins, or the user the repository's account is linked to.
    pub async fn job_status(
        &self,
        user: &Claims,
        owner: &str,
        repo: &str,
        issue: u64,
    ) -> Result<JobStatus, ServiceError> {
        let full = format!("{owner}/{repo}");
        let not_found =
            || ServiceError::new(Kind::NotFound, "JOB_NOT_FOUND", format!("no job for {full}#{issue}"));
        let status = match self.app.gateway.job_status(&job_workflow_id(&full, issue)).await {
            Ok(s) => s,
            Err(GatewayError::NotFound | GatewayError::Closed) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        if !user.is_admin() {
            let link = self.app.gateway.github_link(owner).await?;
            if link.is_none_or(|l| l.user_id != user.sub) {
                return Err(not_found());
            }
        }
        Ok(status)
    }

    /// Has a job report its unbilled usage again (admins only). A job that owes nothing answers
    /// 409 `NOTHING_UNBILLED`; a closed job 404.
    pub async fn bill_job(
        &self,
        user: &Claims,
        owner: &str,
        repo: &str,
        issue: u64,
        request_id: String,
    ) -> Result<JobStatus, ServiceError> {
        require_admin(user)?;
        let status = self.job_status(user, owner, repo, issue).await?;
        if status.unbilled.is_empty() {
            return Err(ServiceError::new(
                Kind::Conflict,
                "NOTHING_UNBILLED",
                format!("{owner}/{repo}#{issue} owes no usage"),
            ));
        }
        let id = job_workflow_id(&format!("{owner}/{repo}"), issue);
        self.app.gateway.job_bill_again(&id, request_id).await?;
        Ok(status)
    }

    /// Starts a client's stack (or finds the one that exists): `(workflow id, existed)`.
    pub async fn start_stack(
        &self,
        user: &Claims,
        req: ClientStackRequest,
    ) -> Result<(String, bool), ServiceError> {
        require_admin(user)?;
        Ok(self.app.gateway.start_stack(req).await?)
    }

    /// A client's stack.
    pub async fn stack(&self, user: &Claims, client_id: &str) -> Result<ClientStackStatus, ServiceError> {
        require_admin(user)?;
        match self.app.gateway.stack_status(client_id).await {
            Ok(s) => Ok(s),
            Err(GatewayError::NotFound | GatewayError::Closed) => Err(ServiceError::new(
                Kind::NotFound,
                "STACK_NOT_FOUND",
                format!("no stack for client {client_id}"),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_fields_are_checked_one_by_one() {
        let link = |a: &str, u: &str, c: &str| GitHubLink {
            account: a.into(),
            user_id: u.into(),
            customer_id: c.into(),
        };
        assert!(link_problems(&link("acme", "u1", "cus_1")).is_empty());
        let fields: Vec<String> =
            link_problems(&link("a b", "", "sub_1")).into_iter().map(|(k, _)| k).collect();
        assert_eq!(fields, ["account", "userId", "customerId"]);
    }
}
