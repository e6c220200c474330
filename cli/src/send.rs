//! `slipway send stripe|github`: play Stripe or GitHub against a running starter.
//!
//! Events are built in the providers' real shapes (Stripe's own example objects, GitHub's
//! documented payloads: the sandbox's public builders, the same ones the sandbox delivers) and
//! signed exactly as the providers sign: `Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of
//! "<t>.<body>">` with `STRIPE_WEBHOOK_SECRET`, `X-Hub-Signature-256: sha256=<HMAC-SHA256 of
//! body>` with `GITHUB_WEBHOOK_SECRET`. The answer's status goes to stderr, its JSON body to
//! stdout; a non-2xx answer exits 1. `--wait` then follows the agent or job until it reaches a
//! state.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde_json::Value;
use slipway_sandbox::{github_events, stripe};

use crate::{
    api::{Api, Identity, api_error, print_json, unreachable},
    env,
    progress::Progress,
};

/// `slipway send …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SendCommand {
    /// Send a signed Stripe webhook event to /webhooks/stripe.
    Stripe(StripeArgs),
    /// Send a signed GitHub App webhook delivery to /webhooks/github.
    Github(GithubArgs),
}

/// The Stripe event types Slipway handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StripeEvent {
    /// A paid subscription Checkout (names an agent: provisions it).
    #[value(name = "checkout.session.completed")]
    CheckoutCompleted,
    /// The delayed payment of a Checkout succeeded (provisions its agent).
    #[value(name = "checkout.session.async_payment_succeeded")]
    CheckoutAsyncPaymentSucceeded,
    /// A subscription was created.
    #[value(name = "customer.subscription.created")]
    SubscriptionCreated,
    /// A subscription changed (use --status).
    #[value(name = "customer.subscription.updated")]
    SubscriptionUpdated,
    /// A subscription ended (destroys the customer's agents).
    #[value(name = "customer.subscription.deleted")]
    SubscriptionDeleted,
    /// A subscription's collection was paused (status `paused`).
    #[value(name = "customer.subscription.paused")]
    SubscriptionPaused,
    /// A paused subscription was resumed (status `active`).
    #[value(name = "customer.subscription.resumed")]
    SubscriptionResumed,
    /// The customer was deleted (Stripe cancels all of its subscriptions).
    #[value(name = "customer.deleted")]
    CustomerDeleted,
    /// A renewal failed (suspends the customer's agents).
    #[value(name = "invoice.payment_failed")]
    InvoicePaymentFailed,
    /// An invoice was paid (resumes suspended agents).
    #[value(name = "invoice.paid")]
    InvoicePaid,
    /// A sent invoice is past its due date.
    #[value(name = "invoice.overdue")]
    InvoiceOverdue,
    /// An invoice was voided.
    #[value(name = "invoice.voided")]
    InvoiceVoided,
    /// An invoice was marked uncollectible.
    #[value(name = "invoice.marked_uncollectible")]
    InvoiceMarkedUncollectible,
}

impl StripeEvent {
    fn name(self) -> &'static str {
        match self {
            Self::CheckoutCompleted => "checkout.session.completed",
            Self::CheckoutAsyncPaymentSucceeded => "checkout.session.async_payment_succeeded",
            Self::SubscriptionCreated => "customer.subscription.created",
            Self::SubscriptionUpdated => "customer.subscription.updated",
            Self::SubscriptionDeleted => "customer.subscription.deleted",
            Self::SubscriptionPaused => "customer.subscription.paused",
            Self::SubscriptionResumed => "customer.subscription.resumed",
            Self::CustomerDeleted => "customer.deleted",
            Self::InvoicePaymentFailed => "invoice.payment_failed",
            Self::InvoicePaid => "invoice.paid",
            Self::InvoiceOverdue => "invoice.overdue",
            Self::InvoiceVoided => "invoice.voided",
            Self::InvoiceMarkedUncollectible => "invoice.marked_uncollectible",
        }
    }
}

/// Where to send and how long to follow up.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Delivery {
    /// Starter URL [default: http://$SLIPWAY_HTTP_ADDR].
    #[arg(long)]
    url: Option<String>,
    /// Signing secret [default: the provider's secret from the environment or the dev defaults].
    #[arg(long)]
    secret: Option<String>,
    /// After a 2xx, wait until the agent (Stripe checkout) or job (GitHub issue) reaches one of
    /// these states (comma-separated, e.g. `active` or `pr_opened`).
    #[arg(long, value_delimiter = ',')]
    wait: Vec<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

/// Options of `send stripe`.
#[derive(Debug, clap::Args)]
pub(crate) struct StripeArgs {
    /// Event type.
    event: StripeEvent,
    /// Stripe customer id [default: a fresh cus_…].
    #[arg(long)]
    customer: Option<String>,
    /// Agent to provision (checkout metadata `agentId`) [default: a fresh cli-…].
    #[arg(long)]
    agent: Option<String>,
    /// User paying (checkout metadata `userId`) [default: a fresh user-…].
    #[arg(long)]
    user: Option<String>,
    /// Hetzner location of the agent (checkout metadata `region`).
    #[arg(long, default_value = "fsn1")]
    region: String,
    /// Subscription id (subscription and invoice events) [default: a fresh sub_…].
    #[arg(long)]
    subscription: Option<String>,
    /// Invoice id (invoice events) [default: a fresh in_…].
    #[arg(long)]
    invoice: Option<String>,
    /// Subscription status [default: active; canceled for deleted].
    #[arg(long)]
    status: Option<String>,
    #[command(flatten)]
    delivery: Delivery,
}

/// The GitHub events Slipway handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GithubEvent {
    /// An issue opened (or labeled, --action) with the job label: starts its job.
    Issues,
    /// A comment on an issue (`/slipway retry`, `/slipway cancel`).
    #[value(name = "issue_comment")]
    IssueComment,
    /// A Slipway pull request closed (merged with --merged).
    #[value(name = "pull_request")]
    PullRequest,
    /// The ping GitHub sends when the webhook is set up.
    Ping,
}

/// Options of `send github`.
#[derive(Debug, clap::Args)]
pub(crate) struct GithubArgs {
    /// Event (`X-GitHub-Event`).
    event: GithubEvent,
    /// Repository `owner/name`.
    #[arg(long, default_value = "acme/shop")]
    repo: String,
    /// Issue number.
    #[arg(long, default_value_t = 1)]
    issue: u64,
    /// App installation id (the sandbox's `POST /_sandbox/github/installations` returns one).
    #[arg(long, default_value_t = 1)]
    installation: u64,
    /// `issues` action: opened or labeled.
    #[arg(long, default_value = "opened")]
    action: String,
    /// Issue title.
    #[arg(long, default_value = "Add a health check")]
    title: String,
    /// Issue body.
    #[arg(long, default_value = "")]
    body: String,
    /// Issue labels (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "slipway")]
    labels: Vec<String>,
    /// Comment text (`issue_comment`).
    #[arg(long, default_value = "/slipway retry")]
    comment: String,
    /// Pull request number (`pull_request`).
    #[arg(long, default_value_t = 2)]
    pr: u64,
    /// The pull request was merged (`pull_request`).
    #[arg(long)]
    merged: bool,
    /// Who acts (`sender`) [default: the repository's owner].
    #[arg(long)]
    sender: Option<String>,
    #[command(flatten)]
    delivery: Delivery,
}

/// Run a `send` command.
pub(crate) async fn run(cmd: SendCommand) -> anyhow::Result<i32> {
    match cmd {
        SendCommand::Stripe(args) => send_stripe(args).await,
        SendCommand::Github(args) => send_github(args).await,
    }
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..14])
}

/// The event `args` describe, in Stripe's shape.
pub(crate) fn stripe_event(args: &StripeArgs) -> Value {
    let now = chrono::Utc::now().timestamp();
    let customer = args.customer.clone().unwrap_or_else(|| fresh("cus_"));
    let subscription = args.subscription.clone().unwrap_or_else(|| fresh("sub_"));
    let invoice = args.invoice.clone().unwrap_or_else(|| fresh("in_"));
    match args.event {
        StripeEvent::CheckoutCompleted | StripeEvent::CheckoutAsyncPaymentSucceeded => {
            let mut event = stripe::checkout_session_completed_event(&stripe::CheckoutArgs {
                user_id: args.user.clone().unwrap_or_else(|| format!("user-{}", &fresh("")[..6])),
                agent_id: args.agent.clone().unwrap_or_else(|| format!("cli-{}", &fresh("")[..6])),
                region: args.region.clone(),
                customer_id: Some(customer),
                event_id: None,
            });
            event["type"] = Value::from(args.event.name());
            event
        }
        StripeEvent::SubscriptionCreated
        | StripeEvent::SubscriptionUpdated
        | StripeEvent::SubscriptionDeleted
        | StripeEvent::SubscriptionPaused
        | StripeEvent::SubscriptionResumed => {
            let default = match args.event {
                StripeEvent::SubscriptionDeleted => "canceled",
                StripeEvent::SubscriptionPaused => "paused",
                _ => "active",
            };
            let status = args.status.as_deref().unwrap_or(default);
            let object = stripe::subscription_object(&subscription, &customer, status, now);
            stripe::event(args.event.name(), object, now, None)
        }
        StripeEvent::CustomerDeleted => {
            stripe::event(args.event.name(), stripe::customer_object(&customer, now), now, None)
        }
        StripeEvent::InvoicePaid
        | StripeEvent::InvoicePaymentFailed
        | StripeEvent::InvoiceOverdue
        | StripeEvent::InvoiceVoided
        | StripeEvent::InvoiceMarkedUncollectible => {
            let status = match args.event {
                StripeEvent::InvoicePaid => "paid",
                StripeEvent::InvoiceVoided => "void",
                StripeEvent::InvoiceMarkedUncollectible => "uncollectible",
                _ => "open",
            };
            let object = stripe::invoice_object(&invoice, &customer, &subscription, status, now);
            stripe::event(args.event.name(), object, now, None)
        }
    }
}

async fn send_stripe(args: StripeArgs) -> anyhow::Result<i32> {
    let event = stripe_event(&args);
    let object = &event["data"]["object"];
    let metadata = &object["metadata"];
    let agent = metadata["agentId"].as_str().map(str::to_owned);
    let user = metadata["userId"].as_str().map(str::to_owned);
    if !args.delivery.wait.is_empty() && agent.is_none() {
        bail!("--wait follows an agent: only checkout events name one");
    }
    let body = serde_json::to_string(&event)?;
    let secret = args.delivery.secret.clone().unwrap_or_else(|| env::get("STRIPE_WEBHOOK_SECRET"));
    let signature = stripe::signature_header(&body, &secret, chrono::Utc::now().timestamp());
    let mut about = vec![format!("customer {}", object["customer"].as_str().unwrap_or("-"))];
    about.extend(agent.iter().map(|a| format!("agent {a}")));
    about.extend(user.iter().map(|u| format!("user {u}")));
    eprintln!("→ {} {} ({})", args.event.name(), event["id"].as_str().unwrap_or("?"), about.join(", "));
    let headers = [
        ("content-type", "application/json; charset=utf-8".to_owned()),
        ("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)".to_owned()),
        ("stripe-signature", signature),
    ];
    let ok = post(&args.delivery, "/webhooks/stripe", &headers, body).await?;
    if !ok {
        return Ok(1);
    }
    match (agent, args.delivery.wait.is_empty()) {
        (Some(agent), false) => wait_agent(&args.delivery, &agent, user.as_deref()).await,
        _ => Ok(0),
    }
}

async fn send_github(args: GithubArgs) -> anyhow::Result<i32> {
    let (owner, _) =
        args.repo.split_once('/').with_context(|| format!("--repo {:?} is not owner/name", args.repo))?;
    let sender = args.sender.clone().unwrap_or_else(|| owner.to_owned());
    let labels: Vec<&str> = args.labels.iter().map(String::as_str).collect();
    let (event, payload) = match args.event {
        GithubEvent::Issues => (
            "issues",
            github_events::issues(
                &args.action,
                &args.repo,
                args.installation,
                args.issue,
                &args.title,
                &args.body,
                &labels,
                &sender,
            ),
        ),
        GithubEvent::IssueComment => (
            "issue_comment",
            github_events::issue_comment_created(
                &args.repo,
                args.installation,
                args.issue,
                &args.comment,
                &sender,
            ),
        ),
        GithubEvent::PullRequest => (
            "pull_request",
            github_events::pull_request_closed(
                &args.repo,
                args.installation,
                args.pr,
                &format!("slipway/issue-{}", args.issue),
                args.merged,
            ),
        ),
        GithubEvent::Ping => ("ping", github_events::ping(1)),
    };
    if !args.delivery.wait.is_empty() && args.event == GithubEvent::Ping {
        bail!("--wait follows a job: a ping names none");
    }
    let body = serde_json::to_vec(&payload)?;
    let secret = args.delivery.secret.clone().unwrap_or_else(|| env::get("GITHUB_WEBHOOK_SECRET"));
    let delivery = uuid::Uuid::new_v4().to_string();
    eprintln!("→ {event} on {}#{} (delivery {delivery})", args.repo, args.issue);
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("user-agent", "GitHub-Hookshot/slipway-cli".to_owned()),
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", github_events::signature(&body, &secret)),
    ];
    let ok = post(&args.delivery, "/webhooks/github", &headers, body).await?;
    if !ok {
        return Ok(1);
    }
    if args.delivery.wait.is_empty() {
        return Ok(0);
    }
    wait_job(&args.delivery, &args.repo, args.issue).await
}

/// POST the delivery; prints the status (stderr) and JSON answer (stdout). True on 2xx.
async fn post(
    delivery: &Delivery,
    path: &str,
    headers: &[(&str, String)],
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<bool> {
    let url =
        format!("{}{path}", delivery.url.clone().unwrap_or_else(env::starter_url).trim_end_matches('/'));
    let mut req = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?.post(&url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.map_err(|e| unreachable(&url, e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    eprintln!("← {status}");
    print_json(&answer)?;
    if !status.is_success() {
        eprintln!("error: the starter refused the event: {}", api_error(&answer));
    }
    Ok(status.is_success())
}

/// States after which waiting for another is pointless.
const AGENT_FINAL: [&str; 2] = ["failed", "destroyed"];
const JOB_FINAL: [&str; 3] = ["failed", "cancelled", "pr_opened"];

async fn wait_agent(delivery: &Delivery, agent: &str, user: Option<&str>) -> anyhow::Result<i32> {
    let who = Identity { user: user.map(str::to_owned), admin: false };
    let api = Api::new(delivery.url.clone(), &who)?;
    let path = format!("/api/agents/{agent}");
    follow(delivery, &format!("agent {agent}"), &AGENT_FINAL, || async {
        match api.get(&path).await {
            Ok(a) => Ok(Some(a["status"].as_str().unwrap_or_default().to_owned())),
            // The agent's workflow may not answer its first query yet.
            Err(e) if e.to_string().contains("AGENT_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
}

async fn wait_job(delivery: &Delivery, repo: &str, issue: u64) -> anyhow::Result<i32> {
    let api = Api::new(delivery.url.clone(), &Identity { user: None, admin: true })?;
    let path = format!("/api/jobs/{repo}/{issue}");
    follow(delivery, &format!("job {repo}#{issue}"), &JOB_FINAL, || async {
        match api.get(&path).await {
            Ok(j) => Ok(Some(j["state"].as_str().unwrap_or_default().to_owned())),
            Err(e) if e.to_string().contains("JOB_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Poll `state` until it is one of `--wait`: 0 then; 1 on a final state that is not wanted, or
/// on timeout. Each new state is a progress step.
async fn follow<F, Fut>(delivery: &Delivery, what: &str, finals: &[&str], state: F) -> anyhow::Result<i32>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let progress = Progress::new();
    let deadline = Instant::now() + Duration::from_secs(delivery.timeout);
    let wanted = delivery.wait.join(" or ");
    progress.step(&format!("waiting for {what} to be {wanted}"));
    let mut last = String::new();
    loop {
        if let Some(now) = state().await? {
            if now != last {
                progress.done(&format!("{what}: {now}"));
                progress.status(&format!("{what} is {now}; waiting for {wanted}"));
                last = now;
            }
            if delivery.wait.contains(&last) {
                return Ok(0);
            }
            if finals.contains(&last.as_str()) {
                progress.finish();
                eprintln!("error: {what} ended {last}, not {wanted}");
                return Ok(1);
            }
        }
        if Instant::now() > deadline {
            progress.finish();
            eprintln!(
                "error: {what} did not become {wanted} within {}s (last: {})",
                delivery.timeout,
                if last.is_empty() { "none" } else { &last }
            );
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: StripeArgs,
    }

    fn args(line: &[&str]) -> StripeArgs {
        T::parse_from(std::iter::once("t").chain(line.iter().copied())).args
    }

    #[test]
    fn stripe_events_carry_what_the_starter_reads() {
        let e = stripe_event(&args(&[
            "checkout.session.completed",
            "--agent",
            "a1",
            "--user",
            "u1",
            "--customer",
            "cus_1",
        ]));
        assert_eq!(e["type"], "checkout.session.completed");
        assert_eq!(e["object"], "event");
        let s = &e["data"]["object"];
        assert_eq!(
            (s["metadata"]["agentId"].as_str(), s["metadata"]["userId"].as_str()),
            (Some("a1"), Some("u1"))
        );
        assert_eq!((s["customer"].as_str(), s["payment_status"].as_str()), (Some("cus_1"), Some("paid")));

        let e = stripe_event(&args(&[
            "customer.subscription.deleted",
            "--customer",
            "cus_1",
            "--subscription",
            "sub_1",
        ]));
        let s = &e["data"]["object"];
        assert_eq!(
            (s["id"].as_str(), s["status"].as_str(), s["customer"].as_str()),
            (Some("sub_1"), Some("canceled"), Some("cus_1"))
        );

        let e = stripe_event(&args(&["invoice.payment_failed", "--customer", "cus_1"]));
        assert_eq!(e["type"], "invoice.payment_failed");
        assert!(e["data"]["object"]["id"].as_str().is_some_and(|id| id.starts_with("in_")));
        assert_eq!(e["data"]["object"]["status"], "open");
    }

    /// Every type the starter handles can be sent, and each one sent means something to billing.
    #[test]
    fn every_handled_type_can_be_sent_and_is_acted_on() {
        use slipway_providers::stripe::webhook::{Event, HANDLED_TYPES};
        let sendable: Vec<&str> = StripeEvent::value_variants().iter().map(|e| e.name()).collect();
        for kind in HANDLED_TYPES {
            assert!(sendable.contains(&kind), "`slipway send stripe` cannot send {kind}");
        }
        for kind in sendable {
            let event = stripe_event(&args(&[kind, "--customer", "cus_1", "--user", "u1"]));
            let read = Event::parse(&event.to_string()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let intent = slipway_starter::ingress::stripe::intent(&read).unwrap();
            let billing = intent.billing.unwrap_or_else(|| panic!("{kind} is not acted on"));
            assert_eq!(billing.customer_id, "cus_1", "{kind}");
        }
    }

    #[test]
    fn signatures_verify_as_the_starter_verifies_them() {
        let e = serde_json::to_string(&stripe_event(&args(&["invoice.paid"]))).unwrap();
        let now = chrono::Utc::now().timestamp();
        let header = stripe::signature_header(&e, "whsec_x", now);
        assert_eq!(slipway_providers::stripe::webhook::verify(&e, Some(&header), "whsec_x", now), Ok(()));
        assert!(slipway_providers::stripe::webhook::verify(&e, Some(&header), "whsec_y", now).is_err());
        let body = b"{\"zen\":\"x\"}";
        let sig = github_events::signature(body, "gh");
        assert_eq!(slipway_providers::github::webhook::verify(body, Some(&sig), b"gh"), Ok(()));
    }
}
