//! Graceful shutdown loses no accepted webhook: the starter is stopped in the middle of a burst of
//! signed Stripe events; every event it answered 2xx has its effect in Temporal, and every other
//! one was refused in a way Stripe retries (a 503 or no answer at all), never a 2xx without effect.

use std::time::{Duration, Instant};

use slipway_sandbox::stripe::{event, subscription_object};
use slipway_tests::TestApp;

const EVENTS: usize = 60;

#[tokio::test]
async fn stopping_the_starter_mid_burst_loses_no_acknowledged_webhook() -> anyhow::Result<()> {
    let mut app = TestApp::spawn().await?;
    let url = format!("{}/webhooks/stripe", app.starter_url);
    let t = 1_800_000_000;
    let customers: Vec<String> = (0..EVENTS).map(|i| format!("cus_{}_{i}", app.unique)).collect();

    // A burst: one event every 20 ms, each sent on its own task as Stripe's deliveries would be.
    let mut sends = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let body = event(
            "customer.subscription.created",
            subscription_object(&format!("sub_{customer}"), customer, "active", t),
            t,
            Some(format!("evt_{customer}")),
        )
        .to_string();
        let signature = slipway_sandbox::stripe::signature_header(
            &body,
            slipway_tests::STRIPE_SECRET,
            slipway_tests::now(),
        );
        let (http, url) = (app.http.clone(), url.clone());
        sends.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let sent = Instant::now();
            let answer = http
                .post(url)
                .header("stripe-signature", signature)
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            (sent, answer.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
        }));
    }
    // Stop the starter about a third of the way through the burst.
    tokio::time::sleep(Duration::from_millis(20 * EVENTS as u64 / 3)).await;
    let stopped_at = Instant::now();
    app.stop_starter();

    let mut accepted = Vec::new();
    let mut refused_after_stop = 0;
    for (customer, send) in customers.iter().zip(sends) {
        let (sent, answer) = send.await?;
        match answer {
            Ok(status) if (200..300).contains(&status) => accepted.push(customer.clone()),
            Ok(503) => {}
            Ok(other) => panic!("{customer}: answered {other}; only 2xx, 503 or no answer are acceptable"),
            Err(_) => {
                assert!(
                    sent + Duration::from_millis(5) >= stopped_at,
                    "{customer}: no answer before the stop"
                );
                refused_after_stop += 1;
            }
        }
    }
    eprintln!("{} acknowledged, {refused_after_stop} refused after the stop", accepted.len());
    assert!(accepted.len() >= 5, "the burst reached the starter before the stop");
    assert!(refused_after_stop >= 5, "the stop happened mid-burst");

    // Every acknowledged event took effect: its customer's workflow holds the subscription.
    let deadline = Instant::now() + Duration::from_secs(60);
    for customer in &accepted {
        loop {
            let state = app.billing_state(customer).await;
            if let Ok(state) = &state
                && state.subscriptions.values().any(|s| s.status == "active")
            {
                break;
            }
            assert!(Instant::now() < deadline, "{customer} was acknowledged but has no effect: {state:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
