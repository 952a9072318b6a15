//! Prometheus metrics, served at `/metrics` on the admin listener.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events received on the webhook, by pipeline (`namespace/name`, or empty when the
    /// event is not authenticated or no such Pipeline is in force) and result
    /// (accepted, ignored, rejected, unauthorized, replay, invalid, unavailable).
    pub events: IntCounterVec,
    /// Finished promotions by pipeline, environment, strategy and result (succeeded, failed).
    pub promotions: IntCounterVec,
    /// From event accepted to promotion finished, by pipeline, environment, strategy and
    /// result.
    pub promotion_latency: HistogramVec,
    /// One plugin call, by plugin and result (ok or the error kind).
    pub plugin_calls: HistogramVec,
    /// Promotions waiting to run (pending or due for retry).
    pub queue_depth: IntGauge,
    /// Promotions waiting for approval, and how long the oldest has waited (set at scrape).
    pub approvals_waiting: IntGauge,
    pub oldest_approval_wait: prometheus::Gauge,
    /// Requests to the Kubernetes API, by verb, resource and status code.
    pub kubernetes_requests: HistogramVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "promoter_events_received_total",
                "Flux events received on the webhook, by pipeline (empty: no such Pipeline) and result.",
            ),
            &["pipeline", "result"],
        )
        .unwrap();
        let promotions = IntCounterVec::new(
            Opts::new(
                "promoter_promotions_total",
                "Finished promotions by pipeline, environment, strategy and result.",
            ),
            &["pipeline", "environment", "strategy", "result"],
        )
        .unwrap();
        let promotion_latency = HistogramVec::new(
            HistogramOpts::new(
                "promoter_promotion_latency_seconds",
                "Time from event accepted to promotion finished, by pipeline and environment.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0,
            ]),
            &["pipeline", "environment", "strategy", "result"],
        )
        .unwrap();
        let plugin_calls = HistogramVec::new(
            HistogramOpts::new(
                "promoter_plugin_call_duration_seconds",
                "Duration of one strategy plugin call.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            &["plugin", "result"],
        )
        .unwrap();
        let queue_depth = IntGauge::new(
            "promoter_queue_depth",
            "Promotions waiting to run (pending or due for retry).",
        )
        .unwrap();
        let approvals_waiting = IntGauge::new(
            "promoter_approvals_waiting",
            "Promotions waiting for approval.",
        )
        .unwrap();
        let oldest_approval_wait = prometheus::Gauge::new(
            "promoter_oldest_approval_wait_seconds",
            "How long the oldest promotion waiting for approval has waited (0: none waits).",
        )
        .unwrap();
        let kubernetes_requests = HistogramVec::new(
            HistogramOpts::new(
                "promoter_kubernetes_request_duration_seconds",
                "Requests to the Kubernetes API until the response headers, by verb, resource \
                 and status code (\"error\": no response).",
            )
            .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0]),
            &["verb", "resource", "code"],
        )
        .unwrap();
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .unwrap();
        registry
            .register(Box::new(approvals_waiting.clone()))
            .unwrap();
        registry
            .register(Box::new(oldest_approval_wait.clone()))
            .unwrap();
        registry
            .register(Box::new(kubernetes_requests.clone()))
            .unwrap();
        registry.register(Box::new(events.clone())).unwrap();
        registry.register(Box::new(promotions.clone())).unwrap();
        registry
            .register(Box::new(promotion_latency.clone()))
            .unwrap();
        registry.register(Box::new(plugin_calls.clone())).unwrap();
        registry.register(Box::new(queue_depth.clone())).unwrap();
        Metrics {
            registry,
            events,
            promotions,
            promotion_latency,
            plugin_calls,
            queue_depth,
            approvals_waiting,
            oldest_approval_wait,
            kubernetes_requests,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics to memory cannot fail");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
