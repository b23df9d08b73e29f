//! auth-check's two background loops — the change poll (revocation) and the last-used
//! write-back — run on the caller's task tracker until its cancellation token fires, so the
//! composition root stops them in its one shutdown order (and flushes last-used once more after).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Config, Verifier};

/// Spawns the change poll and the last-used flush of `verifier` on `tasks`, each stopping when
/// `stop` is cancelled.
pub fn spawn(verifier: &Verifier, config: &Config, tasks: &TaskTracker, stop: &CancellationToken) {
    let poller = verifier.clone();
    tasks.spawn(every(
        config.change_poll_interval.0,
        stop.clone(),
        move || {
            let poller = poller.clone();
            async move {
                if let Err(err) = poller.poll_changes().await {
                    static FAILED: stanna_telemetry::LogLimiter =
                        stanna_telemetry::LogLimiter::new(Duration::from_secs(10));
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), held_back, "change poll failed; cached keys verify until the stale limit");
                    }
                }
            }
        },
    ));
    let flusher = verifier.clone();
    tasks.spawn(every(config.last_used_flush.0, stop.clone(), move || {
        let flusher = flusher.clone();
        async move {
            if let Err(err) = flusher.flush_usage().await {
                tracing::warn!(error = %stanna_telemetry::ErrorChain(&err), "usage and last-used flush failed; retrying next interval");
            }
        }
    }));
}

/// Runs `step` every `period` (a late step delays the next, never bunches them) until `stop`. A
/// step that has started runs to its end: a flush cut half-way would lose the times it took.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        step().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// With time paused, exactly one step per period: the change poll at the shipped 250 ms runs
    /// four times a second (the first at once), and none after the stop.
    #[tokio::test(start_paused = true)]
    async fn a_step_runs_once_per_period_until_stopped() {
        let steps = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let counted = steps.clone();
        let period = crate::Config::for_tests().change_poll_interval.0;
        assert_eq!(period, Duration::from_millis(250), "the shipped default");
        let task = tokio::spawn(every(period, stop.clone(), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            steps.load(Ordering::SeqCst),
            1,
            "the first step runs at once"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 2, "one poll later");
        tokio::time::sleep(Duration::from_millis(750)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 5, "a second: four more");
        stop.cancel();
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 5, "none after the stop");
    }
}
