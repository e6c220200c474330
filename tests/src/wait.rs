//! Waiting for a condition, the one way tests wait: `check` is asked again (every 100 ms) until
//! it yields a value or `timeout` passes, then the test fails naming `what`. A test never sleeps
//! and then asserts: it waits for the state it expects, and a "nothing happened" claim is made
//! only after a positive fact shows the event was processed.

use std::{future::Future, time::Duration};

/// Asks `check` until it answers `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_for`] a condition that holds or not.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    wait_for(what, timeout, || {
        let holds = check();
        async move { Ok(holds.await?.then_some(())) }
    })
    .await
}
