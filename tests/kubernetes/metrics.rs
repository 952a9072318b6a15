//! What Kubernetes mode tells Prometheus about its API server: every request counted and
//! timed by verb, resource and code, never by object name.

use crate::support::{Receiver, Server, check_with_promtool};
use crate::{example_cluster, promoted_into_test, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_requests_are_measured_by_verb_resource_and_code() {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-metrics", &ci).await;
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    let api = cluster.api.clone();
    wait_until("the Pipeline's status", &server, || {
        api.ready("flux-system/podinfo").is_some()
    })
    .await;

    promoted_into_test(&server, &api, "6.5.4").await;

    let metrics = server.metrics().await;
    let count = |verb: &str, resource: &str, code: &str| -> u64 {
        let series = format!(
            r#"promoter_kubernetes_request_duration_seconds_count{{code="{code}",resource="{resource}",verb="{verb}"}} "#
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("list", "promotions.promoter.dev", "200") >= 1,
        "{metrics}"
    );
    assert!(
        count("watch", "promotions.promoter.dev", "200") >= 1,
        "{metrics}"
    );
    assert!(count("get", "secrets", "200") >= 1, "{metrics}");
    assert!(
        count("patch", "pipelines.pipelines.weave.works/status", "200") >= 1,
        "{metrics}"
    );
    // The fake saw as many requests as were measured (watches included).
    let measured: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("promoter_kubernetes_request_duration_seconds_count{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
        .sum();
    let seen = api.requests.lock().unwrap().len() as u64;
    assert!(
        measured >= 4 && measured <= seen,
        "measured {measured}, the API server saw {seen}"
    );
    for name in ["podinfo-events", "podinfo"] {
        assert!(
            !metrics.contains(&format!("resource=\"{name}")),
            "object names never become labels: {metrics}"
        );
    }
    check_with_promtool(&metrics);

    // Every metric the chart's dashboard and alerts query is one Promoter exports.
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/promoter");
    for file in ["dashboards/promoter.json", "templates/prometheusrule.yaml"] {
        let text = std::fs::read_to_string(chart.join(file)).unwrap();
        let mut names: Vec<&str> = text
            .match_indices("promoter_")
            .chain(text.match_indices("process_"))
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 3, "{file}: {names:?}");
        for name in names {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                metrics.contains(&format!("# TYPE {family} ")),
                "{file} queries {name}, which /metrics does not export:\n{metrics}"
            );
        }
    }
}
