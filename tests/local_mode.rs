//! The main job in local mode, with the real binary: Flux-shaped signed events in,
//! promotions out through the webhook plugin to a receiver on loopback.

mod support;

use promoter::client::{deployment_event, signature_header};
use std::collections::{HashMap, HashSet};
use support::{
    APPROVAL_KEY, CI_KEY, EVENTS_KEY, Receiver, Server, event_url, scratch, send, start,
    write_manifests,
};

#[tokio::test]
async fn a_signed_event_for_dev_is_promoted_into_test_and_shows_in_status_and_metrics() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("main-job", &ci, &[]).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let (status, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body.contains("Location: /promotions/podinfo-test-"),
        "{body}"
    );

    let all = server
        .wait_for("promotion into test to succeed", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(all.len(), 1);
    let p = &all[0];
    assert_eq!(p["version"], "6.5.4");
    assert_eq!(p["attempts"], 1);
    assert_eq!(
        p["targets"].as_array().unwrap().len(),
        2,
        "both test targets travel with the promotion"
    );
    assert!(
        p["strategy"].get("config").is_none(),
        "status does not echo strategy config"
    );

    let got = ci.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("idempotency-key"), p["id"].as_str());
    promoter::signature::verify(got[0].header("x-signature"), CI_KEY, &got[0].body)
        .expect("the CI call is signed with the strategy's key");

    let one: serde_json::Value = reqwest::get(format!(
        "{}/promotions/{}",
        server.admin,
        p["id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(one["phase"], "succeeded");
    assert!(
        one["createdAt"].as_str().unwrap().ends_with('Z'),
        "times are RFC 3339"
    );

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            r#"promoter_events_received_total{pipeline="flux-system/podinfo",result="accepted"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"promoter_promotions_total{environment="test",pipeline="flux-system/podinfo",result="succeeded",strategy="webhook"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"promoter_promotion_latency_seconds_count{environment="test",pipeline="flux-system/podinfo",result="succeeded",strategy="webhook"} 1"#),
        "latency by pipeline and environment: {metrics}"
    );
    assert!(
        metrics.contains("promoter_approvals_waiting 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("process_resident_memory_bytes "),
        "process metrics: {metrics}"
    );
    assert!(
        metrics.contains("promoter_plugin_call_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("promoter_queue_depth 0"), "{metrics}");
    support::check_with_promtool(&metrics);
}

#[tokio::test]
async fn forged_unsigned_stale_and_replayed_events_are_refused_and_promote_nothing() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("refusals", &ci, &[]).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let body = serde_json::to_vec(&event).unwrap();
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut r = client
            .post(event_url(&server, "dev"))
            .header("content-type", "application/json");
        if let Some(s) = signature {
            r = r.header("x-signature", s);
        }
        async move {
            let resp = r.body(body).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    let mut flipped = body.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x01;
    let (status, text) = post(flipped, Some(signature_header(EVENTS_KEY, &body))).await;
    assert_eq!(status, 401, "flipped byte: {text}");
    // Every unauthenticated refusal is the same body; the reason is in the server's log.
    assert!(text.contains("not authenticated"), "{text}");
    assert!(
        server.logs().contains("does not match"),
        "{}",
        server.logs()
    );

    let (status, text) = post(body.clone(), Some(signature_header(b"wrong-key", &body))).await;
    assert_eq!(status, 401, "wrong key: {text}");

    let (status, text) = post(body.clone(), None).await;
    assert_eq!(status, 401, "missing header: {text}");
    assert!(
        server.logs().contains("X-Signature header is missing"),
        "{}",
        server.logs()
    );

    let (status, text) = post(body.clone(), Some("md5=abcd".into())).await;
    assert_eq!(status, 401, "unsupported algorithm: {text}");

    let mut stale = event.clone();
    stale.timestamp = "2026-01-01T00:00:00Z".into();
    let (status, text) = send(&server, "dev", &stale, Some(EVENTS_KEY)).await;
    assert_eq!(status, 401, "stale: {text}");
    assert!(text.contains("outside the accepted window"), "{text}");

    assert!(
        server.promotions().await.is_empty(),
        "nothing refused may create a promotion"
    );

    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 409, "replay: {text}");
    assert!(text.contains("already accepted"), "{text}");
    server
        .wait_for("one promotion", |all| {
            all.len() == 1 && all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(ci.received().len(), 1);

    let metrics = server.metrics().await;
    for (result, count) in [("stale", 1), ("replay", 1)] {
        let line = format!(
            r#"promoter_events_received_total{{pipeline="flux-system/podinfo",result="{result}"}} {count}"#
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }

    // Unauthenticated events name no pipeline, or /metrics would tell anyone whether the
    // one they guessed exists; nor does a path naming no Pipeline in force (the sender's
    // choice: anyone could grow the metrics without bound).
    for made_up in ["a", "b", "c"] {
        let url = format!("{}/promotion/flux-system/{made_up}/dev", server.webhook);
        let signature = signature_header(EVENTS_KEY, &body);
        let resp = client
            .post(url)
            .header("x-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"promoter_events_received_total{pipeline="",result="unauthorized"} 7"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"pipeline="flux-system/a""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pipeline_without_a_key_refuses_unsigned_events_unless_the_operator_allows_them() {
    let ci = Receiver::start(202, "queued").await;
    let dir = scratch("unsigned");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    std::fs::write(
        manifests.join("pipeline.yaml"),
        text.replace("    secretRef: {name: podinfo-events}\n", ""),
    )
    .unwrap();

    let server = Server::start(&manifests, &dir.join("data"), &[]);
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.0.0");
    let (status, text) = send(&server, "dev", &event, None).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        server.logs().contains("unsigned events are refused"),
        "{}",
        server.logs()
    );
    drop(server);

    let server = Server::start(&manifests, &dir.join("data2"), &["--allow-unsigned-events"]);
    let (status, text) = send(&server, "dev", &event, None).await;
    assert_eq!(status, 202, "{text}");
}

#[tokio::test]
async fn a_real_flux_generic_hmac_payload_is_accepted() {
    let ci = Receiver::start(200, "ok").await;
    let server = start("flux-payload", &ci, &[]).await;
    // As notification-controller v1 posts a helm-controller v2 event (generic-hmac):
    // field order, uid, resourceVersion, reportingInstance and all.
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let body = format!(
        r#"{{"involvedObject":{{"kind":"HelmRelease","namespace":"podinfo-dev","name":"podinfo","uid":"6a8e4b1f-3b7e-4c0e-9f2a-1d5c7e9b0a42","apiVersion":"helm.toolkit.fluxcd.io/v2","resourceVersion":"184312"}},"severity":"info","timestamp":"{now}","message":"Helm upgrade succeeded for release podinfo-dev/podinfo.v7 with chart podinfo@6.7.1","reason":"UpgradeSucceeded","metadata":{{"revision":"6.7.1","token":"","summary":"dev cluster"}},"reportingController":"helm-controller","reportingInstance":"helm-controller-5c9f6d7b8-lx2qp"}}"#
    );
    for algo in [promoter::signature::Algorithm::Sha512] {
        let signature = format!(
            "{algo}={}",
            promoter::signature::sign_hex(algo, EVENTS_KEY, body.as_bytes())
        );
        let resp = reqwest::Client::new()
            .post(event_url(&server, "dev"))
            .header("content-type", "application/json")
            .header("gotk-component", "helm-controller")
            .header("x-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    }
    let all = server
        .wait_for("promotion", |all| {
            all.len() == 1 && all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(all[0]["version"], "6.7.1");
    assert_eq!(all[0]["event"]["metadata"]["summary"], "dev cluster");
}

#[tokio::test]
async fn failed_upgrades_are_answered_2xx_and_never_promoted() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("failed-upgrade", &ci, &[]).await;
    let mut event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.6.0");
    event.severity = "error".into();
    event.reason = "UpgradeFailed".into();
    event.message =
        "Helm upgrade failed for release podinfo-dev/podinfo with chart podinfo@6.6.0: timed out"
            .into();
    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("ignored"), "{text}");

    let mut legacy = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.6.1");
    legacy.reason = "info".into();
    legacy.message = "Helm install has started".into();
    let (status, text) = send(&server, "dev", &legacy, Some(EVENTS_KEY)).await;
    assert_eq!(status, 200, "{text}");

    let other_app = deployment_event("HelmRelease", "podinfo-dev", "billing", "1.0.0");
    let (status, text) = send(&server, "dev", &other_app, Some(EVENTS_KEY)).await;
    assert_eq!(status, 422, "{text}");
    let last = deployment_event("HelmRelease", "podinfo-prod", "podinfo", "1.0.0");
    let (status, text) = send(&server, "prod", &last, Some(EVENTS_KEY)).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("last environment"), "{text}");

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(server.promotions().await.is_empty());
    assert!(ci.received().is_empty());
}

#[tokio::test]
async fn a_manual_promotion_waits_for_a_signed_approval() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("approval", &ci, &[]).await;
    let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", "2.0.0");
    let (status, text) = send(&server, "test", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = server.promotions().await;
    assert_eq!(all[0]["phase"], "waiting-approval");
    assert!(ci.received().is_empty(), "nothing runs before the approval");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("promoter_approvals_waiting 1"),
        "{metrics}"
    );
    let waited: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("promoter_oldest_approval_wait_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!((0.4..60.0).contains(&waited), "waited {waited}s");

    let (status, _) = support::approve_prod(&server, "2.0.0", b"wrong").await;
    assert_eq!(status, 401);
    let (status, _) = support::approve_prod(&server, "2.0.0", EVENTS_KEY).await;
    assert_eq!(status, 401, "an event key never approves");
    let (status, _) = support::approve_prod(&server, "9.9.9", APPROVAL_KEY).await;
    assert_eq!(status, 404, "authenticated: no such promotion");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .args([
            "approve",
            "flux-system/podinfo",
            "prod",
            "2.0.0",
            "--url",
            &server.webhook,
            "--key-file",
        ])
        .arg({
            let f = scratch("key").join("key");
            std::fs::write(&f, APPROVAL_KEY).unwrap();
            f
        })
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    server
        .wait_for("approved promotion to succeed", |all| {
            all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(ci.received().len(), 1);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("promoter_approvals_waiting 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("promoter_oldest_approval_wait_seconds 0\n"),
        "{metrics}"
    );
    let (status, _) = support::approve_prod(&server, "2.0.0", APPROVAL_KEY).await;
    assert_eq!(status, 409, "a second approval changes nothing");
}

#[tokio::test]
async fn a_kill_9_during_a_promotion_is_resumed_after_restart_with_the_same_idempotency_key() {
    // The CI server stalls on the first call, so the promotion is running when we kill.
    let ci = Receiver::start_holding(202, "queued", 1).await;
    let mut server = start("kill9", &ci, &[]).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "3.1.0");
    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    server
        .wait_for("promotion running", |all| {
            all.len() == 1 && all[0]["phase"] == "running"
        })
        .await;
    for _ in 0..100 {
        if !ci.received().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill();
    server.restart();
    let all = server
        .wait_for("resumed promotion to succeed", |all| {
            all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["attempts"], 2, "the interrupted attempt counts");
    let keys: HashSet<String> = ci
        .received()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt carries the same idempotency key: {keys:?}"
    );
    assert_eq!(ci.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_senders_posting_ten_thousand_events_lose_nothing_and_promote_each_version_once() {
    let ci = Receiver::start(202, "queued").await;
    let server = std::sync::Arc::new(start("load", &ci, &[]).await);
    let url = event_url(&server, "dev");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // 200 versions, each reported 50 times (half of them byte-identical replays).
    // Popped from the end: versions arrive mostly in increasing order, as releases do.
    let mut work = Vec::new();
    for v in (0..200).rev() {
        for round in 0..50 {
            work.push((format!("1.{v}.0"), round % 2 == 0));
        }
    }
    let work = std::sync::Arc::new(std::sync::Mutex::new(work));
    let bodies: std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>> = Default::default();
    let mut senders = Vec::new();
    for _ in 0..50 {
        let (work, client, url, bodies) =
            (work.clone(), client.clone(), url.clone(), bodies.clone());
        senders.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, String, String)> = Vec::new();
            loop {
                let Some((version, replay)) = work.lock().unwrap().pop() else {
                    break;
                };
                let body = if replay {
                    let mut b = bodies.lock().unwrap();
                    b.entry(version.clone())
                        .or_insert_with(|| {
                            serde_json::to_vec(&deployment_event(
                                "HelmRelease",
                                "podinfo-dev",
                                "podinfo",
                                &version,
                            ))
                            .unwrap()
                        })
                        .clone()
                } else {
                    let mut e = deployment_event("HelmRelease", "podinfo-dev", "podinfo", &version);
                    e.reporting_instance = format!("helm-controller-{}", answers.len());
                    serde_json::to_vec(&e).unwrap()
                };
                let resp = client
                    .post(&url)
                    .header("x-signature", signature_header(EVENTS_KEY, &body))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                answers.push((status, version, resp.text().await.unwrap()));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for s in senders {
        answers.extend(s.await.unwrap());
    }
    assert_eq!(answers.len(), 10_000, "every event got an answer");
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    let mut accepted_ids: HashSet<String> = HashSet::new();
    for (status, _, text) in &answers {
        *by_status.entry(*status).or_default() += 1;
        assert!(
            matches!(status, 200 | 202 | 409),
            "unexpected {status}: {text}"
        );
        if *status == 202 {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            for p in v["promotions"].as_array().unwrap() {
                accepted_ids.insert(p["id"].as_str().unwrap().to_string());
            }
        }
    }
    eprintln!("answers by status: {by_status:?}");
    // Each ran, or was superseded by a newer version that succeeded first (and then
    // never ran: a release train that caught up).
    let all = server
        .wait_for("every accepted promotion to finish", |all| {
            all.len() >= accepted_ids.len()
                && all
                    .iter()
                    .all(|p| p["phase"] == "succeeded" || p["phase"] == "superseded")
        })
        .await;
    assert!(
        all.iter()
            .any(|p| p["version"] == "1.199.0" && p["phase"] == "succeeded"),
        "the newest version went out"
    );
    let recorded: HashSet<String> = all
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        recorded, accepted_ids,
        "every accepted event is accounted for, nothing else recorded"
    );
    let versions: HashSet<&str> = all.iter().map(|p| p["version"].as_str().unwrap()).collect();
    assert_eq!(
        versions.len(),
        all.len(),
        "one promotion per (pipeline, environment, version)"
    );
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for r in ci.received() {
        *deliveries
            .entry(r.header("idempotency-key").unwrap().to_string())
            .or_default() += 1;
    }
    let succeeded: HashSet<String> = all
        .iter()
        .filter(|p| p["phase"] == "succeeded")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        deliveries.keys().cloned().collect::<HashSet<_>>(),
        succeeded,
        "what succeeded was delivered; what was superseded never was"
    );
    assert!(
        deliveries.values().all(|n| *n == 1),
        "no promotion delivered twice: {deliveries:?}"
    );
}
