//! The strategy runtime against real components built from this repository: hostile
//! fixture plugins fail with typed errors, and the next promotion still succeeds.

mod support;

use promoter::promotion::{Outcome, PromotionRequest};
use promoter::runtime::egress::{Credential, Grant, Origin};
use promoter::runtime::limits::Limits;
use promoter::runtime::secret::Secret;
use promoter::runtime::{Plugin, PluginError, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Receiver, promotion_json};

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn runtime() -> Arc<Runtime> {
    promoter::install_crypto_provider();
    Arc::new(Runtime::new(RuntimeConfig::default()).unwrap())
}

fn request(id: &str, config: serde_json::Value) -> PromotionRequest {
    let mut json = promotion_json(id);
    json["config"] = config;
    serde_json::from_value(json).unwrap()
}

/// Loads a component that must be refused; returns why.
async fn load_err(rt: &Arc<Runtime>, name: &str, bytes: &[u8]) -> PluginError {
    rt.load(name, bytes, Grant::default(), Limits::default())
        .await
        .err()
        .unwrap_or_else(|| panic!("{name} must be rejected"))
}

async fn load(rt: &Arc<Runtime>, name: &str, path: &str, grant: Grant, limits: Limits) -> Plugin {
    rt.load(name, &wasm(path), grant, limits)
        .await
        .unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

/// The fixture that GETs its configured URL, with `grant`.
async fn forbidden_http(rt: &Arc<Runtime>, grant: Grant, limits: Limits) -> Plugin {
    load(
        rt,
        "forbidden-http",
        env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP"),
        grant,
        limits,
    )
    .await
}

/// The fixture that echoes its request back, with nothing granted.
async fn echo(rt: &Arc<Runtime>) -> Plugin {
    load(
        rt,
        "echo",
        env!("PROMOTER_WASM_FIXTURE_ECHO"),
        Grant::default(),
        Limits::default(),
    )
    .await
}

/// After any failure, a good plugin in the same process still works.
async fn good_plugin_still_works(rt: &Arc<Runtime>) {
    let echo = echo(rt).await;
    let outcome = echo
        .promote(&request("after-failure", serde_json::json!({"k": "v"})))
        .await
        .expect("a good plugin succeeds after a hostile one failed");
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");
}

#[tokio::test]
async fn the_request_reaches_the_plugin_intact_and_its_outcome_comes_back() {
    let rt = runtime();
    let echo = echo(&rt).await;
    let config = serde_json::json!({"url": "https://ci.example.com/hook", "nested": {"n": 1}});
    let outcome = echo
        .promote(&request("promo-123", config.clone()))
        .await
        .unwrap();
    let Outcome::Done { url, details } = outcome else {
        panic!("expected done")
    };
    assert_eq!(url.as_deref(), Some("https://example.invalid/promo-123"));
    let echoed: serde_json::Value = serde_json::from_str(details.as_deref().unwrap()).unwrap();
    assert_eq!(echoed, config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_fails_with_a_timeout_within_the_deadline_plus_ten_percent() {
    let rt = runtime();
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let looping = load(
        &rt,
        "looping",
        env!("PROMOTER_WASM_FIXTURE_LOOPING"),
        Grant::default(),
        limits,
    )
    .await;
    let started = Instant::now();
    let err = looping
        .promote(&request("loop-1", serde_json::json!({})))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("plugin looping: timed out"),
        "{err}"
    );
    assert!(elapsed < Duration::from_millis(1100), "took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_secs(1),
        "stopped early: {elapsed:?}"
    );
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn memory_growth_past_the_limit_is_a_memory_limit_error_not_a_bare_trap() {
    let rt = runtime();
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let hog = load(
        &rt,
        "memory-hog",
        env!("PROMOTER_WASM_FIXTURE_MEMORY_HOG"),
        Grant::default(),
        limits,
    )
    .await;
    let err = hog
        .promote(&request("hog-1", serde_json::json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::MemoryLimit { limit_bytes, .. } if limit_bytes == 16 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("memory limit of 16777216 bytes"),
        "{err}"
    );
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn http_to_an_origin_not_granted_is_denied_and_no_connection_reaches_the_listener() {
    let rt = runtime();
    let listener = Receiver::start(200, "ok").await;
    let granted_elsewhere = Grant {
        origins: vec![Origin::parse("https://api.github.com").unwrap()],
        ..Grant::default()
    };
    let plugin = forbidden_http(&rt, granted_elsewhere, Limits::default()).await;
    let err = plugin
        .promote(&request(
            "deny-1",
            serde_json::json!({"url": listener.url("/steal")}),
        ))
        .await
        .unwrap_err();
    match &err {
        PluginError::CapabilityDenied { plugin, origin, .. } => {
            assert_eq!(plugin, "forbidden-http");
            assert_eq!(origin.as_deref(), Some(listener.origin().as_str()));
        }
        other => panic!("expected capability denied, got {other}"),
    }
    assert_eq!(listener.connection_count(), 0, "nothing may connect");
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn a_granted_name_that_resolves_to_loopback_is_refused_without_the_private_network_grant() {
    let rt = runtime();
    let listener = Receiver::start(200, "ok").await;
    let url = format!("http://localhost:{}/internal", listener.addr.port());
    let origin = Origin::parse(&url).unwrap();
    let grant = Grant {
        origins: vec![origin.clone()],
        ..Grant::default()
    };
    let plugin = forbidden_http(&rt, grant, Limits::default()).await;
    let err = plugin
        .promote(&request("deny-2", serde_json::json!({"url": url})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::CapabilityDenied { reason, .. } if reason.contains("internal address")),
        "{err}"
    );
    assert_eq!(listener.connection_count(), 0);

    let grant = Grant {
        origins: vec![origin],
        private_networks: true,
        ..Grant::default()
    };
    let plugin = forbidden_http(&rt, grant, Limits::default()).await;
    plugin
        .promote(&request("allow-2", serde_json::json!({"url": url})))
        .await
        .expect("granted private networks reach the listener");
    assert_eq!(listener.received().len(), 1);
}

#[tokio::test]
async fn the_host_adds_bound_credentials_for_their_origin_only() {
    let rt = runtime();
    let forge = Receiver::start(200, "ok").await;
    let forge_origin = Origin::parse(&forge.origin()).unwrap();
    let grant = Grant {
        origins: vec![forge_origin.clone()],
        credentials: vec![Credential {
            origin: forge_origin,
            header: http::header::AUTHORIZATION,
            value: Secret::from("Bearer s3cr3t-token"),
        }],
        ..Grant::default()
    };
    let plugin = forbidden_http(&rt, grant, Limits::default()).await;
    plugin
        .promote(&request(
            "cred-1",
            serde_json::json!({"url": forge.url("/api")}),
        ))
        .await
        .unwrap();
    let got = forge.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("authorization"), Some("Bearer s3cr3t-token"));
}

#[tokio::test]
async fn a_trap_surfaces_the_guests_own_message() {
    let rt = runtime();
    let plugin = load(
        &rt,
        "trapping",
        env!("PROMOTER_WASM_FIXTURE_TRAPPING"),
        Grant::default(),
        Limits::default(),
    )
    .await;
    let err = plugin
        .promote(&request("trap-1", serde_json::json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("fixture trap: the plugin gave up on purpose"),
        "{err}"
    );
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn a_component_missing_the_strategy_export_is_rejected_at_load() {
    let rt = runtime();
    let err = load_err(
        &rt,
        "no-export",
        &wasm(env!("PROMOTER_WASM_FIXTURE_NO_EXPORT")),
    )
    .await;
    assert!(matches!(err, PluginError::InvalidComponent { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("does not export promoter:strategy/strategy@0.1.0"),
        "{err}"
    );
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn a_component_for_another_contract_version_is_rejected_at_load() {
    let rt = runtime();
    let err = load_err(
        &rt,
        "wrong-version",
        &wasm(env!("PROMOTER_WASM_FIXTURE_WRONG_VERSION")),
    )
    .await;
    assert!(
        err.to_string().contains(
            "exports contract promoter:strategy@0.2.0, this host speaks promoter:strategy@0.1.0"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_rejected_with_a_reason() {
    let rt = runtime();
    let err = load_err(&rt, "garbage", b"definitely not wasm").await;
    assert!(matches!(err, PluginError::InvalidComponent { .. }), "{err}");
    let core_module = b"\0asm\x01\0\0\0";
    let err = load_err(&rt, "core", core_module).await;
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_instance_limit_wait_for_a_free_slot() {
    let rt = runtime();
    let limits = Limits {
        timeout: Duration::from_millis(300),
        max_instances: 2,
        ..Limits::default()
    };
    let looping = Arc::new(
        load(
            &rt,
            "looping",
            env!("PROMOTER_WASM_FIXTURE_LOOPING"),
            Grant::default(),
            limits,
        )
        .await,
    );
    let started = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let p = looping.clone();
            tokio::spawn(async move {
                p.promote(&request(&format!("c{i}"), serde_json::json!({})))
                    .await
            })
        })
        .collect();
    for c in calls {
        assert!(matches!(c.await.unwrap(), Err(PluginError::Timeout { .. })));
    }
    // Four 300 ms calls through two slots need at least two rounds.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk_by_digest() {
    promoter::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("promoter-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bytes = wasm(env!("PROMOTER_WASM_FIXTURE_NOOP"));
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.clone()),
            git_dir: None,
            ..Default::default()
        })
        .unwrap(),
    );
    let first = rt
        .load("noop", &bytes, Grant::default(), Limits::default())
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0]
            .to_string_lossy()
            .starts_with(&first.metadata().digest)
    );

    // A new process (a new runtime) loads from the cache, and a corrupt entry is recompiled.
    let rt2 = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.clone()),
            git_dir: None,
            ..Default::default()
        })
        .unwrap(),
    );
    rt2.load("noop", &bytes, Grant::default(), Limits::default())
        .await
        .unwrap();
    std::fs::write(dir.join(&files[0]), b"corrupt").unwrap();
    let rt3 = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.clone()),
            git_dir: None,
            ..Default::default()
        })
        .unwrap(),
    );
    let again = rt3
        .load("noop", &bytes, Grant::default(), Limits::default())
        .await
        .unwrap();
    assert!(matches!(
        again.promote(&request("n", serde_json::json!({}))).await,
        Ok(Outcome::Done { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_plugin_reaches_no_file_variable_socket_or_name_through_wasi() {
    let rt = runtime();
    let listener = Receiver::start(200, "ok").await;
    let plugin = load(
        &rt,
        "snoop",
        env!("PROMOTER_WASM_FIXTURE_SNOOP"),
        Grant::default(),
        Limits::default(),
    )
    .await;
    let outcome = plugin
        .promote(&request(
            "snoop-1",
            serde_json::json!({"tcp": listener.addr.to_string()}),
        ))
        .await
        .expect("the snoop reports what it got");
    let Outcome::Done {
        details: Some(details),
        ..
    } = outcome
    else {
        panic!("details expected: {outcome:?}")
    };
    let report: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&details).unwrap();
    eprintln!("{report:#?}");
    assert_eq!(report.len(), 11, "{report:#?}");
    for (what, got) in &report {
        assert!(got.starts_with("refused"), "{what}: {got}");
    }
    assert_eq!(listener.connection_count(), 0, "no socket reached the host");
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn a_component_importing_an_interface_the_host_does_not_offer_is_refused_by_name() {
    let rt = runtime();
    let err = load_err(
        &rt,
        "unknown-import",
        &wasm(env!("PROMOTER_WASM_FIXTURE_UNKNOWN_IMPORT")),
    )
    .await;
    assert!(matches!(err, PluginError::InvalidComponent { .. }), "{err}");
    assert!(err.to_string().contains("backdoor"), "{err}");
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn metadata_private_and_loopback_addresses_not_granted_are_refused_before_connecting() {
    let rt = runtime();
    let granted = Grant {
        origins: vec![Origin::parse("https://api.github.com").unwrap()],
        ..Grant::default()
    };
    let plugin = forbidden_http(&rt, granted, Limits::default()).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://127.0.0.1:8080/metrics",
        "http://[::1]:8080/metrics",
        "https://api.github.com.evil.example/",
    ] {
        let err = plugin
            .promote(&request("meta", serde_json::json!({"url": url})))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PluginError::CapabilityDenied { reason, .. } if reason.contains("not granted")),
            "{url}: {err}"
        );
    }
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn a_redirect_is_handed_to_the_plugin_and_never_followed_to_another_origin() {
    let rt = runtime();
    let elsewhere = Receiver::start(200, "secret data").await;
    let granted = Receiver::start(200, "ok").await;
    let target = elsewhere.url("/steal");
    granted.then_answer(&[(302, &[("Location", target.as_str())])]);
    let plugin = forbidden_http(
        &rt,
        Grant {
            origins: vec![Origin::parse(&granted.origin()).unwrap()],
            ..Grant::default()
        },
        Limits::default(),
    )
    .await;
    let outcome = plugin
        .promote(&request(
            "redirect",
            serde_json::json!({"url": granted.url("/start")}),
        ))
        .await
        .unwrap();
    let Outcome::Done { details, .. } = outcome else {
        panic!("done expected")
    };
    assert_eq!(details.as_deref(), Some("HTTP 302"));
    assert_eq!(
        elsewhere.connection_count(),
        0,
        "the redirect was not followed"
    );
    // Following it is the plugin's business, and the grant still decides.
    let err = plugin
        .promote(&request("redirect-2", serde_json::json!({"url": target})))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::CapabilityDenied { .. }), "{err}");
    assert_eq!(elsewhere.connection_count(), 0);
}

#[tokio::test]
async fn a_response_body_past_the_limit_is_cut_off_with_a_typed_error() {
    let rt = runtime();
    let huge: &'static str = Box::leak("x".repeat(4 << 20).into_boxed_str());
    let server = Receiver::start(200, huge).await;
    let limits = Limits {
        max_response_bytes: 64 << 10,
        ..Limits::default()
    };
    let plugin = forbidden_http(
        &rt,
        Grant {
            origins: vec![Origin::parse(&server.origin()).unwrap()],
            ..Grant::default()
        },
        limits,
    )
    .await;
    let err = plugin
        .promote(&request(
            "huge",
            serde_json::json!({"url": server.url("/big")}),
        ))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("65536") || text.to_lowercase().contains("too large"),
        "{text}"
    );
    good_plugin_still_works(&rt).await;
}

#[tokio::test]
async fn what_a_plugin_hands_back_is_cut_to_a_bounded_size() {
    let rt = runtime();
    let echo = echo(&rt).await;
    // The echo fixture returns its config text as the outcome's details.
    let huge = serde_json::json!({"blob": "x".repeat(1 << 20)});
    let outcome = echo.promote(&request("huge-details", huge)).await.unwrap();
    let Outcome::Done {
        details: Some(details),
        ..
    } = outcome
    else {
        panic!("details expected: {outcome:?}")
    };
    assert!(
        details.len() <= promoter::runtime::MAX_TEXT_BYTES,
        "{} bytes",
        details.len()
    );
    assert!(details.starts_with("{\"blob\":\"xxx") && details.ends_with('…'));
    good_plugin_still_works(&rt).await;
}
