//! Prometheus metrics, served at `/metrics` on the admin listener.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events received on the webhook, by result (accepted, ignored, rejected, unauthorized, replay, invalid, unavailable).
    pub events: IntCounterVec,
    /// Finished promotions by pipeline, environment, strategy and result (succeeded, failed).
    pub promotions: IntCounterVec,
    /// From event accepted to promotion finished.
    pub promotion_latency: HistogramVec,
    /// One plugin call, by plugin and result (ok or the error kind).
    pub plugin_calls: HistogramVec,
    /// Promotions waiting to run (pending or due for retry).
    pub queue_depth: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "promoter_events_received_total",
                "Flux events received on the webhook, by result.",
            ),
            &["result"],
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
                "Time from event accepted to promotion finished.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0,
            ]),
            &["strategy", "result"],
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
