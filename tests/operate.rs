//! Operators steer, local mode, with the real binary: `promoter promote | retry | reject |
//! abort | suspend | resume | history` against a running server, and what each changes in
//! what reaches the CI receiver.

mod support;

use serde_json::Value;
use support::{
    EVENTS_KEY, Receiver, Server, deployed_in_dev, scratch, send, start, write_manifests,
};

const BIN: &str = env!("CARGO_BIN_EXE_promoter");

/// Runs `promoter ARGS --admin <server>`: exit code, stdout, stderr.
fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["--admin", &server.admin])
        .env_remove("PROMOTER_TOKEN_FILE")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Versions the receiver was asked to promote, in order, for `env`.
fn versions_into(ci: &Receiver, env: &str) -> Vec<String> {
    ci.received()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["targetEnvironment"] == env)
        .map(|b| b["version"].as_str().unwrap_or("").to_string())
        .collect()
}

fn one<'a>(all: &'a [Value], env: &str, version: &str) -> Option<&'a Value> {
    all.iter()
        .find(|p| p["targetEnvironment"] == env && p["version"] == version)
}

async fn succeeded_into(server: &Server, env: &str, version: &str) -> Value {
    let all = server
        .wait_for(&format!("{version} into {env} to succeed"), |all| {
            one(all, env, version).is_some_and(|p| p["phase"] == "succeeded")
        })
        .await;
    one(&all, env, version).unwrap().clone()
}

/// Admin API call as a test client: status and JSON body.
async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    promoter::client::admin_call(&format!("{}{path}", server.admin), None, Some(&body))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_promotion_that_failed_for_a_missing_secret_succeeds_after_the_secret_is_added_and_promoter_retry()
 {
    let ci = Receiver::start(202, "queued").await;
    let dir = scratch("operate-missing-secret");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job/promote"));
    // The Weave example as an operator first applies it: the strategy's Secret missing.
    let full = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let cut = full
        .rfind("---\napiVersion: v1\nkind: Secret\nmetadata: {name: ci-hmac")
        .unwrap();
    std::fs::write(manifests.join("pipeline.yaml"), &full[..cut]).unwrap();
    let server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );

    let (code, body) = deployed_in_dev(&server, "1.2.0").await;
    assert_eq!(code, 202, "{body}");
    let all = server
        .wait_for("the promotion into test to fail", |all| {
            one(all, "test", "1.2.0").is_some_and(|p| p["phase"] == "failed")
        })
        .await;
    let failed = one(&all, "test", "1.2.0").unwrap();
    let id = failed["id"].as_str().unwrap().to_string();
    assert!(
        failed["lastError"].as_str().unwrap().contains("ci-hmac"),
        "{failed}"
    );
    assert!(versions_into(&ci, "test").is_empty());

    // The Secret is added; `promoter retry` runs the same promotion again.
    std::fs::write(manifests.join("pipeline.yaml"), &full).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let (code, out, err) = cli(&server, &["retry", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&id) && out.contains("pending"), "{out}");
    let done = succeeded_into(&server, "test", "1.2.0").await;
    assert_eq!(done["id"], id.as_str(), "same id: the same idempotency key");
    assert_eq!(done["attempts"], 1, "a new count of attempts");
    assert_eq!(done["retriedBy"], "loopback caller");
    assert_eq!(versions_into(&ci, "test"), ["1.2.0"]);
    assert_eq!(
        ci.received()[0].header("idempotency-key"),
        Some(id.as_str())
    );

    // A succeeded promotion is not retried.
    let (code, _, err) = cli(&server, &["retry", &id]);
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 409") && err.contains("only a promotion that is failed"),
        "{err}"
    );
}

#[tokio::test]
async fn an_event_for_a_version_whose_promotion_failed_runs_it_again() {
    // The receiver fails for good (400) once, then takes it.
    let ci = Receiver::start(202, "queued").await;
    ci.then_answer(&[(400, &[])]);
    let server = start("operate-event-retry", &ci, &[]).await;
    deployed_in_dev(&server, "1.2.0").await;
    server
        .wait_for("the promotion to fail", |all| {
            one(all, "test", "1.2.0").is_some_and(|p| p["phase"] == "failed")
        })
        .await;
    // Flux reports the version again (a later event: its timestamp is a second later).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, body) = deployed_in_dev(&server, "1.2.0").await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"result\":\"retried\""), "{body}");
    let done = succeeded_into(&server, "test", "1.2.0").await;
    assert_eq!(done["retriedBy"], "event from dev");
    assert_eq!(versions_into(&ci, "test"), ["1.2.0", "1.2.0"]);
}

#[tokio::test]
async fn retry_failed_runs_every_failed_promotion_of_a_pipeline_again() {
    // The receiver refuses for good (400) twice, then takes everything.
    let ci = Receiver::start(202, "queued").await;
    ci.then_answer(&[(400, &[]), (400, &[])]);
    let server = start("operate-retry-failed", &ci, &[]).await;
    for version in ["1.2.0", "1.3.0"] {
        deployed_in_dev(&server, version).await;
        server
            .wait_for("the promotion to fail", |all| {
                one(all, "test", version).is_some_and(|p| p["phase"] == "failed")
            })
            .await;
    }
    let (code, out, err) = cli(
        &server,
        &["retry", "--failed", "flux-system/podinfo", "test"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("2 failed promotion(s) retried"), "{out}");
    succeeded_into(&server, "test", "1.2.0").await;
    succeeded_into(&server, "test", "1.3.0").await;
    let (code, _, err) = cli(
        &server,
        &["retry", "--failed", "flux-system/podinfo", "staging"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 404") && err.contains("\"staging\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rollback_from_1_2_0_to_1_1_0_reaches_the_receiver_with_the_older_version() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("operate-rollback", &ci, &[]).await;
    deployed_in_dev(&server, "1.1.0").await;
    succeeded_into(&server, "test", "1.1.0").await;
    deployed_in_dev(&server, "1.2.0").await;
    succeeded_into(&server, "test", "1.2.0").await;

    let (code, _, err) = cli(
        &server,
        &["promote", "flux-system/podinfo", "test", "1.1.0"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 409")
            && err.contains("1.1.0 is older than 1.2.0, in test now")
            && err.contains("--rollback"),
        "{err}"
    );
    let (code, out, err) = cli(
        &server,
        &[
            "promote",
            "podinfo",
            "-n",
            "flux-system",
            "test",
            "1.1.0",
            "--rollback",
            "--reason",
            "1.2.0 leaks memory",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let all = server
        .wait_for("the rollback to succeed", |all| {
            all.iter().any(|p| {
                p["version"] == "1.1.0" && p["cause"] == "rollback" && p["phase"] == "succeeded"
            })
        })
        .await;
    let rollback = all.iter().find(|p| p["cause"] == "rollback").unwrap();
    assert_eq!(rollback["round"], 2);
    assert_eq!(rollback["reason"], "1.2.0 leaks memory");
    assert_eq!(rollback["requestedBy"], "loopback caller");
    assert_eq!(versions_into(&ci, "test"), ["1.1.0", "1.2.0", "1.1.0"]);

    // History tells the story, per environment.
    let (code, out, err) = cli(&server, &["history", "flux-system/podinfo", "test"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test (now: 1.1.0)"), "{out}");
    assert!(
        out.contains("rollback") && out.contains("1.2.0 leaks memory"),
        "{out}"
    );
    assert_eq!(out.matches("succeeded").count(), 3, "{out}");
}

#[tokio::test]
async fn operator_requests_that_name_nothing_or_ask_nonsense_are_refused_naming_the_object() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("operate-refusals", &ci, &[]).await;
    let promote = |env: &str, version: &str| {
        serde_json::json!({"namespace": "flux-system", "pipeline": "podinfo",
            "environment": env, "version": version})
    };
    let (code, body) = post(
        &server,
        "/promotions/podinfo-test-0000/retry",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["reason"], "no promotion podinfo-test-0000");
    let (code, body) = post(&server, "/promotions", promote("staging", "1.0.0")).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("environment \"staging\" not found; have dev, test, prod"),
        "{body}"
    );
    let mut other = promote("test", "1.0.0");
    other["pipeline"] = "nginx".into();
    let (code, body) = post(&server, "/promotions", other).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["reason"], "no Pipeline flux-system/nginx is in force");
    let (code, body) = post(&server, "/promotions", promote("test", "")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["reason"], "version is required and was empty");
    let (code, body) = post(&server, "/promotions", promote("test", &"1".repeat(257))).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("at most 256"),
        "{body}"
    );
    let (code, body) = post(&server, "/promotions", promote("prod", "1.0.0")).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("cannot skip"),
        "{body}"
    );
    let (code, body) = post(
        &server,
        "/promotions",
        serde_json::json!({"namespace": "flux-system"}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    // Nothing was recorded by any of it.
    assert!(server.promotions().await.is_empty());
    let (code, _, err) = cli(&server, &["reject", "podinfo-test-0000"]);
    assert_eq!(code, 2, "clap refuses a reject without --reason: {err}");
    assert!(err.contains("--reason"), "{err}");
}

#[tokio::test]
async fn reject_and_abort_are_final_recorded_with_who_and_why_and_nothing_reaches_the_receiver() {
    let ci = Receiver::start(202, "queued").await;
    let mut server = start("operate-reject", &ci, &[]).await;
    deployed_in_dev(&server, "1.2.0").await;
    succeeded_into(&server, "test", "1.2.0").await;
    let event =
        promoter::client::deployment_event("HelmRelease", "podinfo-test", "podinfo", "1.2.0");
    let (code, body) = send(&server, "test", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    let all = server
        .wait_for("1.2.0 to wait for approval into prod", |all| {
            one(all, "prod", "1.2.0").is_some_and(|p| p["phase"] == "waiting-approval")
        })
        .await;
    let id = one(&all, "prod", "1.2.0").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = cli(&server, &["reject", &id, "--reason", "fails the load test"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rejected"), "{out}");
    // Final: approving it now is refused.
    let (code, body) = post(
        &server,
        &format!("/promotions/{id}/approve"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    let all = server.promotions().await;
    let rejected = one(&all, "prod", "1.2.0").unwrap();
    assert_eq!(rejected["phase"], "rejected");
    assert_eq!(rejected["closedBy"], "loopback caller");
    assert_eq!(rejected["closeReason"], "fails the load test");
    // Durable before it answered: kill -9 and a restart keep it.
    server.restart();
    let all = server.promotions().await;
    assert_eq!(one(&all, "prod", "1.2.0").unwrap()["phase"], "rejected");

    // Abort: a promotion pending its next attempt (the receiver is down, and asks for 5 s
    // before the next: time for the abort, however loaded the machine) never runs again.
    let later: &[(&str, &str)] = &[("Retry-After", "5")];
    ci.then_answer(&[(503, later), (503, later), (503, later)]);
    deployed_in_dev(&server, "1.3.0").await;
    let all = server
        .wait_for("1.3.0 into test to be retried later", |all| {
            one(all, "test", "1.3.0").is_some_and(|p| p["phase"] == "pending" && p["attempts"] == 1)
        })
        .await;
    let id = one(&all, "test", "1.3.0").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = cli(&server, &["abort", &id, "--reason", "wrong build"]);
    assert_eq!(code, 0, "{out}{err}");
    let calls = versions_into(&ci, "test").len();
    // Past the 5 s the receiver asked for: the next attempt would have come by now.
    tokio::time::sleep(std::time::Duration::from_millis(6000)).await;
    assert_eq!(
        versions_into(&ci, "test").len(),
        calls,
        "an aborted promotion never runs"
    );
    let all = server.promotions().await;
    assert_eq!(one(&all, "test", "1.3.0").unwrap()["phase"], "aborted");
    // An event for it is ignored, saying why.
    let (code, body) = deployed_in_dev(&server, "1.3.0").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("was aborted"), "{body}");
}

#[tokio::test]
async fn a_newer_version_that_succeeds_supersedes_an_older_one_waiting_for_approval() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("operate-supersede", &ci, &[]).await;
    for version in ["1.2.0", "1.3.0"] {
        deployed_in_dev(&server, version).await;
        succeeded_into(&server, "test", version).await;
        let event =
            promoter::client::deployment_event("HelmRelease", "podinfo-test", "podinfo", version);
        let (code, body) = send(&server, "test", &event, Some(EVENTS_KEY)).await;
        assert_eq!(code, 202, "{body}");
    }
    let all = server
        .wait_for("both to wait for approval into prod", |all| {
            ["1.2.0", "1.3.0"]
                .iter()
                .all(|v| one(all, "prod", v).is_some_and(|p| p["phase"] == "waiting-approval"))
        })
        .await;
    let old = one(&all, "prod", "1.2.0").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let new = one(&all, "prod", "1.3.0").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = post(
        &server,
        &format!("/promotions/{new}/approve"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    succeeded_into(&server, "prod", "1.3.0").await;
    let all = server
        .wait_for("1.2.0 to be superseded", |all| {
            one(all, "prod", "1.2.0").is_some_and(|p| p["phase"] == "superseded")
        })
        .await;
    assert!(
        one(&all, "prod", "1.2.0").unwrap()["closedBy"]
            .as_str()
            .unwrap()
            .starts_with("1.3.0"),
    );
    let (code, body) = post(
        &server,
        &format!("/promotions/{old}/approve"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["reason"].as_str().unwrap().contains("1.3.0"), "{body}");
    assert_eq!(
        versions_into(&ci, "prod"),
        ["1.3.0"],
        "the older version never went out"
    );
}

#[tokio::test]
async fn a_suspended_pipeline_holds_events_and_on_resume_runs_only_the_newest_per_environment() {
    let ci = Receiver::start(202, "queued").await;
    let mut server = start("operate-suspend", &ci, &[]).await;
    let (code, out, err) = cli(
        &server,
        &["suspend", "flux-system/podinfo", "--reason", "freeze"],
    );
    assert_eq!(code, 0, "{out}{err}");
    // Kept in the data directory: suspended across a kill -9 and a restart.
    server.restart();
    for version in ["1.2.0", "1.3.0"] {
        let (code, body) = deployed_in_dev(&server, version).await;
        assert_eq!(code, 202, "{body}");
        assert!(body.contains("\"phase\":\"held\""), "{body}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(ci.received().is_empty(), "nothing runs while suspended");
    let (_, out, _) = cli(&server, &["history", "flux-system/podinfo"]);
    assert!(
        out.contains("is suspended (suspended by loopback caller: freeze)"),
        "{out}"
    );

    let (code, out, err) = cli(&server, &["resume", "flux-system/podinfo"]);
    assert_eq!(code, 0, "{out}{err}");
    succeeded_into(&server, "test", "1.3.0").await;
    let all = server
        .wait_for("1.2.0 to be superseded", |all| {
            one(all, "test", "1.2.0").is_some_and(|p| p["phase"] == "superseded")
        })
        .await;
    assert_eq!(all.len(), 2);
    assert_eq!(versions_into(&ci, "test"), ["1.3.0"]);
}

/// One raw HTTP/1.1 request to the admin listener, as a browser would send it: the status.
async fn raw(server: &Server, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.admin.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_web_page_cannot_post_a_form_to_suspend_or_promote_csrf() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("operate-csrf", &ci, &[]).await;
    let addr = server.admin.trim_start_matches("http://").to_string();
    // What a cross-site form or fetch without preflight can send: text/plain or a form.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let body = r#"{"reason":"pwned"}"#;
        let request = format!(
            "POST /pipelines/flux-system/podinfo/suspend HTTP/1.1\r\nHost: {addr}\r\n\
             Origin: http://evil.example\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(raw(&server, &request).await, 415, "{content_type}");
    }
    let (_, out, _) = cli(&server, &["history", "flux-system/podinfo"]);
    assert!(!out.contains("suspended"), "nothing was suspended: {out}");
    let (code, body) = deployed_in_dev(&server, "1.2.0").await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"phase\":\"pending\""), "{body}");
}

#[tokio::test]
async fn a_page_whose_name_is_rebound_to_loopback_cannot_read_or_steer_dns_rebinding() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("operate-rebinding", &ci, &[]).await;
    let port = server.admin.rsplit(':').next().unwrap().to_string();
    let get = format!(
        "GET /promotions HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(&server, &get).await, 403);
    let body = r#"{"reason":"pwned"}"#;
    let post = format!(
        "POST /pipelines/flux-system/podinfo/suspend HTTP/1.1\r\nHost: evil.example:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(raw(&server, &post).await, 403);
    // The same from a local client naming the loopback address is answered.
    let ok =
        format!("GET /promotions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(&server, &ok).await, 200);
    let ok =
        format!("GET /promotions HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(&server, &ok).await, 200);
    let (_, out, _) = cli(&server, &["history", "flux-system/podinfo"]);
    assert!(!out.contains("suspended"), "{out}");
}

#[tokio::test]
async fn the_promotions_api_pages_newest_first_and_refuses_bad_parameters_naming_them() {
    let ci = Receiver::start(202, "queued").await;
    let server = start("operate-pages", &ci, &[]).await;
    for n in 0..5 {
        deployed_in_dev(&server, &format!("1.0.{n}")).await;
    }
    server
        .wait_for("five promotions to succeed", |all| {
            all.len() == 5 && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    let get = |path: String| {
        let url = format!("{}{path}", server.admin);
        async move { promoter::client::admin_get(&url, None).await.unwrap() }
    };
    let mut versions = Vec::new();
    let mut path = "/promotions?limit=2&environment=test".to_string();
    let mut pages = 0;
    loop {
        let (code, body) = get(path.clone()).await;
        assert_eq!(code, 200, "{body}");
        pages += 1;
        let items = body["promotions"].as_array().unwrap();
        assert!(items.len() <= 2);
        versions.extend(
            items
                .iter()
                .map(|p| p["version"].as_str().unwrap().to_string()),
        );
        match body["continue"].as_str() {
            Some(token) => path = format!("/promotions?limit=2&environment=test&continue={token}"),
            None => break,
        }
    }
    assert_eq!(
        versions,
        ["1.0.4", "1.0.3", "1.0.2", "1.0.1", "1.0.0"],
        "newest first, each once"
    );
    assert_eq!(pages, 3);
    let (_, first) = get("/promotions?limit=2".into()).await;
    let token = first["continue"].as_str().unwrap().to_string();

    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("phase=done", "phase"),
        ("colour=blue", "colour"),
        ("continue=bm9wZQ.0000000000000000", "continue"),
        (&format!("continue={token}x") as &str, "continue"),
        // Issued for other filters: stale for this query.
        (
            &format!("phase=failed&continue={token}") as &str,
            "continue",
        ),
    ] {
        let (code, body) = get(format!("/promotions?{query}")).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .starts_with(&format!("parameter {parameter}: ")),
            "{body}"
        );
    }
    let (code, body) = get("/promotions?phase=done".into()).await;
    assert_eq!(code, 400);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("waiting-approval"),
        "{body}"
    );

    // The CLI pages through it.
    let (code, out, err) = cli(
        &server,
        &["promotions", "list", "--phase", "succeeded", "--limit", "3"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1 + 3, "{out}");
    let (code, out, _) = cli(&server, &["promotions", "list", "--environment", "test"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1 + 5, "{out}");
}
