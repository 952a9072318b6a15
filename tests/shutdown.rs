//! Stopping: on SIGTERM (what the kubelet sends a stopping pod) or SIGINT, readiness fails
//! at once, the webhook stops accepting, a running plugin call gets the drain timeout, and
//! the process exits 0. What did not finish is handed back and runs again under the same
//! idempotency key: each promotion takes effect once.

mod support;

use promoter::client::deployment_event;
use rustix::process::Signal;
use std::time::Duration;
use support::{DELAY_MS, EVENTS_KEY, Receiver, Server, send, start};

/// Waits until the receiver has `n` requests.
async fn received(ci: &Receiver, n: usize, server: &Server) {
    for _ in 0..200 {
        if ci.received().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the receiver never got {n} requests\n{}", server.logs());
}

fn idempotency_keys(ci: &Receiver) -> Vec<String> {
    ci.received()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_promotion_finish_stops_taking_events_and_exits_0() {
    let ci = Receiver::start(202, "queued").await;
    ci.then_answer(&[(202, &[(DELAY_MS, "1500")])]);
    let mut server = start("drain-finishes", &ci, &["--drain-timeout", "10s"]).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.0.0");
    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    received(&ci, 1, &server).await;
    assert_eq!(server.probe("/readyz").await.0, 200);

    server.signal(Signal::TERM);
    // Readiness fails at once, while the plugin call is still waiting for its answer.
    let mut ready = server.probe("/readyz").await;
    for _ in 0..20 {
        if ready.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        ready = server.probe("/readyz").await;
    }
    assert_eq!(ready, (503, "not ready: draining".to_string()));
    // The webhook takes no new events.
    let later = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.0.1");
    let refused = promoter::client::post_signed(
        &format!("{}/promotion/flux-system/podinfo/dev", server.webhook),
        serde_json::to_vec(&later).unwrap(),
        Some(EVENTS_KEY),
    )
    .await;
    assert!(refused.is_err(), "the webhook still answered: {refused:?}");

    let (took, exit) = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM\n{}", server.logs()));
    assert!(exit.success(), "{exit:?}\n{}", server.logs());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}: the call needed 1.5 s"
    );
    assert!(
        server.logs().contains("SIGTERM: draining"),
        "{}",
        server.logs()
    );

    // The outcome was recorded before the exit: nothing runs again at the next start.
    server.restart();
    let all = server.promotions().await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["phase"], "succeeded", "{all:#?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ci.received().len(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlasting_the_drain_is_handed_back_and_runs_again_at_start_under_the_same_key() {
    // The first call is never answered: it outlasts any drain.
    let ci = Receiver::start_holding(202, "queued", 1).await;
    let mut server = start("drain-cuts", &ci, &["--drain-timeout", "1s"]).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "2.0.0");
    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    received(&ci, 1, &server).await;

    server.signal(Signal::INT);
    let (took, exit) = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGINT\n{}", server.logs()));
    assert!(exit.success(), "{exit:?}\n{}", server.logs());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?} with a 1 s drain"
    );
    assert!(server.logs().contains("handed back"), "{}", server.logs());

    server.restart();
    let all = server
        .wait_for("the handed-back promotion to run again", |all| {
            all.len() == 1 && all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(all[0]["attempts"], 2, "{all:#?}");
    let keys = idempotency_keys(&ci);
    assert_eq!(keys.len(), 2, "cut once, then delivered");
    assert_eq!(keys[0], keys[1], "under the same idempotency key");
}
