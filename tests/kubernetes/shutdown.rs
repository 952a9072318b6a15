//! SIGTERM with two replicas: the stopping one hands its running promotion back by
//! releasing the claim, and the other finishes it at once, not after the claim lapses.
//! And readiness that tells the truth about the Promotion watch.

use crate::support::{EVENTS_KEY, Receiver, Server, send};
use crate::{example_cluster, lease_holder, promotion_of, wait_until};
use promoter::client::deployment_event;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_a_running_promotion_and_the_other_replica_finishes_it_within_2s() {
    // The first call is never answered: it outlasts the drain.
    let ci = Receiver::start_holding(202, "queued", 1).await;
    let (dir, cluster) = example_cluster("kubernetes-sigterm", &ci).await;
    let api = cluster.api.clone();
    let replica = |name: &str| {
        Server::start_replica(
            &cluster.kubeconfig,
            &dir.join(name),
            &format!("promoter-{name}"),
            &["--watch-interval", "200ms", "--drain-timeout", "1s"],
        )
    };
    let mut a = replica("a");
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "7.0.0");
    let (code, body) = send(&a, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("replica a to call the receiver", &a, || {
        ci.received().len() == 1
    })
    .await;
    let held = promotion_of(&api, "test", "7.0.0").unwrap();
    assert_eq!(held["status"]["holder"], "promoter-a", "{held}");
    let id = held["metadata"]["name"].as_str().unwrap().to_string();
    wait_until("replica a to take the Lease", &a, || {
        lease_holder(&api).as_deref() == Some("promoter-a")
    })
    .await;
    let b = replica("b");
    assert_eq!(b.probe("/readyz").await.0, 200);

    a.signal(rustix::process::Signal::TERM);
    let (took, exit) = a
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("replica a still runs 10 s after SIGTERM\n{}", a.logs()));
    assert!(exit.success(), "{exit:?}\n{}", a.logs());
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 1 s drain"
    );
    assert_ne!(
        lease_holder(&api).as_deref(),
        Some("promoter-a"),
        "the Lease is released on the way out, not left to run out"
    );
    let stopped = Instant::now();
    let finished = loop {
        if let Some(p) = promotion_of(&api, "test", "7.0.0")
            && p["status"]["phase"] == "succeeded"
        {
            break p;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "not finished by replica b within 2 s of the release (a claim lapses only \
             after 15 s)\n{}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished["status"]["attempts"], 2, "{finished}");
    let keys: Vec<String> = ci
        .received()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        [id.clone(), id],
        "cut once, then delivered, under one key"
    );
    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_promotion_watch_has_failed_for_30s_and_comes_back_with_it() {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-readiness", &ci).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    assert_eq!(server.probe("/readyz").await, (200, "ready".to_string()));

    // The API server stops serving Promotions; the open watch ends with it.
    api.promotions_unavailable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    api.close_watches();
    let down = Instant::now();
    let mut probe = server.probe("/readyz").await;
    while probe.0 == 200 && down.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        probe = server.probe("/readyz").await;
    }
    assert_eq!(probe.0, 503, "{probe:?}\n{}", server.logs());
    assert!(
        probe
            .1
            .contains("watch of Promotion resources has been failing"),
        "{probe:?}"
    );
    assert!(
        down.elapsed() >= Duration::from_secs(25),
        "a short blip must not take the replica out: {:?}",
        down.elapsed()
    );
    assert_eq!(server.probe("/healthz").await.0, 200, "alive all the same");

    api.promotions_unavailable
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let back = Instant::now();
    while server.probe("/readyz").await.0 != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "not ready again a minute after the API server came back\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
