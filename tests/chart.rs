//! The Helm chart (`charts/promoter`), rendered the way `helm template` renders it, and the
//! Kubernetes examples (`examples/kubernetes`), read by the real pipeline loader and plugin
//! registry.
//!
//! Rendering uses chart-render (`shared/tools/chart-render/chart-render`, found beside the
//! repository or in a folder above it, or named by `PROMOTER_CHART_RENDER`). Where it
//! cannot be found these tests fail; they never pass without having rendered anything.

use base64::Engine as _;
use promoter::pipeline::{Manifests, PLUGIN_LABEL};
use promoter::plugins::{GrantSpec, NAME_ANNOTATION, Registry, WASM_KEY};
use promoter::runtime::{Runtime, RuntimeConfig};
use serde::Deserialize as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const RELEASE: &str = "promoter";
const NAMESPACE: &str = "promoter-system";

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ lies in the repository")
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo().join("charts/promoter")
}

fn all_values() -> PathBuf {
    chart_dir().join("ci/all-values.yaml")
}

fn examples() -> PathBuf {
    repo().join("examples/kubernetes")
}

/// chart-render: `PROMOTER_CHART_RENDER`, else `shared/tools/chart-render/chart-render` in
/// the repository's folder or any folder above it (CI clones the repository beside
/// `shared/`).
fn chart_render() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMOTER_CHART_RENDER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PROMOTER_CHART_RENDER names {}, which is not a file",
            path.display()
        );
        return path;
    }
    let relative = Path::new("shared/tools/chart-render/chart-render");
    repo()
        .ancestors()
        .map(|dir| dir.join(relative))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chart-render not found: looked for {} in {} and every folder above it. \
                 The chart tests need it to render the chart as `helm template` does; set \
                 PROMOTER_CHART_RENDER to its path",
                relative.display(),
                repo().display()
            )
        })
}

/// Runs chart-render on `chart` and returns its output, or its error text.
fn render_dir(chart: &Path, values: &[&Path], sets: &[&str]) -> Result<String, String> {
    // The first run may install Go and build the renderer: let one test do it while the
    // others wait, so they do not race on apt or on the build.
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        let out = Command::new(chart_render())
            .arg(chart_dir())
            .output()
            .expect("cannot run chart-render");
        assert!(
            out.status.success(),
            "chart-render cannot render the default chart:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let mut cmd = Command::new(chart_render());
    cmd.arg(chart)
        .args(["--name", RELEASE, "--namespace", NAMESPACE]);
    for file in values {
        cmd.arg("-f").arg(file);
    }
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("cannot run chart-render");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("rendered manifests are UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The chart's manifests for these values, each document as JSON.
fn render(values: &[&Path], sets: &[&str]) -> Result<Vec<Value>, String> {
    let text = render_dir(&chart_dir(), values, sets)?;
    Ok(parse_documents(&text))
}

fn render_ok(values: &[&Path], sets: &[&str]) -> Vec<Value> {
    render(values, sets).unwrap_or_else(|e| panic!("the chart does not render: {e}"))
}

fn render_err(values: &[&Path], sets: &[&str]) -> String {
    match render(values, sets) {
        Ok(_) => panic!("the chart rendered, but these values should have been refused"),
        Err(e) => e,
    }
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The renders every property must hold for: defaults, and every option switched on.
fn renders() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("default values", render_ok(&[], &[])),
        ("ci/all-values.yaml", render_ok(&[&all_values()], &[])),
    ]
}

// ---------------------------------------------------------------------------------------
// Reading manifests
// ---------------------------------------------------------------------------------------

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace_of(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_of(d) == kind && name_of(d) == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = docs
                .iter()
                .map(|d| format!("{} {}", kind_of(d), name_of(d)))
                .collect();
            panic!("no {kind} {name}; rendered: {}", have.join(", "))
        })
}

fn deployment(docs: &[Value]) -> &Value {
    one(docs, "Deployment", RELEASE)
}

fn container(docs: &[Value]) -> &Value {
    let containers = deployment(docs)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the Deployment has containers");
    containers
        .iter()
        .find(|c| c["name"] == "promoter")
        .expect("a container named promoter")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a list of strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn args(docs: &[Value]) -> Vec<String> {
    strings(&container(docs)["args"])
}

/// The value of `--flag=value` in the container's arguments (the last one wins, as in
/// `promoter serve`).
fn flag(docs: &[Value], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args(docs)
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

/// The port of a `--…-addr=0.0.0.0:PORT` flag.
fn listen_port(docs: &[Value], name: &str) -> u64 {
    let addr = flag(docs, name).unwrap_or_else(|| panic!("the container has no {name}"));
    let (_, port) = addr.rsplit_once(':').expect("an address with a port");
    port.parse().expect("a numeric port")
}

/// The container port a Service's or probe's `targetPort`/`port` names (by name or number).
fn container_port(docs: &[Value], target: &Value) -> u64 {
    let ports = container(docs)["ports"]
        .as_array()
        .expect("container ports");
    let found = match target {
        Value::String(name) => ports.iter().find(|p| p["name"] == name.as_str()),
        Value::Number(_) => ports.iter().find(|p| p["containerPort"] == *target),
        other => panic!("a port is a name or a number, found {other}"),
    };
    found.unwrap_or_else(|| panic!("no container port {target}"))["containerPort"]
        .as_u64()
        .unwrap()
}

fn service_account(docs: &[Value]) -> String {
    deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pod_labels(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["metadata"]["labels"]
}

/// True when every label of `selector` is on the pods.
fn selects_pods(docs: &[Value], selector: &Value) -> bool {
    let labels = pod_labels(docs);
    let selector = selector.as_object().expect("matchLabels is a mapping");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels[k] == *v)
}

/// One RBAC rule, normalised: (apiGroup, resource, verbs, resourceNames).
type Rule = (String, String, BTreeSet<String>, BTreeSet<String>);

fn rules(role: &Value) -> Vec<Rule> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("a role has rules") {
        let verbs: BTreeSet<String> = strings(&rule["verbs"]).into_iter().collect();
        let names: BTreeSet<String> = strings(&rule["resourceNames"]).into_iter().collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.push((group.clone(), resource, verbs.clone(), names.clone()));
            }
        }
    }
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> Rule {
    (
        group.into(),
        resource.into(),
        verbs.iter().map(|v| v.to_string()).collect(),
        BTreeSet::new(),
    )
}

fn grants_secrets(role: &Value) -> bool {
    rules(role).iter().any(|(group, resource, _, _)| {
        group.is_empty() && (resource == "secrets" || resource == "*")
    })
}

/// The binding that binds `role` (kind, name) in `namespace` ("" for cluster bindings) to
/// the controller's ServiceAccount.
fn assert_bound(docs: &[Value], binding_kind: &str, role_kind: &str, role: &str, namespace: &str) {
    let sa = service_account(docs);
    let bound = all(docs, binding_kind).into_iter().any(|b| {
        namespace_of(b) == namespace
            && b["roleRef"]["kind"] == role_kind
            && b["roleRef"]["name"] == role
            && b["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == sa.as_str()
                        && s["namespace"] == NAMESPACE
                })
            })
    });
    assert!(
        bound,
        "{role_kind} {role} is not bound to ServiceAccount {NAMESPACE}/{sa} by a {binding_kind} in {namespace:?}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promoter-chart-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_values(name: &str, values: &Value) -> PathBuf {
    let path = scratch(name).join("values.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(values).unwrap()).unwrap();
    path
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------
// Pod security
// ---------------------------------------------------------------------------------------

#[test]
fn every_container_runs_with_the_restricted_security_context() {
    for (label, docs) in renders() {
        let workloads: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                matches!(
                    kind_of(d),
                    "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" | "Pod"
                )
            })
            .collect();
        assert_eq!(workloads.len(), 1, "{label}: one workload, the Deployment");
        let pod = &deployment(&docs)["spec"]["template"]["spec"];
        let pod_sc = &pod["securityContext"];
        assert_eq!(pod_sc["runAsNonRoot"], true, "{label}: pod runAsNonRoot");
        assert_eq!(
            pod_sc["seccompProfile"]["type"], "RuntimeDefault",
            "{label}"
        );
        assert_eq!(
            pod["automountServiceAccountToken"], true,
            "{label}: the controller needs its token for the API server"
        );
        assert!(
            pod["hostNetwork"].is_null() && pod["hostPID"].is_null(),
            "{label}"
        );

        let mut containers = pod["containers"].as_array().unwrap().clone();
        containers.extend(
            pod["initContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        assert!(!containers.is_empty());
        for c in &containers {
            let name = c["name"].as_str().unwrap();
            let sc = &c["securityContext"];
            let at = format!("{label}: container {name}");
            assert_eq!(sc["runAsNonRoot"], true, "{at}: runAsNonRoot");
            for id in ["runAsUser", "runAsGroup"] {
                let n = sc[id]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{at}: {id} is not a number"));
                assert!(n > 0, "{at}: {id} must not be root");
            }
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
            assert_ne!(sc["privileged"], true, "{at}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{at}");
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{at}: adds capabilities"
            );
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{at}: a memory limit"
            );
        }
    }
}

#[test]
fn the_writable_paths_are_volumes_because_the_root_filesystem_is_read_only() {
    for (label, docs) in renders() {
        let pod = &deployment(&docs)["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().unwrap();
        let mounts = container(&docs)["volumeMounts"].as_array().unwrap();
        let data_dir = flag(&docs, "--data-dir").expect("--data-dir");
        for path in ["/tmp", data_dir.as_str()] {
            let mount = mounts
                .iter()
                .find(|m| m["mountPath"] == path)
                .unwrap_or_else(|| panic!("{label}: nothing mounted at {path}"));
            assert_ne!(mount["readOnly"], true, "{label}: {path} must be writable");
            let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
            assert!(
                volume["emptyDir"].is_object() || volume["persistentVolumeClaim"].is_object(),
                "{label}: {path} is an emptyDir or a claim, found {volume}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------

#[test]
fn no_cluster_role_reads_secrets_unless_the_operator_opts_in() {
    for (label, docs) in renders() {
        for role in all(&docs, "ClusterRole") {
            assert!(
                !grants_secrets(role),
                "{label}: ClusterRole {} grants Secrets without rbac.secrets.clusterWide",
                name_of(role)
            );
        }
    }

    let docs = render_ok(&[], &["rbac.secrets.clusterWide=true"]);
    let readers: Vec<&Value> = all(&docs, "ClusterRole")
        .into_iter()
        .filter(|r| grants_secrets(r))
        .collect();
    assert_eq!(
        readers.len(),
        1,
        "one ClusterRole reads Secrets once opted in"
    );
    let reader = readers[0];
    assert_eq!(rules(reader), vec![rule("", "secrets", &["get"])]);
    assert_bound(
        &docs,
        "ClusterRoleBinding",
        "ClusterRole",
        name_of(reader),
        "",
    );
}

#[test]
fn secrets_are_readable_only_by_name_in_the_namespaces_listed() {
    let docs = render_ok(&[&all_values()], &[]);
    let values = read_yaml(&all_values());
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in values["rbac"]["secrets"]["namespaces"].as_array().unwrap() {
        expected.insert(
            entry["namespace"].as_str().unwrap().into(),
            strings(&entry["resourceNames"]).into_iter().collect(),
        );
    }
    // The Secrets the plugins' grants name, in the release namespace.
    let mut plugin_secrets = BTreeSet::new();
    for plugin in values["plugins"]["inline"]
        .as_array()
        .unwrap()
        .iter()
        .chain(values["plugins"]["oci"].as_array().unwrap())
    {
        if let Some(name) = plugin["pullSecret"].as_str() {
            plugin_secrets.insert(name.to_string());
        }
        for list in ["credentials", "keys"] {
            for item in plugin["grant"][list]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                plugin_secrets.insert(item["secretRef"]["name"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(!plugin_secrets.is_empty());

    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut found_plugin = None;
    for role in all(&docs, "Role").into_iter().filter(|r| grants_secrets(r)) {
        let rules = rules(role);
        assert_eq!(rules.len(), 1, "Role {}: one rule", name_of(role));
        let (_, resource, verbs, names) = &rules[0];
        assert_eq!(resource, "secrets");
        assert_eq!(
            verbs,
            &BTreeSet::from(["get".to_string()]),
            "Role {}/{}: Secrets are read by name only (get)",
            namespace_of(role),
            name_of(role)
        );
        assert_bound(
            &docs,
            "RoleBinding",
            "Role",
            name_of(role),
            namespace_of(role),
        );
        if name_of(role).ends_with("-plugin-secrets") {
            assert_eq!(namespace_of(role), NAMESPACE);
            found_plugin = Some(names.clone());
        } else {
            found.insert(namespace_of(role).into(), names.clone());
        }
    }
    assert_eq!(
        found, expected,
        "a Role per listed namespace, with its resourceNames"
    );
    assert_eq!(
        found_plugin.expect("a Role for the plugins' Secrets"),
        plugin_secrets,
        "exactly the Secrets the plugin grants name"
    );

    let defaults = render_ok(&[], &[]);
    assert!(
        !all(&defaults, "Role").into_iter().any(grants_secrets),
        "by default no Secret is readable anywhere"
    );
}

#[test]
fn rbac_grants_the_least_privilege_the_controller_needs() {
    let docs = render_ok(&[], &[]);
    let cluster = one(&docs, "ClusterRole", RELEASE);
    let got: BTreeSet<Rule> = rules(cluster).into_iter().collect();
    let want: BTreeSet<Rule> = [
        // What Kubernetes mode calls (tests/kubernetes/api.rs serves exactly these).
        rule(
            "pipelines.weave.works",
            "pipelines",
            &["list", "watch", "patch"],
        ),
        rule("pipelines.weave.works", "pipelines/status", &["patch"]),
        rule(
            "promoter.dev",
            "promotions",
            &["list", "watch", "get", "create", "delete"],
        ),
        rule("promoter.dev", "promotions/status", &["update"]),
        rule("events.k8s.io", "events", &["create", "patch"]),
        rule("", "namespaces", &["list"]),
        // The admin API's callers, checked as kube-rbac-proxy checks them.
        rule("authentication.k8s.io", "tokenreviews", &["create"]),
        rule("authorization.k8s.io", "subjectaccessreviews", &["create"]),
        // Its own CRDs, by name: are they the revision the controller needs?
        (
            "apiextensions.k8s.io".into(),
            "customresourcedefinitions".into(),
            ["get".to_string()].into(),
            [
                "pipelines.pipelines.weave.works".to_string(),
                "promotions.promoter.dev".to_string(),
            ]
            .into(),
        ),
    ]
    .into();
    assert_eq!(got, want, "ClusterRole {RELEASE}");
    assert_bound(&docs, "ClusterRoleBinding", "ClusterRole", RELEASE, "");

    let local = one(&docs, "Role", RELEASE);
    assert_eq!(namespace_of(local), NAMESPACE);
    let got: BTreeSet<Rule> = rules(local).into_iter().collect();
    let want: BTreeSet<Rule> = [
        rule("", "configmaps", &["list", "watch"]),
        rule(
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
        ),
    ]
    .into();
    assert_eq!(got, want, "Role {NAMESPACE}/{RELEASE}");
    assert_bound(&docs, "RoleBinding", "Role", RELEASE, NAMESPACE);

    for (label, docs) in renders() {
        for role in all(&docs, "Role")
            .into_iter()
            .chain(all(&docs, "ClusterRole"))
        {
            for (group, resource, verbs, _) in rules(role) {
                assert!(
                    group != "*" && resource != "*" && !verbs.contains("*"),
                    "{label}: {} {} has a wildcard",
                    kind_of(role),
                    name_of(role)
                );
                assert!(
                    !verbs.contains("escalate")
                        && !verbs.contains("bind")
                        && !verbs.contains("impersonate"),
                    "{label}: {} {} can widen its own rights",
                    kind_of(role),
                    name_of(role)
                );
            }
        }
        let sa = all(&docs, "ServiceAccount");
        assert_eq!(sa.len(), 1, "{label}");
        assert_eq!(
            sa[0]["automountServiceAccountToken"], false,
            "{label}: only the controller's pods mount the token"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Ports, probes, arguments
// ---------------------------------------------------------------------------------------

#[test]
fn the_webhook_service_targets_the_port_the_webhook_listens_on() {
    for (label, docs) in renders() {
        let webhook_port = listen_port(&docs, "--webhook-addr");
        let admin_port = listen_port(&docs, "--admin-addr");
        assert_ne!(webhook_port, admin_port);

        let webhook = one(&docs, "Service", &format!("{RELEASE}-webhook"));
        assert!(selects_pods(&docs, &webhook["spec"]["selector"]), "{label}");
        let ports = webhook["spec"]["ports"].as_array().unwrap();
        assert_eq!(
            ports.len(),
            1,
            "{label}: the webhook Service exposes one port"
        );
        assert_eq!(
            container_port(&docs, &ports[0]["targetPort"]),
            webhook_port,
            "{label}: the webhook Service reaches --webhook-addr"
        );

        let metrics = one(&docs, "Service", &format!("{RELEASE}-metrics"));
        assert!(selects_pods(&docs, &metrics["spec"]["selector"]), "{label}");
        let mports = metrics["spec"]["ports"].as_array().unwrap();
        assert_eq!(
            container_port(&docs, &mports[0]["targetPort"]),
            admin_port,
            "{label}: the metrics Service reaches --admin-addr"
        );

        for ingress in all(&docs, "Ingress") {
            for host_rule in ingress["spec"]["rules"].as_array().unwrap() {
                let mut paths = Vec::new();
                for path in host_rule["http"]["paths"].as_array().unwrap() {
                    let backend = &path["backend"]["service"];
                    assert_eq!(
                        backend["name"],
                        name_of(webhook),
                        "{label}: Ingress backend"
                    );
                    let port = &backend["port"];
                    let matches =
                        ports[0]["name"] == port["name"] || ports[0]["port"] == port["number"];
                    assert!(
                        matches,
                        "{label}: the Ingress names the webhook Service's port"
                    );
                    paths.push(path["path"].as_str().unwrap().to_string());
                }
                paths.sort();
                assert_eq!(
                    paths,
                    ["/approval", "/promotion"],
                    "{label}: only the public paths are routed"
                );
            }
        }
        for monitor in all(&docs, "ServiceMonitor") {
            let endpoint = &monitor["spec"]["endpoints"][0];
            assert_eq!(endpoint["port"], mports[0]["name"], "{label}");
            assert_eq!(endpoint["path"], "/metrics", "{label}");
            let selector = monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap();
            for (service, wanted) in [(metrics, true), (webhook, false)] {
                let labels = &service["metadata"]["labels"];
                let selected = selector.iter().all(|(k, v)| labels[k] == *v);
                assert_eq!(
                    selected,
                    wanted,
                    "{label}: ServiceMonitor selects {}",
                    name_of(service)
                );
            }
        }
    }
}

#[test]
fn the_deployment_never_accepts_unsigned_events() {
    let opted_in = render_ok(&[], &["rbac.secrets.clusterWide=true"]);
    for (label, docs) in renders().into_iter().chain([("clusterWide", opted_in)]) {
        for arg in args(&docs) {
            assert!(
                !arg.starts_with("--allow-unsigned"),
                "{label}: the Deployment passes {arg}"
            );
        }
        for env in container(&docs)["env"].as_array().unwrap() {
            let name = env["name"].as_str().unwrap();
            assert!(
                !name.starts_with("PROMOTER_ALLOW_UNSIGNED"),
                "{label}: the Deployment sets {name}"
            );
        }
    }
}

#[test]
fn the_controller_runs_in_kubernetes_mode_with_its_namespace_from_the_downward_api() {
    for (label, docs) in renders() {
        let args = args(&docs);
        assert_eq!(args.first().map(String::as_str), Some("serve"), "{label}");
        assert!(
            !args.iter().any(|a| a.starts_with("--manifests")),
            "{label}: Kubernetes mode has no --manifests"
        );
        assert_eq!(
            flag(&docs, "--namespace").as_deref(),
            Some("$(POD_NAMESPACE)")
        );
        let env = container(&docs)["env"].as_array().unwrap();
        let pod_namespace = env.iter().find(|e| e["name"] == "POD_NAMESPACE").unwrap();
        assert_eq!(
            pod_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace",
            "{label}"
        );
        assert_eq!(
            flag(&docs, "--events-addr").as_deref(),
            Some("http://notification-controller.flux-system.svc.cluster.local./"),
            "{label}: the notification strategy posts to Flux's notification-controller"
        );
    }
    let default = flag(&render_ok(&[], &[]), "--events-addr").unwrap();
    promoter::plugins::parse_events_addr(&default)
        .unwrap_or_else(|e| panic!("promoter serve refuses the chart's --events-addr: {e}"));
    let docs = render_ok(&[], &["config.eventsAddress="]);
    assert_eq!(
        flag(&docs, "--events-addr"),
        None,
        "an empty eventsAddress drops the flag"
    );
}

/// The paths `admin::router` serves, read from its source.
fn admin_routes() -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo().join("host/src/admin.rs")).unwrap();
    let routes: BTreeSet<String> = source
        .split(".route(\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    assert!(routes.contains("/metrics"), "admin.rs routes: {routes:?}");
    routes
}

#[test]
fn probes_hit_paths_the_admin_router_serves_on_the_admin_port() {
    let routes = admin_routes();
    for (label, docs) in renders() {
        let c = container(&docs);
        let admin_port = listen_port(&docs, "--admin-addr");
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &c[probe]["httpGet"];
            let got = get["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{label}: no {probe}"));
            assert_eq!(got, path, "{label}: {probe}");
            assert!(
                routes.contains(got),
                "{label}: {probe} asks for {got}; admin serves {routes:?}"
            );
            assert_eq!(
                container_port(&docs, &get["port"]),
                admin_port,
                "{label}: {probe} goes to the admin listener"
            );
        }
    }
}

#[test]
fn replicas_share_the_records_in_the_api_server_and_a_budget_keeps_one_serving() {
    for (label, docs) in renders() {
        let deploy = deployment(&docs);
        let replicas = deploy["spec"]["replicas"].as_u64().unwrap();
        assert!(
            replicas >= 2,
            "{label}: several replicas by default and all on"
        );
        assert_eq!(
            deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{label}: a new pod serves before an old one stops"
        );
        // The records are Promotion resources: the data directory is only a cache.
        assert!(all(&docs, "PersistentVolumeClaim").is_empty(), "{label}");
        let volumes = deploy["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        let data = volumes.iter().find(|v| v["name"] == "data").unwrap();
        assert!(data["emptyDir"]["sizeLimit"].is_string(), "{label}: {data}");
        let pdb = &all(&docs, "PodDisruptionBudget");
        assert_eq!(pdb.len(), 1, "{label}");
        assert_eq!(namespace_of(pdb[0]), NAMESPACE);
    }
    let all_on = render_ok(&[&all_values()], &[]);
    assert_eq!(
        all(&all_on, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"],
        1
    );
    // One replica: no budget (it would block every drain).
    let single = render_ok(&[], &["replicaCount=1"]);
    assert!(all(&single, "PodDisruptionBudget").is_empty());
}

#[test]
fn the_image_defaults_to_the_charts_app_version_and_a_digest_pins_it() {
    let chart = read_yaml(&chart_dir().join("Chart.yaml"));
    let app_version = chart["appVersion"].as_str().unwrap();
    let docs = render_ok(&[], &[]);
    let image = container(&docs)["image"].as_str().unwrap();
    assert!(image.ends_with(&format!(":{app_version}")), "{image}");
    let docs = render_ok(&[&all_values()], &[]);
    let image = container(&docs)["image"].as_str().unwrap();
    assert!(image.contains("@sha256:"), "{image}");
    let pull = &deployment(&docs)["spec"]["template"]["spec"]["imagePullSecrets"];
    assert_eq!(pull, &json!([{"name": "regcred"}]));
}

#[test]
fn webhook_tls_mounts_the_secret_and_points_the_flags_at_it() {
    let docs = render_ok(&[&all_values()], &[]);
    let cert = flag(&docs, "--tls-cert").expect("--tls-cert");
    let key = flag(&docs, "--tls-key").expect("--tls-key");
    let mounts = container(&docs)["volumeMounts"].as_array().unwrap();
    let tls = mounts
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("a tls mount");
    let dir = tls["mountPath"].as_str().unwrap();
    assert_eq!(tls["readOnly"], true);
    assert_eq!(cert, format!("{dir}/tls.crt"));
    assert_eq!(key, format!("{dir}/tls.key"));
    let volumes = deployment(&docs)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let volume = volumes.iter().find(|v| v["name"] == "tls").unwrap();
    assert_eq!(volume["secret"]["secretName"], "promoter-webhook-tls");

    let plain = render_ok(&[], &[]);
    assert_eq!(flag(&plain, "--tls-cert"), None);
}

// ---------------------------------------------------------------------------------------
// Network policy
// ---------------------------------------------------------------------------------------

#[test]
fn the_network_policy_admits_only_the_two_listeners_and_reaches_out_only_where_listed() {
    assert!(
        all(&render_ok(&[], &[]), "NetworkPolicy").is_empty(),
        "off by default"
    );

    let docs = render_ok(&[&all_values()], &[]);
    let values = read_yaml(&all_values());
    let policy = one(&docs, "NetworkPolicy", RELEASE);
    assert!(selects_pods(
        &docs,
        &policy["spec"]["podSelector"]["matchLabels"]
    ));
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));

    let mut ingress_ports = BTreeSet::new();
    for rule in policy["spec"]["ingress"].as_array().unwrap() {
        let ports = rule["ports"]
            .as_array()
            .expect("every ingress rule names its ports");
        for port in ports {
            ingress_ports.insert(port["port"].as_u64().unwrap());
        }
        assert!(
            rule["from"].is_array(),
            "the full values restrict who may connect"
        );
    }
    assert_eq!(
        ingress_ports,
        BTreeSet::from([
            listen_port(&docs, "--webhook-addr"),
            listen_port(&docs, "--admin-addr")
        ])
    );

    let egress = policy["spec"]["egress"].as_array().unwrap();
    let dns = egress
        .iter()
        .find(|r| {
            r["ports"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["port"] == 53))
        })
        .expect("DNS");
    assert!(dns["to"].is_array(), "DNS only to the cluster's resolver");
    let mut cidrs = BTreeSet::new();
    for rule in egress {
        assert!(
            rule["to"].as_array().is_some_and(|to| !to.is_empty()),
            "every egress rule names where it goes: {rule}"
        );
        for peer in rule["to"].as_array().unwrap() {
            if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                cidrs.insert(cidr.to_string());
            }
        }
    }
    let mut listed: BTreeSet<String> =
        strings(&values["networkPolicy"]["egress"]["apiServer"]["cidrs"])
            .into_iter()
            .collect();
    for entry in values["networkPolicy"]["egress"]["cidrs"]
        .as_array()
        .unwrap()
    {
        listed.insert(entry["cidr"].as_str().unwrap().into());
    }
    assert_eq!(
        cidrs, listed,
        "egress goes to the listed CIDRs and nowhere else by address"
    );
    let api = egress
        .iter()
        .find(|r| {
            r["ports"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["port"] == 6443))
        })
        .expect("the API server");
    assert_eq!(api["to"].as_array().unwrap().len(), 2);
}

/// The peers admitted to the webhook port by the NetworkPolicy of `docs`.
fn webhook_peers(docs: &[Value]) -> Vec<Value> {
    let policy = one(docs, "NetworkPolicy", RELEASE);
    let port = listen_port(docs, "--webhook-addr");
    let rule = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == port)
        .expect("a rule for the webhook port");
    rule["from"].as_array().cloned().unwrap_or_default()
}

#[test]
fn restricting_the_webhook_still_admits_the_clusters_own_notification_controller() {
    let notification_controller = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flux-system"}},
        "podSelector": {"matchLabels": {"app": "notification-controller"}},
    });
    let peers = webhook_peers(&render_ok(&[&all_values()], &[]));
    assert!(
        peers.contains(&notification_controller),
        "the in-cluster address NOTES print must stay reachable from Flux: {peers:#?}"
    );
    assert!(peers.iter().any(
        |p| p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "ingress-nginx"
    ));

    let off = render_ok(
        &[&all_values()],
        &["networkPolicy.ingress.fromNotificationController=false"],
    );
    assert!(!webhook_peers(&off).contains(&notification_controller));

    // Without webhookFrom anyone may connect: no `from` at all, nothing to add to.
    let values = write_values(
        "policy-open-webhook",
        &json!({"networkPolicy": {"enabled": true, "egress": {"apiServer": {"cidrs": ["10.0.0.1/32"]}}}}),
    );
    let open = render_ok(&[&values], &[]);
    assert!(webhook_peers(&open).is_empty());
}

#[test]
fn the_chart_listens_where_the_image_and_the_cli_expect() {
    let docs = render_ok(&[], &[]);
    assert_eq!(
        listen_port(&docs, "--webhook-addr"),
        8082,
        "Weave's webhook port"
    );
    assert_eq!(
        listen_port(&docs, "--admin-addr"),
        8080,
        "the CLI's default --admin (http://127.0.0.1:8080) inside a pod"
    );
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("EXPOSE 8082 8080"), "{dockerfile}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .args(["promotions", "list", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("http://127.0.0.1:8080"), "{help}");
}

#[test]
fn extra_args_repeating_a_chart_flag_override_it_instead_of_crash_looping() {
    let values = write_values("extra-args", &json!({"extraArgs": ["--workers=9"]}));
    let args = args(&render_ok(&[&values], &[]));
    let workers: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--workers="))
        .collect();
    assert_eq!(workers.len(), 2, "the chart sets --workers too: {args:?}");
    assert_eq!(args.last().unwrap(), "--workers=9", "extraArgs come last");
    // The pod's command line, as the kubelet runs it (the downward-API variable expanded):
    // clap must accept `--workers` twice. Without an API server the controller stops at
    // start, after parsing, saying so.
    let line: Vec<String> = args
        .iter()
        .map(|a| a.replace("$(POD_NAMESPACE)", "promoter-system"))
        .collect();
    let dir = scratch("extra-args");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .args(&line)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(2),
        "clap refused the arguments: {stderr}"
    );
    assert!(
        !stderr.contains("cannot be used multiple times"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Kubernetes"),
        "stops at the missing API server: {stderr}"
    );
}

#[test]
fn the_drain_fits_in_the_grace_period_or_the_render_fails() {
    let docs = render_ok(&[], &[]);
    assert_eq!(flag(&docs, "--drain-timeout").as_deref(), Some("20s"));
    let grace = deployment(&docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > 20, "grace {grace}");
    let err = render_err(&[], &["config.drainTimeoutSeconds=30"]);
    assert!(
        err.contains("config.drainTimeoutSeconds must be below terminationGracePeriodSeconds"),
        "{err}"
    );
}

#[test]
fn a_network_policy_without_the_api_servers_addresses_is_refused() {
    let err = render_err(&[], &["networkPolicy.enabled=true"]);
    assert!(
        err.contains("networkPolicy.egress.apiServer.cidrs"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Plugins
// ---------------------------------------------------------------------------------------

fn plugin_config_maps(docs: &[Value]) -> Vec<&Value> {
    all(docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"][PLUGIN_LABEL] == "true")
        .collect()
}

fn plugin_name(cm: &Value) -> &str {
    cm["metadata"]["annotations"][NAME_ANNOTATION]
        .as_str()
        .unwrap_or_else(|| name_of(cm))
}

#[test]
fn every_plugin_config_map_carries_the_label_and_pins_its_component() {
    let docs = render_ok(&[&all_values()], &[]);
    let values = read_yaml(&all_values());
    let cms = plugin_config_maps(&docs);
    let declared = values["plugins"]["inline"].as_array().unwrap().len()
        + values["plugins"]["oci"].as_array().unwrap().len();
    assert_eq!(
        cms.len(),
        declared,
        "a labelled ConfigMap per declared plugin"
    );
    let others: Vec<&str> = all(&docs, "ConfigMap")
        .into_iter()
        .filter(|cm| !cms.contains(cm))
        .map(name_of)
        .collect();
    assert_eq!(
        others,
        [format!("{RELEASE}-dashboard")],
        "every ConfigMap the chart renders but the dashboard is a labelled plugin"
    );
    let names: BTreeSet<&str> = cms.iter().map(|cm| plugin_name(cm)).collect();
    let declared_names: BTreeSet<&str> = ["inline", "oci"]
        .iter()
        .flat_map(|form| values["plugins"][form].as_array().unwrap())
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names, declared_names,
        "Pipelines find each plugin by its declared name"
    );
    let engine = base64::engine::general_purpose::STANDARD;
    for cm in cms {
        let at = format!("ConfigMap {}", name_of(cm));
        assert_eq!(
            namespace_of(cm),
            NAMESPACE,
            "{at}: plugins live in the release namespace"
        );
        let data = &cm["data"];
        let item = ["inline", "oci"]
            .iter()
            .flat_map(|form| values["plugins"][form].as_array().unwrap())
            .find(|p| p["name"] == plugin_name(cm))
            .unwrap();
        assert_eq!(
            data["pullSecret"], item["pullSecret"],
            "{at}: data.pullSecret"
        );
        match cm["binaryData"][WASM_KEY].as_str() {
            Some(wasm) => {
                let bytes = engine.decode(wasm).expect("binaryData is base64");
                let sha = data["sha256"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: no data.sha256"));
                assert_eq!(
                    sha,
                    sha256_hex(&bytes),
                    "{at}: data.sha256 is the component's digest"
                );
                assert!(data["oci"].is_null(), "{at}");
            }
            None => {
                let oci = data["oci"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: neither a component nor data.oci"));
                let (_, digest) = oci
                    .split_once("@sha256:")
                    .unwrap_or_else(|| panic!("{at}: {oci} is not pinned"));
                assert!(oci.starts_with("oci://"), "{at}: {oci}");
                assert!(
                    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{at}: {oci}"
                );
            }
        }
        // The grant is what the host reads: it must parse as the host parses it.
        let grant = data["grant"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no grant"));
        let spec: GrantSpec =
            serde_yaml_ng::from_str(grant).unwrap_or_else(|e| panic!("{at}: grant: {e}"));
        assert!(!spec.allow.is_empty(), "{at}");
    }
}

#[test]
fn a_plugin_digest_that_does_not_match_its_component_fails_the_render() {
    let wrong = "0".repeat(64);
    let values = write_values(
        "wrong-digest",
        &json!({"plugins": {"inline": [{"name": "tiny", "wasm": "AGFzbQ0AAQA=", "sha256": wrong}]}}),
    );
    let err = render_err(&[&values], &[]);
    assert!(err.contains(&wrong), "{err}");
    assert!(
        err.contains(&sha256_hex(b"\0asm\x0d\0\x01\0")),
        "names the real digest: {err}"
    );

    let values = write_values(
        "not-wasm",
        &json!({"plugins": {"inline": [{"name": "text", "wasm": "aGVsbG8gd29ybGQ="}]}}),
    );
    let err = render_err(&[&values], &[]);
    assert!(err.contains("not WebAssembly"), "{err}");

    let values = write_values(
        "oci-tag",
        &json!({"plugins": {"oci": [{"name": "tagged", "ref": "oci://ghcr.io/org/plugin:latest"}]}}),
    );
    let err = render_err(&[&values], &[]);
    assert!(err.contains("pinned by digest"), "{err}");
}

async fn registry() -> Registry {
    promoter::install_crypto_provider();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        git_dir: None,
        ..Default::default()
    })
    .expect("a wasm runtime");
    Registry::new(Arc::new(runtime), false)
        .await
        .expect("the built-in plugins load")
}

#[tokio::test]
async fn a_plugin_config_map_rendered_by_the_chart_loads_into_the_real_registry() {
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_NOOP")).unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let values = write_values(
        "noop-plugin",
        &json!({"plugins": {"inline": [{
            "name": "noop-strategy",
            "wasm": engine.encode(&wasm),
            "grant": {
                "namespaces": ["apps"],
                "allow": ["https://ci.example.com"],
                "keys": [{"name": "ci", "secretRef": {"name": "ci-hmac", "key": "hmac-key"}}],
                "limits": {"timeout": "5s", "memory": "32MiB"}
            }
        }]}}),
    );
    let docs = render_ok(&[&values], &[]);
    let cms = plugin_config_maps(&docs);
    assert_eq!(cms.len(), 1);
    let mut text = String::new();
    for cm in &cms {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(cm).unwrap());
    }
    // The Secret the grant names, where the plugin's grant looks for it.
    text.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ci-hmac, namespace: {NAMESPACE}}}\nstringData: {{hmac-key: k}}\n"
    ));
    let manifests = Manifests::from_yaml("rendered chart", &text)
        .expect("the loader reads the chart's ConfigMap");
    assert_eq!(manifests.plugin_sources().count(), 1);

    let registry = registry().await;
    let problems = registry.sync(&manifests).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        registry.names().contains(&"noop-strategy".to_string()),
        "{:?}",
        registry.names()
    );
    let strategy = promoter::pipeline::StrategyRef {
        plugin: "noop-strategy".into(),
        config: json!({}),
    };
    let plugin = registry
        .granted("apps", &strategy, &manifests)
        .expect("the grant's Secret is found in the release namespace");
    assert_eq!(plugin.limits().timeout, std::time::Duration::from_secs(5));
    // grant.namespaces names who may use it: a namespace it does not name is refused.
    let refused = registry
        .granted("other", &strategy, &manifests)
        .err()
        .expect("a namespace the grant does not name is refused");
    assert!(refused.contains("grant.namespaces"), "{refused}");

    // And the chart lets the controller read that Secret, and nothing else.
    let role = one(&docs, "Role", &format!("{RELEASE}-plugin-secrets"));
    assert_eq!(
        rules(role),
        vec![(
            String::new(),
            "secrets".to_string(),
            BTreeSet::from(["get".to_string()]),
            BTreeSet::from(["ci-hmac".to_string()])
        )]
    );
}

// ---------------------------------------------------------------------------------------
// values.schema.json
// ---------------------------------------------------------------------------------------

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).expect("values.schema.json is JSON");
    jsonschema::validator_for(&schema).expect("values.schema.json is a valid JSON Schema")
}

/// Helm's merge of values files: maps merge key by key, everything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn values_with(over: &Value) -> Value {
    let mut values = read_yaml(&chart_dir().join("values.yaml"));
    merge(&mut values, over);
    values
}

fn schema_errors(values: &Value) -> Vec<String> {
    schema()
        .iter_errors(values)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn values_schema_accepts_the_defaults_and_every_shipped_values_file() {
    assert_eq!(
        schema_errors(&values_with(&json!({}))),
        Vec::<String>::new(),
        "values.yaml"
    );
    for file in [all_values(), examples().join("values.yaml")] {
        let values = values_with(&read_yaml(&file));
        assert_eq!(
            schema_errors(&values),
            Vec::<String>::new(),
            "{}",
            file.display()
        );
        render(&[&file], &[]).unwrap_or_else(|e| panic!("{} does not render: {e}", file.display()));
    }
}

#[test]
fn values_schema_rejects_unknown_and_mistyped_values() {
    let cases = [
        (
            "an unknown top-level value",
            json!({"replicas": 3}),
            "replicas",
        ),
        (
            "a misspelt nested value",
            json!({"rbac": {"secrets": {"clusterwide": true}}}),
            "clusterwide",
        ),
        (
            "a string for a number",
            json!({"replicaCount": "2"}),
            "replicaCount",
        ),
        (
            "root",
            json!({"securityContext": {"runAsUser": 0}}),
            "runAsUser",
        ),
        (
            "an unknown log format",
            json!({"config": {"logFormat": "xml"}}),
            "logFormat",
        ),
        (
            "an OCI plugin by tag",
            json!({"plugins": {"oci": [{"name": "p", "ref": "oci://ghcr.io/o/p:1.0"}]}}),
            "ref",
        ),
        (
            "a plugin named like a built-in strategy",
            json!({"plugins": {"oci": [{"name": "webhook", "ref": format!("oci://r/p@sha256:{}", "a".repeat(64))}]}}),
            "name",
        ),
        (
            "an inline plugin without its component",
            json!({"plugins": {"inline": [{"name": "p"}]}}),
            "inline",
        ),
        (
            "a grant field the host does not know",
            json!({"plugins": {"inline": [{"name": "p", "wasm": "AGFzbQ0AAQA=", "grant": {"allowed": []}}]}}),
            "grant",
        ),
    ];
    for (what, over, mentions) in cases {
        let errors = schema_errors(&values_with(&over));
        assert!(
            !errors.is_empty(),
            "values.schema.json accepts {what}: {over}"
        );
        let text = errors.join("\n");
        assert!(
            text.contains(mentions),
            "{what}: the error should name {mentions}: {text}"
        );
    }
}

#[test]
fn the_notes_render_for_the_default_and_the_full_values_and_say_what_the_replicas_do() {
    // chart-render, like `helm template`, leaves NOTES.txt out; render a copy in which it
    // is an ordinary template.
    let copy = scratch("notes").join("promoter");
    copy_dir(&chart_dir(), &copy);
    std::fs::rename(
        copy.join("templates/NOTES.txt"),
        copy.join("templates/zz-notes.yaml"),
    )
    .unwrap();
    for (label, values) in [("default", vec![]), ("full", vec![all_values()])] {
        let files: Vec<&Path> = values.iter().map(PathBuf::as_path).collect();
        let out =
            render_dir(&copy, &files, &[]).unwrap_or_else(|e| panic!("{label}: NOTES.txt: {e}"));
        let notes = out
            .split("# Source: promoter/templates/zz-notes.yaml")
            .nth(1)
            .unwrap_or_else(|| panic!("{label}: no notes in\n{out}"));
        assert!(
            notes.contains(&format!("{RELEASE}-webhook.{NAMESPACE}.svc.cluster.local")),
            "{label}: {notes}"
        );
        assert!(notes.contains("/promotion/"), "{label}: {notes}");
    }
    for (replicas, says) in [
        (
            "1",
            "with 1 replica.\nIt serves the webhook, runs promotions",
        ),
        (
            "2",
            "with 2 replicas.\nEvery replica serves the webhook and runs promotions",
        ),
    ] {
        let set = format!("replicaCount={replicas}");
        let out = render_dir(&copy, &[], &[&set]).unwrap_or_else(|e| panic!("{set}: {e}"));
        assert!(
            out.contains(says),
            "{set}: the notes should say {says:?}:\n{out}"
        );
    }
}

/// Every value of values.yaml as a dotted path; lists and empty maps are leaves.
fn value_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(v, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_value_is_documented_in_the_charts_readme() {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    // The first cell of each row of the values table: `path`.
    let documented: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(path, _)| path.to_string()))
        .collect();
    let mut paths = Vec::new();
    value_paths(&read_yaml(&chart_dir().join("values.yaml")), "", &mut paths);
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| {
            !documented
                .iter()
                .any(|d| *p == d || p.starts_with(&format!("{d}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "charts/promoter/README.md does not document {missing:?}"
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    for top in schema["properties"].as_object().unwrap().keys() {
        assert!(
            documented
                .iter()
                .any(|d| d == top || d.starts_with(&format!("{top}."))),
            "the schema allows {top}, which the README does not document"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// examples/kubernetes
// ---------------------------------------------------------------------------------------

fn management() -> Manifests {
    Manifests::load_dir(&examples().join("management"))
        .unwrap_or_else(|e| panic!("examples/kubernetes/management does not load: {e}"))
}

/// Every document of every YAML file under `dir`.
fn documents_under(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(documents_under(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.extend(parse_documents(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

#[test]
fn the_kubernetes_examples_load_with_the_real_pipeline_loader() {
    let manifests = management();
    let mut strategies = BTreeSet::new();
    for pipeline in &manifests.pipelines {
        let at = format!("Pipeline {}/{}", pipeline.namespace, pipeline.name);
        for env in &pipeline.environments[..pipeline.environments.len() - 1] {
            let secret = env
                .hmac_secret
                .as_deref()
                .unwrap_or_else(|| panic!("{at}: events from {} are not signed", env.name));
            let secret = manifests
                .secret(&pipeline.namespace, secret)
                .unwrap_or_else(|| panic!("{at}: Secret {secret} is not in the examples"));
            assert!(
                secret.hmac_key().is_some(),
                "{at}: {} has no hmac-key",
                secret.name
            );
        }
        for env in &pipeline.environments {
            if let Some(name) = pipeline.approval_secret_for(&env.name) {
                let secret = manifests
                    .secret(&pipeline.namespace, name)
                    .unwrap_or_else(|| {
                        panic!("{at}: approval Secret {name} is not in the examples")
                    });
                assert!(secret.hmac_key().is_some(), "{at}: {name} has no hmac-key");
            }
        }
        for (_, strategy) in pipeline.strategies() {
            let kind = match strategy.plugin.as_str() {
                "pull-request" | "webhook" | "notification" => strategy.plugin.clone(),
                _ => "custom plugin".to_string(),
            };
            strategies.insert(kind);
            if let Some(name) = strategy.config["secretRef"]["name"].as_str() {
                assert!(
                    manifests.secret(&pipeline.namespace, name).is_some(),
                    "{at}: the strategy's Secret {name} is not in the examples"
                );
            }
            if !["pull-request", "webhook", "notification"].contains(&strategy.plugin.as_str()) {
                let cm = manifests
                    .plugin_sources()
                    .find(|cm| {
                        cm.annotations.get(NAME_ANNOTATION).unwrap_or(&cm.name) == &strategy.plugin
                    })
                    .unwrap_or_else(|| {
                        panic!("{at}: no plugin ConfigMap declares {}", strategy.plugin)
                    });
                let grant: GrantSpec = serde_yaml_ng::from_str(&cm.data["grant"])
                    .unwrap_or_else(|e| panic!("ConfigMap {}: grant: {e}", cm.name));
                assert!(
                    cm.namespace == pipeline.namespace
                        || grant.namespaces.contains(&pipeline.namespace),
                    "{at}: ConfigMap {}'s grant.namespaces does not name {}",
                    cm.name,
                    pipeline.namespace
                );
                for secret in grant
                    .credentials
                    .iter()
                    .map(|c| &c.secret_ref)
                    .chain(grant.keys.iter().map(|k| &k.secret_ref))
                {
                    let found = manifests
                        .secret(&cm.namespace, &secret.name)
                        .unwrap_or_else(|| {
                            panic!("ConfigMap {}: Secret {} is missing", cm.name, secret.name)
                        });
                    assert!(
                        found.get(&secret.key).is_some(),
                        "Secret {} has no {}",
                        secret.name,
                        secret.key
                    );
                }
                let oci = cm.data.get("oci").map(String::as_str).unwrap_or_default();
                assert!(
                    cm.binary_data.contains_key(WASM_KEY) || oci.contains("@sha256:"),
                    "ConfigMap {}: a component or a digest-pinned OCI reference",
                    cm.name
                );
            }
        }
    }
    assert_eq!(
        strategies,
        BTreeSet::from(
            ["pull-request", "webhook", "notification", "custom plugin"].map(String::from)
        ),
        "a Pipeline per strategy"
    );
    assert_eq!(
        promoter::pipeline::key_problems(&manifests),
        Vec::<String>::new(),
        "no event key approves"
    );
    assert!(
        manifests.pipelines.iter().any(|p| p
            .environments
            .iter()
            .any(|e| p.approval_secret_for(&e.name).is_some())),
        "the examples show an approval key"
    );
}

#[tokio::test]
async fn the_examples_built_in_strategies_pass_their_plugins_validation() {
    let manifests = management();
    let registry = registry().await;
    // The strategies whose configuration is the Pipeline's alone. (The notification
    // strategy's address is the server's --events-addr, bound at start; the custom
    // plugin's component is not part of the examples.)
    let own_config = ["pull-request", "webhook"];
    let mut checked = manifests.clone();
    checked.pipelines.retain(|p| {
        p.strategies()
            .all(|(_, s)| own_config.contains(&s.plugin.as_str()))
    });
    let names: BTreeSet<&str> = checked.pipelines.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["podinfo", "checkout"]));
    let problems = registry.validate(&checked).await;
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_examples_flux_providers_sign_with_the_pipelines_key_and_address_the_chart() {
    let manifests = management();
    let management_docs = documents_under(&examples().join("management"));
    let leaf_docs = documents_under(&examples().join("leaf-cluster"));
    let chart = render_ok(&[&examples().join("values.yaml")], &[]);
    let service = one(&chart, "Service", &format!("{RELEASE}-webhook"));
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let mut in_cluster = vec![format!(
        "http://{}.{NAMESPACE}.svc.cluster.local",
        name_of(service)
    )];
    if port != 80 {
        in_cluster[0].push_str(&format!(":{port}"));
    }
    let ingress = one(&chart, "Ingress", RELEASE);
    let external: Vec<String> = ingress["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("https://{}", r["host"].as_str().unwrap()))
        .collect();

    let mut providers = 0;
    for (cluster, docs, origins) in [
        ("management", &management_docs, &in_cluster),
        ("leaf", &leaf_docs, &external),
    ] {
        for provider in all(docs, "Provider") {
            providers += 1;
            let at = format!("{cluster} Provider {}", name_of(provider));
            assert_eq!(
                provider["apiVersion"], "notification.toolkit.fluxcd.io/v1beta3",
                "{at}"
            );
            assert_eq!(provider["spec"]["type"], "generic-hmac", "{at}");
            let address = provider["spec"]["address"].as_str().unwrap();
            let (origin, path) = address
                .split_once("/promotion/")
                .unwrap_or_else(|| panic!("{at}: {address} is not a /promotion/ URL"));
            assert!(
                origins.contains(&origin.to_string()),
                "{at}: {origin} is not one of {origins:?}"
            );
            let parts: Vec<&str> = path.split('/').collect();
            let [ns, name, env] = parts[..] else {
                panic!("{at}: expected /promotion/<ns>/<pipeline>/<env>, found {address}")
            };
            let pipeline = manifests
                .pipeline(ns, name)
                .unwrap_or_else(|| panic!("{at}: no Pipeline {ns}/{name}"));
            assert!(
                pipeline.next_environment(env).is_some(),
                "{at}: {env} is not an environment of {ns}/{name} that promotes onward"
            );
            let key = manifests
                .secret(ns, pipeline.hmac_secret_for(env).unwrap())
                .unwrap()
                .hmac_key()
                .unwrap();

            // Flux signs with its Secret's `token`, which must equal the pipeline's key.
            let secret_name = provider["spec"]["secretRef"]["name"].as_str().unwrap();
            let secret = docs
                .iter()
                .find(|d| {
                    kind_of(d) == "Secret"
                        && name_of(d) == secret_name
                        && namespace_of(d) == namespace_of(provider)
                })
                .unwrap_or_else(|| panic!("{at}: Secret {secret_name} is not beside it"));
            assert_eq!(
                secret["stringData"]["token"].as_str().map(str::as_bytes),
                Some(key),
                "{at}: the Provider's token must equal the Pipeline's hmac-key"
            );

            let alerts: Vec<&Value> = all(docs, "Alert")
                .into_iter()
                .filter(|a| {
                    a["spec"]["providerRef"]["name"] == name_of(provider)
                        && namespace_of(a) == namespace_of(provider)
                })
                .collect();
            assert_eq!(alerts.len(), 1, "{at}: one Alert feeds it");
            let alert = alerts[0];
            assert_eq!(
                alert["apiVersion"], "notification.toolkit.fluxcd.io/v1beta3",
                "{at}"
            );
            assert_eq!(alert["spec"]["eventSeverity"], "info", "{at}");
            let target_namespaces: Vec<&str> = pipeline
                .environment(env)
                .unwrap()
                .targets
                .iter()
                .map(|t| t.namespace.as_str())
                .collect();
            let sources = alert["spec"]["eventSources"].as_array().unwrap();
            assert!(
                sources
                    .iter()
                    .any(|s| s["kind"] == pipeline.app_ref.kind.as_str()
                        && s["name"] == pipeline.app_ref.name.as_str()
                        && target_namespaces
                            .contains(&s["namespace"].as_str().unwrap_or_default())),
                "{at}: the Alert watches {} {} in {target_namespaces:?}",
                pipeline.app_ref.kind,
                pipeline.app_ref.name
            );
            let inclusion = strings(&alert["spec"]["inclusionList"]);
            assert!(
                inclusion.iter().any(|r| r.contains("succeeded")),
                "{at}: the Alert lets successful deployments through: {inclusion:?}"
            );
        }
    }
    assert_eq!(
        providers, 2,
        "a Provider for the management cluster and one for a leaf"
    );
}

// ---------------------------------------------------------------------------------------
// Dockerfile (it cannot be built here; these are the facts the chart relies on)
// ---------------------------------------------------------------------------------------

#[test]
fn the_image_runs_as_the_charts_numeric_user_and_builds_with_the_pinned_toolchain() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let values = read_yaml(&chart_dir().join("values.yaml"));
    let uid = values["securityContext"]["runAsUser"].as_u64().unwrap();
    let gid = values["securityContext"]["runAsGroup"].as_u64().unwrap();
    assert_eq!(
        user,
        format!("{uid}:{gid}"),
        "the image's user is the chart's"
    );
    assert!(
        dockerfile.contains(&format!("--uid {uid}")),
        "the image gives {uid} a passwd entry (ssh needs one)"
    );

    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    let minor: String = channel.split('.').take(2).collect::<Vec<_>>().join(".");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("FROM rust:{minor}-"))),
        "the builder image is Rust {minor}, the toolchain rust-toolchain.toml pins"
    );
    assert!(
        dockerfile.contains("wasm32-wasip2"),
        "the plugins' target is installed"
    );
    assert!(dockerfile.contains("cargo build --release --locked -p promoter"));
    for package in ["git", "ca-certificates", "openssh-client"] {
        assert!(
            dockerfile.contains(package),
            "the runtime image has {package}"
        );
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for needed in ["host", "sdk", "plugins", "wit", "tests", "Cargo.lock"] {
        assert!(
            !ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore leaves out {needed}, which the build needs"
        );
    }
}

// ---------------------------------------------------------------------------------------
// CRDs
// ---------------------------------------------------------------------------------------

#[test]
fn the_charts_crds_are_the_ones_generated_from_the_rust_types() {
    for (file, generated) in promoter::cluster::crd::crds_yaml() {
        let path = chart_dir().join("files/crds").join(file);
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            shipped == generated,
            "{} differs from the Rust types; regenerate it with \
             `cargo run -p promoter -- crds --out charts/promoter/files/crds`",
            path.display()
        );
    }
}

fn numbers_as_floats(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_floats).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn the_chart_installs_and_upgrades_the_crds_and_keeps_them_on_uninstall_unless_told() {
    let crds = |sets: &[&str]| -> Vec<Value> {
        all(&render_ok(&[], sets), "CustomResourceDefinition")
            .into_iter()
            .cloned()
            .collect()
    };
    let rendered = crds(&[]);
    assert_eq!(
        rendered.len(),
        2,
        "both CRDs, as templates (so helm upgrade updates them)"
    );
    for (file, generated) in promoter::cluster::crd::crds_yaml() {
        let mut expected = parse_documents(&generated).remove(0);
        let mut crd = rendered
            .iter()
            .find(|c| name_of(c) == name_of(&expected))
            .unwrap_or_else(|| panic!("{file} is not rendered"))
            .clone();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{file}: helm uninstall must not delete every Pipeline and Promotion"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        // Otherwise exactly what `promoter crds` prints.
        for m in [&mut crd["metadata"], &mut expected["metadata"]] {
            let m = m.as_object_mut().unwrap();
            m.remove("annotations");
            m.remove("labels");
        }
        // Helm's fromYaml/toYaml turn `0.0` into `0`: the same number to the API server.
        assert_eq!(
            numbers_as_floats(crd),
            numbers_as_floats(expected),
            "{file}"
        );
    }
    let unkept = crds(&["crds.keep=false"]);
    assert_eq!(unkept.len(), 2);
    assert!(
        unkept
            .iter()
            .all(|c| c["metadata"]["annotations"]["helm.sh/resource-policy"].is_null())
    );
    assert!(
        crds(&["crds.enabled=false"]).is_empty(),
        "applied by the operator instead"
    );
    assert!(
        !chart_dir().join("crds").exists(),
        "crds/ is installed once and never upgraded by Helm; the CRDs are templates"
    );
}

/// The openAPIV3Schema of the CRD in `file`, as a JSON Schema validator (the Kubernetes
/// extensions, `x-kubernetes-*` and `nullable`, are ignored as unknown keywords).
fn crd_schema(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(chart_dir().join("files/crds").join(file)).unwrap();
    let crd = &parse_documents(&text)[0];
    assert_eq!(kind_of(crd), "CustomResourceDefinition");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    jsonschema::validator_for(schema).expect("the CRD's schema is a JSON Schema")
}

#[test]
fn every_pipeline_shipped_or_tested_fits_the_crd_in_both_dialects() {
    let validator = crd_schema("pipelines.yaml");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        repo().join("examples/local"),
        repo().join("examples/kubernetes/management"),
        repo().join("host/src/testdata/seed"),
        repo().join("host/src/testdata/weave"),
    ] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "yaml") {
                files.push(entry.path());
            }
        }
    }
    let mut pipelines = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in parse_documents(&text) {
            if kind_of(&doc) != "Pipeline" {
                continue;
            }
            pipelines += 1;
            let errors: Vec<String> = validator
                .iter_errors(&doc)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        }
    }
    assert!(pipelines >= 10, "only {pipelines} pipelines found");

    // And what it must refuse: a pipeline without environments, a target without a
    // namespace.
    let bad = json!({
        "apiVersion": "pipelines.weave.works/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"appRef": {"apiVersion": "v1", "kind": "HelmRelease", "name": "x"},
                 "environments": [{"name": "dev", "targets": [{"clusterRef": {"name": "c"}}]}]}
    });
    assert!(!validator.is_valid(&bad));
}

#[test]
fn the_crds_keep_weaves_printer_columns_and_tell_the_promotion_story() {
    let columns = |file: &str| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(chart_dir().join("files/crds").join(file)).unwrap();
        let crd = &parse_documents(&text)[0];
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["jsonPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pipeline = columns("pipelines.yaml");
    let names: Vec<&str> = pipeline.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["App Kind", "App Name", "Age", "Ready", "Status"]);
    assert_eq!(pipeline[0].1, ".spec.appRef.kind");
    let promotion = columns("promotions.yaml");
    let names: Vec<&str> = promotion.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Pipeline", "To", "Version", "Phase", "Attempts", "Holder", "Outcome", "Age"
        ]
    );
    for file in ["pipelines.yaml", "promotions.yaml"] {
        let text = std::fs::read_to_string(chart_dir().join("files/crds").join(file)).unwrap();
        let crd = &parse_documents(&text)[0];
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert!(
            crd["spec"]["versions"][0]["subresources"]["status"].is_object(),
            "{file}: status subresource"
        );
    }
}

/// Runs `promtool ARGS…` in `dir`; its combined output, failing the test when it fails.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus) must be installed; .ci/run installs it");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_rule_passes_promtool_and_each_alert_fires_on_the_series_it_watches() {
    assert!(
        all(&render_ok(&[], &[]), "PrometheusRule").is_empty(),
        "off by default"
    );
    let docs = render_ok(&[&all_values()], &[]);
    let rule = one(&docs, "PrometheusRule", RELEASE);
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let dir = scratch("prometheus-rule");
    let groups = json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml_ng::to_string(&groups).unwrap(),
    )
    .unwrap();
    let checked = promtool(&dir, &["check", "rules", "rules.yaml"]);
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");

    // The expressions, run by Prometheus' rule engine on made-up series (annotations are
    // checked above; promtool's unit tests would compare their rendered text too).
    let mut bare = groups.clone();
    for r in bare["groups"][0]["rules"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("annotations");
    }
    std::fs::write(
        dir.join("bare.yaml"),
        serde_yaml_ng::to_string(&bare).unwrap(),
    )
    .unwrap();
    let alert = |labels: Value| json!([{"exp_labels": labels}]);
    let team = |mut labels: Value| {
        labels["team"] = json!("platform");
        labels
    };
    let tests = json!({
        "rule_files": ["bare.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": r#"promoter_promotions_total{pipeline="flux-system/podinfo",environment="prod",strategy="webhook",result="failed"}"#, "values": "0 0 1 1 1"},
                    {"series": r#"promoter_promotions_total{pipeline="flux-system/podinfo",environment="test",strategy="webhook",result="succeeded"}"#, "values": "0 1 2 3 4"},
                    // An approval waiting since t=0, with all-values' threshold of an hour.
                    {"series": "promoter_oldest_approval_wait_seconds", "values": "0+60x100"},
                    {"series": r#"promoter_events_received_total{pipeline="",result="unauthorized"}"#, "values": "0+60x30"},
                    {"series": r#"promoter_events_received_total{pipeline="flux-system/podinfo",result="unavailable"}"#, "values": "0 0 0 5 5"},
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "PromoterPromotionsFailing",
                     "exp_alerts": alert(team(json!({"severity": "warning", "pipeline": "flux-system/podinfo", "environment": "prod"})))},
                    {"eval_time": "30m", "alertname": "PromoterApprovalWaitingTooLong", "exp_alerts": []},
                    {"eval_time": "70m", "alertname": "PromoterApprovalWaitingTooLong",
                     "exp_alerts": alert(team(json!({"severity": "info"})))},
                    {"eval_time": "8m", "alertname": "PromoterWebhookRefusalsRising", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "PromoterWebhookRefusalsRising",
                     "exp_alerts": alert(team(json!({"severity": "warning"})))},
                    {"eval_time": "4m", "alertname": "PromoterStoreUnavailable",
                     "exp_alerts": alert(team(json!({"severity": "critical"})))},
                ],
            },
            {
                // Busy but healthy: many ignored and accepted events, every promotion
                // succeeding, no approval waiting. Nothing fires.
                "interval": "1m",
                "input_series": [
                    {"series": r#"promoter_events_received_total{pipeline="flux-system/podinfo",result="ignored"}"#, "values": "0+600x60"},
                    {"series": r#"promoter_events_received_total{pipeline="flux-system/podinfo",result="accepted"}"#, "values": "0+60x60"},
                    {"series": r#"promoter_promotions_total{pipeline="flux-system/podinfo",environment="test",strategy="webhook",result="succeeded"}"#, "values": "0+60x60"},
                    {"series": "promoter_oldest_approval_wait_seconds", "values": "0x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "59m", "alertname": "PromoterPromotionsFailing", "exp_alerts": []},
                    {"eval_time": "59m", "alertname": "PromoterApprovalWaitingTooLong", "exp_alerts": []},
                    {"eval_time": "59m", "alertname": "PromoterWebhookRefusalsRising", "exp_alerts": []},
                    {"eval_time": "59m", "alertname": "PromoterStoreUnavailable", "exp_alerts": []},
                ],
            },
        ],
    });
    std::fs::write(
        dir.join("tests.yaml"),
        serde_yaml_ng::to_string(&tests).unwrap(),
    )
    .unwrap();
    let tested = promtool(&dir, &["test", "rules", "tests.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_grafana_dashboard_is_a_sidecar_config_map_whose_queries_prometheus_parses() {
    assert!(
        !all(&render_ok(&[], &[]), "ConfigMap")
            .iter()
            .any(|cm| name_of(cm).ends_with("-dashboard")),
        "off by default"
    );
    let docs = render_ok(&[&all_values()], &[]);
    let cm = all(&docs, "ConfigMap")
        .into_iter()
        .find(|cm| name_of(cm) == format!("{RELEASE}-dashboard"))
        .expect("the dashboard ConfigMap");
    assert_eq!(namespace_of(cm), "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Promoter");
    let text = cm["data"]["promoter.json"].as_str().unwrap();
    let dashboard: Value = serde_json::from_str(text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "promoter-overview");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Grafana's variables as Prometheus would see them once substituted.
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "2m")
                .replace("$__range", "6h")
                .replace("$pipeline", ".*")
                .replace("$job", ".*");
            json!({"record": format!("promoter:panel_{i}"), "expr": e})
        })
        .collect();
    let dir = scratch("dashboard");
    std::fs::write(
        dir.join("panels.yaml"),
        serde_yaml_ng::to_string(&json!({"groups": [{"name": "panels", "rules": rules}]})).unwrap(),
    )
    .unwrap();
    promtool(&dir, &["check", "rules", "panels.yaml"]);
}
