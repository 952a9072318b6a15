//! Per-call cost of a fresh sandbox plus `promote` on a no-op plugin, against the same
//! logic (the noop strategy through the SDK) called natively, in one run.
//! Target on a 2-core machine: median under 50 µs.

use promoter::promotion::PromotionRequest;
use promoter::runtime::egress::Grant;
use promoter::runtime::limits::Limits;
use promoter::runtime::{Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALLS: usize = 5_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("{name:<28} median {:>9.2?}   p99 {:>9.2?}", p50, p99);
    (p50, p99)
}

fn main() {
    promoter::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request: PromotionRequest = serde_json::from_value(serde_json::json!({
        "id": "podinfo-test-0123456789", "attempt": 1,
        "pipeline": {"namespace": "flux-system", "name": "podinfo"},
        "sourceEnvironment": "dev", "targetEnvironment": "test",
        "targets": [{"namespace": "podinfo-test"}],
        "app": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "podinfo"},
        "version": "6.5.4", "config": {}
    }))
    .unwrap();

    let sandboxed = rt.block_on(async {
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_NOOP")).unwrap();
        let plugin = runtime
            .load("noop", &wasm, Grant::default(), Limits::default())
            .await
            .unwrap();
        for _ in 0..500 {
            plugin.promote(&request).await.unwrap();
        }
        let mut samples = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            std::hint::black_box(plugin.promote(&request).await.unwrap());
            samples.push(t.elapsed());
        }
        samples
    });

    let host = promoter_sdk::testing::MockHost::new();
    let native_request = promoter_sdk::testing::sample_request("{}");
    let mut native = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        std::hint::black_box(
            promoter_sdk::promote::<fixture_noop::Noop>(
                &host,
                std::hint::black_box(&native_request),
            )
            .unwrap(),
        );
        native.push(t.elapsed());
    }

    println!("{CALLS} calls each, after warm-up");
    let (n50, n99) = report("native (same logic)", native);
    let (s50, s99) = report("fresh sandbox + promote", sandboxed);
    println!(
        "sandbox overhead: median {:.0}x native, p99 {:.0}x native; target median < 50µs: {}",
        s50.as_secs_f64() / n50.as_secs_f64().max(1e-9),
        s99.as_secs_f64() / n99.as_secs_f64().max(1e-9),
        if s50 < Duration::from_micros(50) {
            "met"
        } else {
            "NOT met"
        }
    );
}
