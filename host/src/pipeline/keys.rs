//! Which key may do what. An event key (`secretRef`) reports the deployments of the
//! environment whose leaf cluster holds it; an approval key (`approvalSecretRef`)
//! approves promotions into one environment. If one Secret, or two Secrets holding the
//! same `hmac-key`, did both, the Flux of a lower environment could approve a higher
//! one and no environment would stand between them. So a Pipeline whose approval key
//! equals any event key of its namespace (its own, or another Pipeline's there) is
//! refused at load, naming both Secrets. Keys are compared by value; the values are
//! never written anywhere.
//!
//! Only the Pipeline's own namespace is compared: its author owns every Secret there,
//! while comparing with other tenants' keys would tell an author whether their guess of
//! another namespace's key was right.

use super::{Manifests, Pipeline, Secret};
use std::collections::BTreeMap;

/// One problem per (Pipeline, environment, event Secret) whose approval key is also an
/// event key, each starting `Pipeline ns/name:` so Kubernetes mode leaves that Pipeline
/// out and says why in its `Ready` condition.
pub fn key_problems(manifests: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for pipeline in &manifests.pipelines {
        let ns = &pipeline.namespace;
        let events = event_keys(manifests, pipeline);
        for env in &pipeline.environments {
            let Some(approval) = pipeline.approval_secret_for(&env.name) else {
                continue;
            };
            let approval_key = manifests.secret(ns, approval).and_then(Secret::hmac_key);
            for (event, used_by) in &events {
                let same_key = || {
                    let event_key = manifests.secret(ns, event).and_then(Secret::hmac_key);
                    matches!((approval_key, event_key), (Some(a), Some(e)) if a == e)
                };
                let how = if *event == approval {
                    "is the same Secret as".to_string()
                } else if same_key() {
                    format!("holds the same hmac-key as Secret {ns}/{event},")
                } else {
                    continue;
                };
                problems.push(format!(
                    "Pipeline {pipeline}: Secret {ns}/{approval}, the approval key of promotions \
                     into {} (approvalSecretRef), {how} the event key for {} (secretRef); an \
                     event key must never approve: give approvals a Secret of their own with a \
                     different hmac-key",
                    env.name,
                    used_by.join(", ")
                ));
            }
        }
    }
    problems
}

/// Every event Secret of `pipeline`'s namespace, with who signs with it ("events from
/// dev", "events from test of Pipeline ns/other").
fn event_keys<'a>(manifests: &'a Manifests, pipeline: &Pipeline) -> BTreeMap<&'a str, Vec<String>> {
    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let same_namespace = manifests
        .pipelines
        .iter()
        .filter(|p| p.namespace == pipeline.namespace);
    for other in same_namespace {
        for env in &other.environments {
            let Some(secret) = env.hmac_secret.as_deref() else {
                continue;
            };
            let whose = if other.name == pipeline.name {
                format!("events from {}", env.name)
            } else {
                format!("events from {} of Pipeline {other}", env.name)
            };
            keys.entry(secret).or_default().push(whose);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dev → test → prod (manual); `events` per environment, `approvals` on prod.
    fn manifests(events: [&str; 3], approvals: &str, keys: &[(&str, &str)]) -> Manifests {
        let mut yaml = format!(
            r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {{name: podinfo, namespace: apps}}
spec:
  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: podinfo}}
  environments:
    - name: dev
      targets: [{{namespace: dev}}]
      promotion: {{secretRef: {}}}
    - name: test
      targets: [{{namespace: test}}]
      promotion: {{secretRef: {}}}
    - name: prod
      targets: [{{namespace: prod}}]
      promotion: {{manual: true, secretRef: {}, approvalSecretRef: {{name: {approvals}}}}}
  promotion:
    webhook: {{url: "https://ci.example.com/hook"}}
"#,
            events[0], events[1], events[2]
        );
        for (name, key) in keys {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: apps}}\nstringData: {{hmac-key: {key}}}\n"
            ));
        }
        Manifests::from_yaml("test.yaml", &yaml).unwrap()
    }

    #[test]
    fn separate_keys_for_events_and_approvals_are_fine() {
        let keys = [("dev", "k1"), ("test", "k2"), ("prod", "k3"), ("ok", "k4")];
        let m = manifests(["dev", "test", "prod"], "ok", &keys);
        assert_eq!(key_problems(&m), Vec::<String>::new());
    }

    #[test]
    fn an_approval_secret_that_is_an_event_secret_is_refused_naming_both_uses() {
        let keys = [("dev", "k1"), ("test", "k2")];
        let m = manifests(["dev", "test", "dev"], "dev", &keys);
        let problems = key_problems(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("Pipeline apps/podinfo: Secret apps/dev, the approval key of promotions into prod (approvalSecretRef), is the same Secret as the event key for events from dev, events from prod (secretRef)"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn an_approval_secret_holding_an_event_key_is_refused_naming_both_secrets_and_no_key() {
        let keys = [
            ("dev", "k1"),
            ("test", "s3cr3t-shared"),
            ("prod", "k3"),
            ("ok", "s3cr3t-shared"),
        ];
        let m = manifests(["dev", "test", "prod"], "ok", &keys);
        let problems = key_problems(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("Secret apps/ok, the approval key"));
        assert!(problems[0].contains("holds the same hmac-key as Secret apps/test,"));
        assert!(!problems[0].contains("s3cr3t"), "{}", problems[0]);
    }
}
