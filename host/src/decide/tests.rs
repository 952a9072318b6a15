use super::*;
use crate::event;
use crate::pipeline::Manifests;
use serde_json::json;

fn pipeline(source: &str, yaml: &str) -> Pipeline {
    let mut m = Manifests::from_yaml(source, yaml).unwrap_or_else(|e| panic!("{e}"));
    m.pipelines.remove(0)
}

/// dev (search) → test (qa and perf clusters, search) → prod (search), pull requests.
fn multi() -> Pipeline {
    pipeline(
        "search-multiple-targets.yaml",
        include_str!("../testdata/seed/search-multiple-targets.yaml"),
    )
}

fn manual() -> Pipeline {
    pipeline(
        "search-manual.yaml",
        include_str!("../testdata/seed/search-manual.yaml"),
    )
}

/// A helm-controller v2 event for the seed pipelines' app, edited by `edit`.
fn event_with(edit: impl FnOnce(&mut serde_json::Value)) -> FluxEvent {
    let mut v = json!({
        "involvedObject": {
            "kind": "HelmRelease",
            "namespace": "search",
            "name": "search-helmrelease",
            "uid": "0b9b5a34-3f0e-4a5e-9a53-6f1b1f1c2d3e",
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "resourceVersion": "98765"
        },
        "severity": "info",
        "timestamp": "2024-05-10T12:00:00Z",
        "message": "Helm upgrade succeeded for release search/search-helmrelease.v4 with chart search@1.2.0",
        "reason": "UpgradeSucceeded",
        "metadata": {"revision": "1.2.0"},
        "reportingController": "helm-controller",
        "reportingInstance": "helm-controller-5f7d8c9b4-x2x7q"
    });
    edit(&mut v);
    event::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
}

fn upgrade(version: &str) -> FluxEvent {
    event_with(|v| v["metadata"]["revision"] = version.into())
}

fn no_history() -> Vec<Promoted> {
    Vec::new()
}

fn promoted(target_env: &str, version: &str) -> Promoted {
    Promoted {
        target_env: target_env.into(),
        version: version.into(),
    }
}

fn intents(d: Decision) -> Vec<Intent> {
    match d {
        Decision::Promote(i) => i,
        other => panic!("expected a promotion, got {other:?}"),
    }
}

fn ignored(d: Decision) -> String {
    match d {
        Decision::Ignore(r) => r.to_string(),
        other => panic!("expected ignore, got {other:?}"),
    }
}

fn rejected(d: Decision) -> String {
    match d {
        Decision::Reject(r) => r.to_string(),
        other => panic!("expected reject, got {other:?}"),
    }
}

#[test]
fn a_deployment_to_dev_promotes_into_test_with_all_its_targets_in_one_intent() {
    let p = multi();
    let found = intents(decide(&p, "dev", &upgrade("1.2.0"), &no_history()));
    assert_eq!(found.len(), 1);
    let intent = &found[0];
    assert_eq!(intent.pipeline.namespace, "search");
    assert_eq!(intent.pipeline.name, "search-multiple-targets");
    assert_eq!(
        (intent.source_env.as_str(), intent.target_env.as_str()),
        ("dev", "test")
    );
    assert_eq!(intent.targets, p.environment("test").unwrap().targets);
    assert_eq!(intent.targets.len(), 2);
    assert_eq!(intent.version, "1.2.0");
    assert_eq!(intent.strategy.plugin, "pull-request");
    assert!(!intent.manual);
    assert_eq!(
        intent.id,
        promotion_id("search", "search-multiple-targets", "test", "1.2.0")
    );
}

#[test]
fn one_target_of_the_lower_environment_is_enough_to_promote() {
    // test has the qa and perf targets; the first one to report promotes into prod.
    let found = intents(decide(&multi(), "test", &upgrade("1.2.0"), &no_history()));
    assert_eq!(found[0].target_env, "prod");
}

#[test]
fn second_target_reporting_the_same_version_adds_nothing() {
    let history = vec![promoted("prod", "1.2.0")];
    let reason = ignored(decide(&multi(), "test", &upgrade("1.2.0"), &history));
    assert_eq!(
        reason,
        "ignored: version 1.2.0 was already promoted into prod"
    );
    // The same version written with a leading v is the same version.
    let reason = ignored(decide(&multi(), "test", &upgrade("v1.2.0"), &history));
    assert_eq!(
        reason,
        "ignored: version v1.2.0 was already promoted into prod"
    );
}

#[test]
fn helm_release_v2beta1_and_v2_refer_to_the_same_app() {
    let p = multi();
    assert_eq!(p.app_ref.api_version, "helm.toolkit.fluxcd.io/v2beta1");
    for version in ["v2beta1", "v2beta2", "v2"] {
        let e = event_with(|v| {
            v["involvedObject"]["apiVersion"] = format!("helm.toolkit.fluxcd.io/{version}").into()
        });
        assert_eq!(match_app(&p, "dev", &e), Ok(()), "{version}");
    }
}

#[test]
fn another_group_kind_or_name_is_not_the_pipelines_app() {
    let p = multi();
    let cases = [
        ("apiVersion", "source.toolkit.fluxcd.io/v1"),
        ("kind", "Kustomization"),
        ("name", "search-other"),
    ];
    for (field, value) in cases {
        let e = event_with(|v| v["involvedObject"][field] = value.into());
        let d = decide(&p, "dev", &e, &no_history());
        let reason = rejected(d);
        assert!(
            reason.starts_with("involved object does not match the pipeline: "),
            "{field}: {reason}"
        );
        assert!(
            reason.contains("appRef HelmRelease search-helmrelease"),
            "{reason}"
        );
    }
}

#[test]
fn an_event_from_a_namespace_outside_the_source_environment_is_rejected() {
    let e = event_with(|v| v["involvedObject"]["namespace"] = "elsewhere".into());
    let reason = rejected(decide(&multi(), "dev", &e, &no_history()));
    assert_eq!(
        reason,
        "involved object does not match the pipeline: namespace elsewhere is not a target of environment dev; have search"
    );
}

#[test]
fn failed_upgrade_is_ignored_not_promoted() {
    let e = event_with(|v| {
        v["severity"] = "error".into();
        v["reason"] = "UpgradeFailed".into();
        v["message"] = "Helm upgrade failed for release search/search-helmrelease with chart search@1.2.0: timed out".into();
    });
    let reason = ignored(decide(&multi(), "dev", &e, &no_history()));
    assert_eq!(
        reason,
        "ignored: severity error is not a successful deployment"
    );

    // Even if an Alert sent it with severity info, the reason decides.
    let e = event_with(|v| v["reason"] = "UpgradeFailed".into());
    assert_eq!(
        is_successful_deployment(&e).unwrap_err().to_string(),
        "ignored: reason UpgradeFailed is not a successful deployment"
    );
}

#[test]
fn rollbacks_tests_and_other_reasons_are_not_deployments() {
    for reason in [
        "RollbackSucceeded",
        "TestSucceeded",
        "UninstallSucceeded",
        "ReconciliationSucceeded",
        "Progressing",
    ] {
        let e = event_with(|v| v["reason"] = reason.into());
        assert_eq!(
            is_successful_deployment(&e),
            Err(IgnoreReason::NotADeployment {
                reason: reason.into()
            }),
            "{reason}"
        );
    }
    let e = event_with(|v| v["reason"] = "InstallSucceeded".into());
    assert_eq!(is_successful_deployment(&e), Ok(()));
}

#[test]
fn legacy_v2beta1_events_promote_only_on_install_or_upgrade_succeeded() {
    let legacy = |message: &str, severity: &str| {
        event_with(|v| {
            v["involvedObject"]["apiVersion"] = "helm.toolkit.fluxcd.io/v2beta1".into();
            v["reason"] = severity.into();
            v["severity"] = severity.into();
            v["message"] = message.into();
        })
    };
    assert_eq!(
        is_successful_deployment(&legacy("Helm install succeeded", "info")),
        Ok(())
    );
    assert_eq!(
        is_successful_deployment(&legacy("Helm upgrade succeeded", "info")),
        Ok(())
    );
    assert_eq!(
        is_successful_deployment(&legacy("Helm install has started", "info"))
            .unwrap_err()
            .to_string(),
        "ignored: message \"Helm install has started\" is not a successful install or upgrade"
    );
    assert!(is_successful_deployment(&legacy("Helm test succeeded", "info")).is_err());
    assert_eq!(
        is_successful_deployment(&legacy("Helm upgrade failed: timed out", "error")),
        Err(IgnoreReason::ErrorSeverity)
    );
}

#[test]
fn a_kustomization_promotes_on_reconciliation_succeeded_with_any_new_revision() {
    let yaml = include_str!("../testdata/seed/search.yaml").replace(
        "kind: HelmRelease\n    name: search-helmrelease\n    apiVersion: helm.toolkit.fluxcd.io/v2beta1",
        "kind: Kustomization\n    name: search\n    apiVersion: kustomize.toolkit.fluxcd.io/v1",
    );
    let p = pipeline("search.yaml", &yaml);
    let applied = |revision: &str| {
        event_with(|v| {
            v["involvedObject"]["kind"] = "Kustomization".into();
            v["involvedObject"]["name"] = "search".into();
            v["involvedObject"]["apiVersion"] = "kustomize.toolkit.fluxcd.io/v1beta2".into();
            v["reason"] = "ReconciliationSucceeded".into();
            v["message"] = "Reconciliation finished in 1.2s, next run in 10m0s".into();
            v["metadata"] = json!({ "revision": revision });
        })
    };
    let history = vec![promoted("test", "main@sha1:bbbb")];
    // Revisions that are not semver are never compared: an "older-looking" one still promotes.
    let found = intents(decide(&p, "dev", &applied("main@sha1:aaaa"), &history));
    assert_eq!(found[0].version, "main@sha1:aaaa");
    let reason = ignored(decide(&p, "dev", &applied("main@sha1:bbbb"), &history));
    assert_eq!(
        reason,
        "ignored: version main@sha1:bbbb was already promoted into test"
    );
}

#[test]
fn nothing_is_promoted_beyond_the_last_environment() {
    let reason = rejected(decide(&multi(), "prod", &upgrade("1.2.0"), &no_history()));
    assert_eq!(
        reason,
        "pipeline search/search-multiple-targets: prod is the last environment; nothing to promote into"
    );
}

#[test]
fn an_unknown_source_environment_is_rejected_listing_the_environments() {
    let reason = rejected(decide(
        &multi(),
        "staging",
        &upgrade("1.2.0"),
        &no_history(),
    ));
    assert_eq!(
        reason,
        "pipeline search/search-multiple-targets: environment \"staging\" not found; have dev, test, prod"
    );
}

#[test]
fn a_next_environment_without_targets_is_rejected() {
    // Validation refuses such a pipeline; decide still answers for one built by other means.
    let mut p = multi();
    p.environments[1].targets.clear();
    let reason = rejected(decide(&p, "dev", &upgrade("1.2.0"), &no_history()));
    assert_eq!(
        reason,
        "pipeline search/search-multiple-targets: environment test has no targets to promote into"
    );
}

#[test]
fn older_semver_than_already_promoted_is_not_promoted() {
    let history = vec![
        promoted("test", "v1.3.0"),
        promoted("test", "1.2.5"),
        promoted("prod", "9.0.0"),
    ];
    let reason = ignored(decide(&multi(), "dev", &upgrade("1.2.9"), &history));
    assert_eq!(
        reason,
        "ignored: version 1.2.9 is older than v1.3.0, already promoted into test"
    );
    let found = intents(decide(&multi(), "dev", &upgrade("1.3.1"), &history));
    assert_eq!(found[0].version, "1.3.1");
    // A pre-release is older than its release.
    let reason = ignored(decide(&multi(), "dev", &upgrade("1.3.0-rc.1"), &history));
    assert!(reason.contains("older than v1.3.0"), "{reason}");
}

#[test]
fn build_metadata_does_not_make_a_version_older_or_the_same() {
    let history = vec![promoted("test", "0.0.2+eb02f2ecb66c")];
    let found = intents(decide(
        &multi(),
        "dev",
        &upgrade("0.0.2+0a1b2c3d4e5f"),
        &history,
    ));
    assert_eq!(found[0].version, "0.0.2+0a1b2c3d4e5f");
}

#[test]
fn a_semver_version_after_a_non_semver_one_is_not_blocked() {
    let history = vec![promoted("test", "latest")];
    let found = intents(decide(&multi(), "dev", &upgrade("0.1.0"), &history));
    assert_eq!(found[0].version, "0.1.0");
}

#[test]
fn a_successful_deployment_without_a_revision_is_rejected() {
    let e = event_with(|v| v["metadata"] = json!({}));
    let reason = rejected(decide(&multi(), "dev", &e, &no_history()));
    assert_eq!(reason, "event has no revision in its metadata");
    // An event that is not a deployment is ignored, revision or not.
    let e = event_with(|v| {
        v["metadata"] = json!({});
        v["reason"] = "DependencyNotReady".into();
    });
    assert!(matches!(
        decide(&multi(), "dev", &e, &no_history()),
        Decision::Ignore(_)
    ));
}

#[test]
fn an_environment_with_no_promotion_configured_is_rejected() {
    let yaml = include_str!("../testdata/seed/search.yaml").replace(
        "  promotion:\n    pullRequest:\n      url: https://github.com/example-org/fleet-config.git\n      branch: main\n",
        "",
    );
    let p = pipeline("search.yaml", &yaml);
    let reason = rejected(decide(&p, "dev", &upgrade("1.2.0"), &no_history()));
    assert_eq!(
        reason,
        "pipeline search/search: no promotion is configured into environment test"
    );
}

#[test]
fn a_manual_promotion_is_an_intent_flagged_manual() {
    let found = intents(decide(&manual(), "test", &upgrade("1.2.0"), &no_history()));
    assert!(found[0].manual);
    assert_eq!(found[0].target_env, "prod");
}

#[test]
fn history_of_other_environments_does_not_matter() {
    let history = [promoted("prod", "1.2.0")];
    let found = intents(decide(&multi(), "dev", &upgrade("1.2.0"), &history[..]));
    assert_eq!(found[0].target_env, "test");
}

fn is_kubernetes_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

#[test]
fn promotion_id_is_a_deterministic_kubernetes_name() {
    let id = promotion_id("search", "search", "prod", "1.2.0");
    assert!(id.starts_with("search-prod-"), "{id}");
    assert_eq!(id.len(), "search-prod-".len() + 32, "128 bits of hash");
    assert_eq!(id, promotion_id("search", "search", "prod", "1.2.0"));
    assert_ne!(id, promotion_id("search", "search", "prod", "1.2.1"));
    assert_ne!(id, promotion_id("other", "search", "prod", "1.2.0"));

    let awkward = [
        (
            "ns",
            &"Very.Long_Pipeline-Name".repeat(5) as &str,
            "Prod_EU",
            "v1.0.0+build",
        ),
        ("ns", "--", "__", "1"),
        ("ns", "app", "ünïcode-env", "1"),
    ];
    for (ns, name, env, version) in awkward {
        let id = promotion_id(ns, name, env, version);
        assert!(is_kubernetes_name(&id), "{id:?}");
    }
    assert_eq!(promotion_id("ns", "--", "__", "1").len(), 32);
    // The parts cannot be shifted into each other.
    assert_ne!(
        promotion_id("ns", "app", "prod", "1.0/x"),
        promotion_id("ns", "app", "prod/1.0", "x")
    );
}

#[test]
fn an_intent_becomes_the_request_handed_to_the_plugin() {
    let p = multi();
    let e = upgrade("1.2.0");
    let intent = intents(decide(&p, "dev", &e, &no_history())).remove(0);
    let request = intent.request(&p, &e, 1);
    assert_eq!(request.id, intent.id);
    assert_eq!(request.app, p.app_ref);
    assert_eq!(request.target_environment, "test");
    assert_eq!(request.config["baseBranch"], "main");
    assert_eq!(request.event.reason, "UpgradeSucceeded");
    assert_eq!(request.event.metadata["revision"], "1.2.0");
}

/// A history of records of pipeline `multi()`: (environment, version, phase), in the
/// order they happened (each finishing after the one before).
fn records(list: &[(&str, &str, Phase)]) -> VersionIndex {
    let mut history = VersionIndex::default();
    let p = multi();
    for (n, (env, version, phase)) in list.iter().enumerate() {
        history.note(&Promotion {
            id: promotion_id(&p.namespace, &p.name, env, version),
            pipeline: p.reference(),
            phase: *phase,
            created_at: n as u64 * 10,
            finished_at: phase.is_finished().then_some(n as u64 * 10 + 5),
            ..Promotion::blank(env, version)
        });
    }
    history
}

#[test]
fn a_request_into_the_next_environment_is_admitted_with_its_approval_rule() {
    let none = VersionIndex::default();
    let admitted = admit(&multi(), "test", "1.2.0", None, false, &none).unwrap();
    assert_eq!(
        admitted,
        Admitted {
            source_env: "dev".into(),
            manual: false,
            round: 1,
            cause: Cause::Manual,
            id: promotion_id("search", "search-multiple-targets", "test", "1.2.0"),
        }
    );
    let waits = admit(&manual(), "test", "1.2.0", Some("dev"), false, &none).unwrap();
    assert!(
        waits.manual,
        "a manual environment still waits for approval"
    );
}

#[test]
fn a_request_cannot_skip_an_environment_or_name_another_source() {
    let none = VersionIndex::default();
    let skip = admit(&multi(), "prod", "1.2.0", None, false, &none).unwrap_err();
    assert!(
        matches!(&skip, Refusal::NotInSource { source_env, .. } if source_env == "test"),
        "{skip}"
    );
    assert!(skip.to_string().contains("cannot skip"), "{skip}");
    // Recorded into test but waiting there (or failed): not promoted, so still a skip,
    // past test's approval.
    for phase in [Phase::WaitingApproval, Phase::Failed, Phase::Rejected] {
        let history = records(&[("test", "1.2.0", phase)]);
        let past = admit(&multi(), "prod", "1.2.0", None, false, &history).unwrap_err();
        assert!(matches!(past, Refusal::NotInSource { .. }), "{past}");
    }
    let history = records(&[("test", "1.2.0", Phase::Succeeded)]);
    assert!(admit(&multi(), "prod", "1.2.0", None, false, &history).is_ok());
    let wrong = admit(&multi(), "prod", "1.2.0", Some("dev"), false, &history).unwrap_err();
    assert!(matches!(wrong, Refusal::WrongSource { .. }), "{wrong}");
}

#[test]
fn a_request_into_the_first_or_an_unknown_environment_or_for_the_version_there_is_refused() {
    let none = VersionIndex::default();
    let first = admit(&multi(), "dev", "1.2.0", None, false, &none).unwrap_err();
    assert!(matches!(first, Refusal::FirstEnvironment { .. }), "{first}");
    let unknown = admit(&multi(), "staging", "1.2.0", None, false, &none).unwrap_err();
    assert!(
        unknown.to_string().contains("have dev, test, prod"),
        "{unknown}"
    );
    let history = records(&[("test", "1.3.0", Phase::Succeeded)]);
    let again = admit(&multi(), "test", "1.3.0", None, false, &history).unwrap_err();
    assert!(again.to_string().contains("already in test"), "{again}");
}

#[test]
fn an_older_version_than_the_one_there_is_a_rollback_and_needs_saying_so() {
    let history = records(&[
        ("test", "1.1.0", Phase::Succeeded),
        ("test", "1.2.0", Phase::Succeeded),
    ]);
    let old = admit(&multi(), "test", "1.1.0", None, false, &history).unwrap_err();
    assert_eq!(
        old.to_string(),
        "pipeline search/search-multiple-targets: 1.1.0 is older than 1.2.0, in test now; \
         promoting it is a rollback: ask with --rollback (API: \"rollback\": true)"
    );
    let rollback = admit(&multi(), "test", "1.1.0", None, true, &history).unwrap();
    assert_eq!(rollback.cause, Cause::Rollback);
    // 1.1.0 was recorded into test before: this is its second record, with an id of its own.
    assert_eq!(rollback.round, 2);
    assert_eq!(
        rollback.id,
        promotion_id_round("search", "search-multiple-targets", "test", "1.1.0", 2)
    );
    assert_ne!(
        rollback.id,
        promotion_id("search", "search-multiple-targets", "test", "1.1.0")
    );
    // A newer version than the one there is no rollback, whatever the flag says.
    let newer = admit(&multi(), "test", "1.3.0", None, true, &history).unwrap();
    assert_eq!(newer.cause, Cause::Manual);
}

#[test]
fn a_request_for_a_version_being_promoted_or_failed_there_says_what_to_do() {
    let history = records(&[
        ("test", "1.2.0", Phase::Pending),
        ("test", "1.3.0", Phase::Failed),
        ("test", "1.4.0", Phase::Rejected),
    ]);
    let busy = admit(&multi(), "test", "1.2.0", None, false, &history).unwrap_err();
    assert!(matches!(busy, Refusal::InProgress { .. }), "{busy}");
    let failed = admit(&multi(), "test", "1.3.0", None, false, &history).unwrap_err();
    assert!(failed.to_string().contains("promoter retry "), "{failed}");
    // Rejected: asking again makes a new record.
    let again = admit(&multi(), "test", "1.4.0", None, false, &history).unwrap();
    assert_eq!(again.round, 2);
}

#[test]
fn an_event_for_a_failed_version_retries_it_and_for_a_closed_one_is_ignored() {
    let history = records(&[
        ("test", "1.2.0", Phase::Failed),
        ("test", "1.3.0", Phase::Superseded),
    ]);
    match decide(&multi(), "dev", &upgrade("1.2.0"), &history) {
        Decision::Retry(l) => assert_eq!(l.phase, Phase::Failed),
        other => panic!("{other:?}"),
    }
    let reason = ignored(decide(&multi(), "dev", &upgrade("1.3.0"), &history));
    assert!(reason.contains("was superseded"), "{reason}");
}

#[test]
fn a_newer_version_that_succeeded_after_a_promotion_was_recorded_supersedes_it() {
    let waiting = Promotion {
        id: "old".into(),
        phase: Phase::WaitingApproval,
        created_at: 100,
        ..Promotion::blank("prod", "1.2.0")
    };
    let current = |version: &str, at: u64| Current {
        id: "new".into(),
        version: version.into(),
        finished_at: at,
    };
    assert!(supersedes(&current("1.3.0", 200), &waiting));
    // Older, or done before it was recorded (a rollback asked for afterwards): not.
    assert!(!supersedes(&current("1.1.0", 200), &waiting));
    assert!(!supersedes(&current("1.3.0", 50), &waiting));
}

// Rule 6: strict mode.

#[test]
fn strict_mode_lets_the_first_environment_report_any_version() {
    let p = multi();
    assert_eq!(
        check_promoted_source(&p, "dev", "1.2.0", SourcePromotion::Never),
        Ok(())
    );
}

#[test]
fn strict_mode_refuses_a_version_never_promoted_into_the_reporting_environment() {
    let p = multi();
    let err = check_promoted_source(&p, "test", "1.2.0", SourcePromotion::Never).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pipeline search/search-multiple-targets: version 1.2.0 was never promoted into test \
         (no promotion of it was recorded); this server requires an event from an environment \
         after the first to report a version that was promoted into it \
         (--require-promoted-source), so no environment or approval is skipped"
    );
}

#[test]
fn strict_mode_refuses_a_version_whose_promotion_still_waits_for_approval() {
    let p = multi();
    let waiting = SourcePromotion::NotAllowed("waiting-approval".into());
    let err = check_promoted_source(&p, "test", "1.2.0", waiting).unwrap_err();
    assert!(
        err.to_string()
            .contains("(its promotion is waiting-approval, not allowed to run)"),
        "{err}"
    );
}

#[test]
fn strict_mode_accepts_a_version_whose_promotion_was_allowed_to_run() {
    let p = multi();
    assert_eq!(
        check_promoted_source(&p, "test", "1.2.0", SourcePromotion::Allowed),
        Ok(())
    );
}

#[test]
fn a_version_an_operator_asked_for_counts_as_newest_only_once_it_succeeded() {
    let p = multi();
    let mut history = records(&[("test", "1.2.0", Phase::Succeeded)]);
    // Asked for by mistake, then rejected: later events are not "older" than it.
    history.note(&Promotion {
        id: promotion_id(&p.namespace, &p.name, "test", "999.0.0"),
        pipeline: p.reference(),
        phase: Phase::Rejected,
        cause: Cause::Manual,
        ..Promotion::blank("test", "999.0.0")
    });
    let found = intents(decide(&p, "dev", &upgrade("1.3.0"), &history));
    assert_eq!(found[0].version, "1.3.0");
}

/// The ingest path skips the replay lookup (and logs at debug) only for an event that
/// could never have been accepted, whatever the records say; an event ignored because of
/// what was recorded may be a replay of an accepted one and must be looked up.
#[test]
fn only_events_that_are_no_deployment_are_ignored_for_themselves_alone() {
    let alone = |d: Decision| match d {
        Decision::Ignore(r) => r.about_the_event_alone(),
        other => panic!("expected ignore, got {other:?}"),
    };
    let failed = event_with(|v| {
        v["severity"] = "error".into();
        v["reason"] = "UpgradeFailed".into();
    });
    assert!(alone(decide(&multi(), "dev", &failed, &no_history())));
    let progressing = event_with(|v| v["reason"] = "Progressing".into());
    assert!(alone(decide(&multi(), "dev", &progressing, &no_history())));
    let history = vec![promoted("test", "1.2.0")];
    assert!(!alone(decide(&multi(), "dev", &upgrade("1.2.0"), &history)));
    assert!(!alone(decide(&multi(), "dev", &upgrade("1.1.0"), &history)));
}
