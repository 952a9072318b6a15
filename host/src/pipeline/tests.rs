use super::*;
use serde_json::json;
use std::path::PathBuf;

fn testdata(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/testdata")
        .join(sub)
}

fn one(source: &str, yaml: &str) -> Pipeline {
    let mut m = Manifests::from_yaml(source, yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.pipelines.len(), 1, "{source}");
    m.pipelines.remove(0)
}

fn problems(yaml: &str) -> Vec<String> {
    match Manifests::from_yaml("pipeline.yaml", yaml) {
        Ok(_) => panic!("expected problems"),
        Err(LoadError::Invalid { problems, .. }) => {
            problems.iter().map(Problem::to_string).collect()
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

/// A scratch folder under the system temp folder, removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(files: &[(&str, &str)]) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "promoter-pipeline-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Scratch(dir)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MINIMAL: &str = "
apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {name: app}
spec:
  appRef: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: app}
  environments:
    - {name: dev, targets: [{namespace: dev}]}
    - {name: prod, targets: [{namespace: prod}]}
";

fn with_promotion(promotion: &str) -> String {
    format!("{MINIMAL}  promotion:\n{promotion}")
}

#[test]
fn the_seed_search_pipeline_promotes_by_pull_request_into_test_and_prod() {
    let p = one("search.yaml", include_str!("../testdata/seed/search.yaml"));
    assert_eq!(p.to_string(), "search/search");
    assert_eq!(p.app_ref.kind, "HelmRelease");
    assert_eq!(p.environment_names(), ["dev", "test", "prod"]);
    assert_eq!(p.environments[0].promotion, None);
    for env in ["test", "prod"] {
        let promotion = p.promotion_into(env).unwrap();
        assert!(!promotion.manual);
        assert_eq!(promotion.strategy.plugin, "pull-request");
        assert_eq!(
            promotion.strategy.config,
            json!({"url": "https://github.com/example-org/fleet-config.git", "baseBranch": "main"})
        );
        assert_eq!(promotion.hmac_secret, None);
    }
    let cluster = p.environments[2].targets[0].cluster.as_ref().unwrap();
    assert_eq!(
        (cluster.kind.as_str(), cluster.name.as_str()),
        ("GitopsCluster", "prod")
    );
    assert_eq!(cluster.namespace.as_deref(), Some("flux-system"));
}

#[test]
fn the_seed_multiple_targets_pipeline_keeps_both_test_targets() {
    let p = one(
        "search-multiple-targets.yaml",
        include_str!("../testdata/seed/search-multiple-targets.yaml"),
    );
    let test = p.environment("test").unwrap();
    let clusters: Vec<&str> = test
        .targets
        .iter()
        .map(|t| t.cluster.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(clusters, ["qa", "perf"]);
    assert_eq!(p.next_environment("test").unwrap().name, "prod");
}

#[test]
fn the_seed_webhook_pipeline_maps_to_the_webhook_plugin() {
    let p = one(
        "search-webhook.yaml",
        include_str!("../testdata/seed/search-webhook.yaml"),
    );
    let promotion = p.promotion_into("prod").unwrap();
    assert_eq!(promotion.strategy.plugin, "webhook");
    assert_eq!(
        promotion.strategy.config,
        json!({
            "url": "https://ci.example.com/hooks/promote-search",
            "secretRef": {"name": "ci-promotion-credentials"}
        })
    );
    // The webhook's secretRef is its outbound credential, not the hmac key of incoming events.
    assert_eq!(p.hmac_secret_for("dev"), None);
}

#[test]
fn the_seed_manual_pipeline_waits_for_approval_and_names_its_hmac_secret() {
    let p = one(
        "search-manual.yaml",
        include_str!("../testdata/seed/search-manual.yaml"),
    );
    let promotion = p.promotion_into("prod").unwrap();
    assert!(promotion.manual);
    assert_eq!(
        promotion.hmac_secret.as_deref(),
        Some("search-promotion-hmac")
    );
    assert_eq!(
        promotion.strategy.config["secretRef"],
        json!({"name": "fleet-config-credentials"})
    );
    for env in ["dev", "test", "prod"] {
        assert_eq!(p.hmac_secret_for(env), Some("search-promotion-hmac"));
    }
}

#[test]
fn weave_released_pipelines_load_from_a_folder() {
    let m = Manifests::load_dir(&testdata("weave")).unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<String> = m.pipelines.iter().map(|p| p.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "default/ledger",
            "flux-system/billing-github",
            "flux-system/billing-gitlab",
            "flux-system/ledger-fleet",
            "flux-system/ledger-manual-prod",
        ]
    );

    let github = m.pipeline("flux-system", "billing-github").unwrap();
    assert_eq!(
        github.promotion_into("prod").unwrap().strategy,
        StrategyRef {
            plugin: "pull-request".into(),
            config: json!({
                "type": "github",
                "baseBranch": "main",
                "url": "https://github.com/example-org/billing-deploy",
                "secretRef": {"name": "billing-promotion-credentials"}
            }),
        }
    );
    assert_eq!(github.environments[0].targets[0].cluster, None);

    let gitlab = m.pipeline("flux-system", "billing-gitlab").unwrap();
    assert_eq!(
        gitlab.hmac_secret_for("dev"),
        Some("billing-promotion-hmac")
    );

    let ledger = m.pipeline("default", "ledger").unwrap();
    let notification = &ledger.promotion_into("prod").unwrap().strategy;
    assert_eq!(
        (notification.plugin.as_str(), &notification.config),
        ("notification", &json!({}))
    );
}

#[test]
fn a_cluster_ref_without_namespace_gets_the_pipelines() {
    let m = Manifests::load_dir(&testdata("weave")).unwrap();
    let fleet = m.pipeline("flux-system", "ledger-fleet").unwrap();
    let perf = &fleet.environment("test").unwrap().targets[1];
    assert_eq!(perf.namespace, "ledger-perf");
    assert_eq!(
        perf.cluster.as_ref().unwrap().namespace.as_deref(),
        Some("flux-system")
    );
}

#[test]
fn an_environment_promotion_wins_over_the_pipelines_for_promotions_into_it() {
    let m = Manifests::load_dir(&testdata("weave")).unwrap();
    let p = m.pipeline("flux-system", "ledger-manual-prod").unwrap();
    let into_test = p.promotion_into("test").unwrap();
    assert_eq!(into_test.strategy.plugin, "notification");
    assert!(!into_test.manual);
    let into_prod = p.promotion_into("prod").unwrap();
    assert!(into_prod.manual);
    assert_eq!(into_prod.strategy.config["baseBranch"], "main");
}

#[test]
fn the_hmac_secret_comes_from_the_source_environment_else_the_pipeline() {
    let m = Manifests::load_dir(&testdata("weave")).unwrap();
    let p = m.pipeline("flux-system", "ledger-manual-prod").unwrap();
    assert_eq!(p.hmac_secret_for("dev"), Some("ledger-hmac"));
    assert_eq!(p.hmac_secret_for("test"), Some("ledger-test-hmac"));
    assert_eq!(p.hmac_secret_for("prod"), Some("ledger-hmac"));
    // A promotion carries the secret of the environment whose events trigger it.
    assert_eq!(
        p.promotion_into("test").unwrap().hmac_secret.as_deref(),
        Some("ledger-hmac")
    );
    assert_eq!(
        p.promotion_into("prod").unwrap().hmac_secret.as_deref(),
        Some("ledger-test-hmac")
    );
}

#[test]
fn an_environment_promotion_without_a_strategy_keeps_the_pipelines_strategy() {
    let yaml = MINIMAL.replace(
        "targets: [{namespace: prod}]}",
        "targets: [{namespace: prod}], promotion: {manual: true}}",
    ) + "  promotion: {strategy: {notification: {}}}\n";
    let p = one("pipeline.yaml", &yaml);
    let promotion = p.promotion_into("prod").unwrap();
    assert!(promotion.manual);
    assert_eq!(promotion.strategy.plugin, "notification");
}

#[test]
fn a_custom_plugin_is_named_with_its_config() {
    let p = one(
        "pipeline.yaml",
        &with_promotion(
            "    strategy:\n      plugin:\n        name: canary-gate\n        config: {threshold: 3}\n",
        ),
    );
    let strategies: Vec<(&str, &StrategyRef)> = p.strategies().collect();
    assert_eq!(strategies.len(), 1);
    assert_eq!(strategies[0].0, "prod");
    assert_eq!(strategies[0].1.plugin, "canary-gate");
    assert_eq!(strategies[0].1.config, json!({"threshold": 3}));
}

#[test]
fn a_custom_plugins_config_that_is_not_a_mapping_is_refused_naming_the_pipeline() {
    for (config, found) in [("\"threshold=3\"", "\"threshold=3\""), ("[1, 2]", "a list")] {
        let yaml = with_promotion(&format!(
            "    strategy:\n      plugin:\n        name: canary-gate\n        config: {config}\n"
        ));
        assert_eq!(
            problems(&yaml),
            [format!(
                "pipeline.yaml: Pipeline default/app: spec.promotion.strategy.plugin.config: \
                 expected a mapping of the plugin's settings, found {found}; write them as keys, \
                 e.g. `config: {{threshold: 3}}` (or leave config out)"
            )]
        );
    }
}

#[test]
fn names_longer_than_a_promotion_can_carry_are_refused_at_load() {
    let long = "a".repeat(254);
    let found = problems(&MINIMAL.replace("{name: app}", &format!("{{name: {long}}}")));
    assert!(
        found
            .iter()
            .any(|p| p.contains("metadata.name: 254 characters")
                && p.contains("choose a shorter name")),
        "{found:?}"
    );
    let found = problems(&MINIMAL.replace("{name: prod,", &format!("{{name: {long},")));
    assert!(
        found
            .iter()
            .any(|p| p.contains("spec.environments[1].name: 254 characters")
                && p.contains("spec.targetEnvironment")),
        "{found:?}"
    );
    // 253 is a valid Kubernetes name, and loads.
    one(
        "pipeline.yaml",
        &MINIMAL.replace("{name: app}", &format!("{{name: {}}}", "a".repeat(253))),
    );
}

#[test]
fn a_pipeline_without_promotion_loads_with_none_resolved() {
    let p = one("pipeline.yaml", MINIMAL);
    assert_eq!(p.namespace, "default");
    assert_eq!(p.promotion_into("prod"), None);
    assert_eq!(p.strategies().count(), 0);
}

#[test]
fn a_local_folder_yields_pipelines_secrets_and_plugin_config_maps() {
    let m = Manifests::load_dir(&testdata("local")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        m.pipelines.len(),
        1,
        "the Kustomization and Tekton Pipeline are skipped"
    );
    let p = m.pipeline("default", "podinfo").unwrap();
    assert_eq!(
        p.promotion_into("prod").unwrap().strategy.plugin,
        "canary-gate"
    );

    let secret = m
        .secret("default", p.hmac_secret_for("dev").unwrap())
        .unwrap();
    assert_eq!(
        secret.hmac_key(),
        Some(&b"from-string-data"[..]),
        "stringData wins"
    );
    assert_eq!(secret.get("other"), Some(&b"kept"[..]));
    assert!(!format!("{secret:?}").contains("from-string-data"));

    assert_eq!(m.config_maps.len(), 2);
    let plugins: Vec<&ConfigMap> = m.plugin_sources().collect();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0].namespace, "promoter-system");
    assert_eq!(plugins[0].binary_data["plugin.wasm"], b"\0asm\r\0\x01\0");
    assert!(
        !m.config_maps
            .iter()
            .any(|c| c.name == "unrelated" && c.is_plugin_source())
    );
}

#[test]
fn every_problem_in_a_folder_is_reported_at_once() {
    let bad = "
apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {name: broken, namespace: team}
spec:
  appRef: {kind: HelmRelease}
  environments:
    - {name: dev, targets: []}
    - {name: dev, targets: [{namespace: a}]}
  promotion:
    pullRequest: {url: https://git.example.com/r, branch: main}
    webhook: {url: https://ci.example.com/hook}
";
    let secret = "
apiVersion: v1
kind: Secret
metadata: {name: hmac, namespace: team}
data: {hmac-key: '%%%'}
";
    let dir = Scratch::new(&[
        ("a.yaml", bad),
        ("b.yml", MINIMAL),
        ("c.yaml", MINIMAL),
        ("d.yaml", secret),
        ("e.yaml", "kind: [unclosed"),
        ("notes.txt", "not read"),
    ]);
    let err = Manifests::load_dir(&dir.0).unwrap_err();
    let LoadError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    let expect = [
        "a.yaml: Pipeline team/broken: spec.appRef.apiVersion: expected a string such as helm.toolkit.fluxcd.io/v2, found nothing",
        "a.yaml: Pipeline team/broken: spec.appRef.name: expected a string such as podinfo, found nothing",
        "a.yaml: Pipeline team/broken: spec.promotion: expected exactly one strategy, found pull-request (spec.promotion.pullRequest) and webhook (spec.promotion.webhook)",
        "a.yaml: Pipeline team/broken: spec.environments[0] (dev).targets: expected at least one target {namespace, clusterRef?}, found an empty list",
        "a.yaml: Pipeline team/broken: spec.environments[1] (dev): environment name \"dev\" is used twice; names must be unique",
        "c.yaml: Pipeline default/app: defined more than once; first in b.yml",
    ];
    for e in expect {
        assert!(lines.iter().any(|l| l == e), "missing {e:?} in\n{err}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("d.yaml: Secret team/hmac: data.hmac-key: expected base64")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("e.yaml: document 1: not valid YAML")),
        "{err}"
    );
    assert!(!lines.iter().any(|l| l.contains("notes.txt")));
    assert!(
        err.to_string()
            .starts_with(&format!("{} problems in manifests ", lines.len()))
    );
}

#[test]
fn a_pipeline_without_environments_is_refused() {
    let yaml = MINIMAL.replace(
        "  environments:\n    - {name: dev, targets: [{namespace: dev}]}\n    - {name: prod, targets: [{namespace: prod}]}\n",
        "  environments: []\n",
    );
    assert_eq!(
        problems(&yaml),
        [
            "pipeline.yaml: Pipeline default/app: spec.environments: expected at least one environment, found an empty list"
        ]
    );
}

#[test]
fn an_unknown_strategy_is_refused_with_the_known_ones_listed() {
    let found = problems(&with_promotion("    strategy:\n      jenkins: {url: x}\n"));
    assert_eq!(
        found,
        [
            "pipeline.yaml: Pipeline default/app: spec.promotion.strategy.jenkins: unknown strategy; expected pull-request, notification, plugin, secretRef or approvalSecretRef"
        ]
    );
    let found = problems(&with_promotion("    pullrequest: {url: x}\n"));
    assert!(
        found[0].contains("spec.promotion.pullrequest: unknown field"),
        "{found:?}"
    );
}

#[test]
fn two_weave_strategies_in_one_promotion_are_refused() {
    let found = problems(&with_promotion(
        "    strategy:\n      notification: {}\n      pull-request: {url: https://x.example/r, type: github}\n",
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("expected exactly one strategy, found"),
        "{found:?}"
    );
}

#[test]
fn a_strategy_field_of_the_wrong_shape_says_what_was_expected() {
    let found = problems(&with_promotion(
        "    manual: yes please\n    strategy:\n      pull-request: {type: svn}\n      secretRef: {}\n",
    ));
    let expect = [
        "spec.promotion.manual: expected true or false, found \"yes please\"",
        "spec.promotion.strategy.pull-request.url: expected a URL, found nothing",
        "spec.promotion.strategy.pull-request.type: expected one of github, gitlab, gitea, forgejo, bitbucket-server, azure-devops, found \"svn\"",
        "spec.promotion.strategy.secretRef: expected a Secret name or {name: <Secret name>}, found an empty mapping",
    ];
    for e in expect {
        assert!(
            found.iter().any(|l| l.ends_with(e)),
            "missing {e:?} in {found:#?}"
        );
    }
}

#[test]
fn a_plugin_needs_a_valid_name() {
    let found = problems(&with_promotion(
        "    strategy:\n      plugin: {name: My_Plugin}\n",
    ));
    assert!(found[0].ends_with("spec.promotion.strategy.plugin.name: expected a plugin name of lowercase letters, digits and '-', found \"My_Plugin\""), "{found:?}");
}

#[test]
fn a_promotion_into_an_environment_must_name_a_strategy() {
    let found = problems(&with_promotion(
        "    strategy:\n      secretRef: {name: hmac}\n",
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("spec.environments[1] (prod): a promotion into this environment is configured but names no strategy"), "{found:?}");
}

#[test]
fn another_version_of_our_group_is_reported_and_other_kinds_are_skipped() {
    let yaml = MINIMAL.replace("v1alpha1", "v1beta1");
    assert_eq!(
        problems(&yaml),
        [
            "pipeline.yaml: Pipeline default/app: apiVersion: expected pipelines.weave.works/v1alpha1, found \"pipelines.weave.works/v1beta1\""
        ]
    );
    let m = Manifests::from_yaml(
        "x.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\nplain: mapping\n",
    )
    .unwrap();
    assert!(m.pipelines.is_empty() && m.secrets.is_empty() && m.config_maps.is_empty());
}

#[test]
fn a_missing_folder_is_an_error_naming_it() {
    let err = Manifests::load_dir(Path::new("/nonexistent/promoter-manifests")).unwrap_err();
    assert!(matches!(err, LoadError::Folder { .. }));
    assert!(
        err.to_string().contains("/nonexistent/promoter-manifests"),
        "{err}"
    );
}

use std::path::Path;

#[test]
fn an_approval_secret_is_read_from_either_dialect_and_an_environment_s_own_wins() {
    let weave = one(
        "weave.yaml",
        &with_promotion(
            "    manual: true\n    strategy:\n      notification: {}\n      secretRef: {name: events}\n      approvalSecretRef: {name: approvals}\n",
        ),
    );
    assert_eq!(weave.approval_secret_for("prod"), Some("approvals"));
    assert_eq!(weave.hmac_secret_for("dev"), Some("events"));
    assert_eq!(
        weave.approval_secret_for("dev"),
        None,
        "nothing goes into dev"
    );

    let own = MINIMAL.replace(
        "    - {name: prod, targets: [{namespace: prod}]}\n",
        "    - {name: prod, targets: [{namespace: prod}], promotion: {manual: true, approvalSecretRef: prod-approvals}}\n",
    );
    let seed = one(
        "seed.yaml",
        &format!(
            "{own}  promotion:\n    webhook: {{url: https://ci.example.com}}\n    approvalSecretRef: {{name: approvals}}\n"
        ),
    );
    assert_eq!(seed.approval_secret_for("prod"), Some("prod-approvals"));
    assert!(seed.promotion_into("prod").unwrap().manual);
}

#[test]
fn an_approval_secret_on_the_first_environment_is_refused_as_approving_nothing() {
    let yaml = MINIMAL.replace(
        "    - {name: dev, targets: [{namespace: dev}]}\n",
        "    - {name: dev, targets: [{namespace: dev}], promotion: {approvalSecretRef: {name: a}}}\n",
    );
    let found = problems(&format!(
        "{yaml}  promotion:\n    webhook: {{url: https://ci.example.com}}\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("spec.environments[0] (dev).promotion.approvalSecretRef: nothing is promoted into dev, the first environment"),
        "{}",
        found[0]
    );
}
