//! Property tests (proptest; cargo-fuzz needs a nightly toolchain this project does not
//! use) of what faces untrusted input: the Flux event parser, the `X-Signature` parser and
//! check, the manifest loader in both Pipeline dialects, and the decision rules. Each
//! property runs `PROPTEST_CASES` cases (256 by default, what CI runs); a longer run:
//!
//!     PROPTEST_CASES=100000 cargo test -p promoter --test properties --release
//!
//! The `$promotion` marker editor has its own properties beside it
//! (plugins/pull-request/src/markers/properties.rs).

use promoter::decide::{Decision, History, VersionIndex, decide};
use promoter::event::parse;
use promoter::pipeline::{Manifests, Pipeline};
use promoter::signature::{Algorithm, parse_header, sign_hex, verify};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A real Flux event as notification-controller posts it (helm-controller, upgrade).
fn flux_event(namespace: &str, name: &str, version: &str) -> Value {
    json!({
        "involvedObject": {
            "kind": "HelmRelease", "namespace": namespace, "name": name,
            "uid": "7d0cdc51-ddcf-4743-b223-83ca5c699632",
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "resourceVersion": "8422"
        },
        "severity": "info",
        "timestamp": "2026-11-30T14:03:51Z",
        "message": format!("Helm upgrade succeeded for release {namespace}/{name}.v4 with chart podinfo@{version}"),
        "reason": "UpgradeSucceeded",
        "metadata": {"revision": version, "token": "ignored"},
        "reportingController": "helm-controller",
        "reportingInstance": "helm-controller-7f4cb8f9d-2qz8x"
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a field of `value` (object keys only).
fn paths(value: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let mut path = prefix.clone();
            path.push(k.clone());
            out.push(path.clone());
            paths(v, path, out);
        }
    }
}

fn at_path<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, k| &mut v[k.as_str()])
}

/// Replaces the field at `path` with `replacement`, or removes it.
fn damage(value: &mut Value, path: &[String], replacement: Option<Value>) {
    match replacement {
        Some(v) => *at_path(value, path) = v,
        None => {
            let (last, parent) = path.split_last().unwrap();
            at_path(value, parent).as_object_mut().unwrap().remove(last);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever bytes arrive, the parser answers (Ok or a typed error) and never panics.
    #[test]
    fn the_event_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    /// A real event with one field replaced by any JSON, or removed: parsed or refused with
    /// an error that names a field; what parses keeps the revision it carried.
    #[test]
    fn the_event_parser_names_what_is_wrong_with_a_damaged_event(
        version in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(any_json()),
    ) {
        let mut event = flux_event("podinfo-dev", "podinfo", &version);
        let mut all = Vec::new();
        paths(&event, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        damage(&mut event, &path, replacement);
        let body = serde_json::to_vec(&event).unwrap();
        match parse(&body) {
            Ok(parsed) => {
                if let Some(revision) = event["metadata"]["revision"].as_str().map(str::trim)
                    && !revision.is_empty()
                {
                    prop_assert_eq!(parsed.revision(), Some(revision));
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.starts_with("event field") || text.starts_with("event body"), "{}", text);
            }
        }
    }

    /// The header parser takes any text without panicking.
    #[test]
    fn the_signature_header_parser_takes_any_text(header in ".{0,200}") {
        let _ = parse_header(&header);
        let _ = verify(Some(&header), b"key", b"body");
    }

    /// A signature made with the key over the body verifies, in every algorithm Flux uses;
    /// one flipped bit of the body, of the signature or of the key, and it does not.
    #[test]
    fn a_signature_verifies_only_for_the_exact_body_and_key(
        key in prop::collection::vec(any::<u8>(), 1..64),
        body in prop::collection::vec(any::<u8>(), 1..512),
        algorithm in prop_oneof![Just(Algorithm::Sha256), Just(Algorithm::Sha384), Just(Algorithm::Sha512)],
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let name = match algorithm { Algorithm::Sha384 => "sha384", Algorithm::Sha512 => "sha512", _ => "sha256" };
        let header = format!("{name}={}", sign_hex(algorithm, &key, &body));
        prop_assert!(verify(Some(&header), &key, &body).is_ok());

        let mut bad_body = body.clone();
        let i = flip.index(bad_body.len());
        bad_body[i] ^= 1 << bit;
        prop_assert!(verify(Some(&header), &key, &bad_body).is_err());

        let mut bad_key = key.clone();
        let i = flip.index(bad_key.len());
        bad_key[i] ^= 1 << bit;
        prop_assert!(verify(Some(&header), &bad_key, &body).is_err());

        let (_, mut digest) = parse_header(&header).unwrap();
        let i = flip.index(digest.len());
        digest[i] ^= 1 << bit;
        let bad_header = format!("{name}={}", hex_encode(&digest));
        prop_assert!(verify(Some(&bad_header), &key, &body).is_err());
        prop_assert!(verify(None, &key, &body).is_err());
    }

    /// Any text as a manifests file: loaded or refused with problems, never a panic.
    #[test]
    fn the_manifest_loader_takes_any_text(text in "(.|\n){0,400}") {
        let _ = Manifests::from_yaml("fuzz.yaml", &text);
    }

    /// Pipelines in both dialects, with one field replaced by any JSON or removed: each is
    /// loaded, or refused with every problem listed (none of them empty).
    #[test]
    fn the_pipeline_loader_lists_problems_of_a_damaged_pipeline(
        weave in any::<bool>(),
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(any_json()),
    ) {
        let mut pipeline = if weave { weave_pipeline() } else { seed_pipeline() };
        let mut all = Vec::new();
        paths(&pipeline["spec"], vec!["spec".into()], &mut all);
        let path = pick.get(&all).clone();
        damage(&mut pipeline, &path, replacement);
        if let Err(problems) = Pipeline::from_value(&pipeline) {
            prop_assert!(!problems.is_empty());
            prop_assert!(problems.iter().all(|p| !p.trim().is_empty()));
        }
        let text = serde_json::to_string(&pipeline).unwrap();
        if let Err(e) = Manifests::from_yaml("fuzz.yaml", &text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Whatever the order and duplication of events from any environment, with any mix of
    /// versions (semver or not, `v`-prefixed or not), at most one promotion is recorded per
    /// (environment, version) — and never into an environment past the last.
    #[test]
    fn at_most_one_promotion_per_environment_and_version(
        events in prop::collection::vec(
            (0usize..3, 0usize..3, prop_oneof![
                "[0-2]\\.[0-2]\\.[0-2]",
                "v[0-2]\\.[0-2]\\.[0-2]",
                "build-[a-c]",
            ]),
            1..60,
        ),
    ) {
        let pipeline = Pipeline::from_value(&seed_pipeline()).unwrap();
        let envs = ["dev", "test", "prod"];
        let namespaces = ["search", "search", "elsewhere"];
        let mut history = VersionIndex::default();
        let mut recorded: HashMap<(String, String), usize> = HashMap::new();
        // The first successful deployment in dev or test always promotes (nothing before it).
        let promotes = events.iter().any(|(env, ns, _)| *env < 2 && *ns < 2);
        for (env, ns, version) in events {
            let body = serde_json::to_vec(&flux_event(namespaces[ns], "search-helmrelease", &version)).unwrap();
            let event = parse(&body).unwrap();
            if let Decision::Promote(intents) = decide(&pipeline, envs[env], &event, &history) {
                for intent in intents {
                    prop_assert!(intent.target_env != "dev", "nothing promotes into the first environment");
                    prop_assert!(!history.has(&intent.target_env, &intent.version));
                    let key = semver_key(&intent.version);
                    *recorded.entry((intent.target_env.clone(), key)).or_default() += 1;
                    history.record(&intent.target_env, &intent.version);
                }
            }
        }
        prop_assert_eq!(promotes, !recorded.is_empty());
        for (key, count) in recorded {
            prop_assert_eq!(count, 1, "{:?} promoted {} times", key, count);
        }
    }
}

fn semver_key(version: &str) -> String {
    version.trim_start_matches('v').to_string()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The seed design's dialect: `spec.promotion.pullRequest {url, branch}`.
fn seed_pipeline() -> Value {
    json!({
        "apiVersion": "pipelines.weave.works/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "search", "namespace": "search"},
        "spec": {
            "appRef": {"kind": "HelmRelease", "name": "search-helmrelease", "apiVersion": "helm.toolkit.fluxcd.io/v2beta1"},
            "promotion": {"pullRequest": {"url": "https://github.com/example-org/fleet-config.git", "branch": "main"}},
            "environments": [
                {"name": "dev", "targets": [{"namespace": "search", "clusterRef": {"kind": "GitopsCluster", "name": "dev"}}]},
                {"name": "test", "targets": [
                    {"namespace": "search", "clusterRef": {"kind": "GitopsCluster", "name": "qa"}},
                    {"namespace": "search", "clusterRef": {"kind": "GitopsCluster", "name": "perf"}}
                ]},
                {"name": "prod", "targets": [{"namespace": "search", "clusterRef": {"kind": "GitopsCluster", "name": "prod"}}]}
            ]
        }
    })
}

/// Weave's released dialect: `spec.promotion.strategy`, per-environment overrides, manual.
fn weave_pipeline() -> Value {
    json!({
        "apiVersion": "pipelines.weave.works/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "billing", "namespace": "flux-system"},
        "spec": {
            "appRef": {"apiVersion": "helm.toolkit.fluxcd.io/v2beta1", "kind": "HelmRelease", "name": "billing"},
            "environments": [
                {"name": "dev", "targets": [{"namespace": "billing-dev"}]},
                {"name": "prod", "targets": [{"namespace": "billing-prod"}],
                 "promotion": {"manual": true, "strategy": {"notification": {}}}}
            ],
            "promotion": {"strategy": {
                "secretRef": {"name": "billing-events"},
                "pull-request": {"type": "github", "url": "https://github.com/example-org/billing-deploy",
                                 "baseBranch": "main", "secretRef": {"name": "billing-creds"}}
            }}
        }
    })
}
