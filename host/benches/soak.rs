//! Soak: a steady event stream for ten minutes (PROMOTER_SOAK_SECONDS to change it)
//! through the release binary with the default plugins against local peers — the webhook
//! strategy (a loopback receiver, every event a new version) and the pull-request
//! strategy (real git http-backend and the fake Gitea API, a new version every few
//! seconds). Prints the server's resident memory and open file descriptors over time, and
//! their change after the first minute (warm-up). Never fails on a figure.
//! Run: cargo bench -p promoter --bench soak

#[path = "../../tests/support/forges/mod.rs"]
mod fake;
#[path = "../../tests/support/mod.rs"]
mod support;

use fake::Setup;
use fake::gitea::Gitea;
use promoter::client::{deployment_event, signature_header};
use std::time::{Duration, Instant};
use support::{EVENTS_KEY, Receiver, deployed_in_dev};

/// Webhook events per second (each a new version, so each a promotion).
const RATE: u64 = 20;
/// Seconds between pull-request promotions.
const PR_EVERY: u64 = 5;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(60);

fn main() {
    let seconds = std::env::var("PROMOTER_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600u64);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(Duration::from_secs(seconds)));
}

/// (resident KiB, open file descriptors) of a process.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// Flux in soak-dev reports `version` of soakapp; the answer's status.
async fn post(client: &reqwest::Client, url: &str, version: &str) -> u16 {
    let event = deployment_event("HelmRelease", "soak-dev", "soakapp", version);
    let body = serde_json::to_vec(&event).unwrap();
    client
        .post(url)
        .header("x-signature", signature_header(EVENTS_KEY, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn webhook_pipeline(hook: &str) -> String {
    format!(
        "apiVersion: pipelines.weave.works/v1alpha1\nkind: Pipeline\n\
         metadata: {{name: soak, namespace: flux-system}}\n\
         spec:\n  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: soakapp}}\n\
         \x20 environments:\n\
         \x20   - name: dev\n      targets: [{{namespace: soak-dev}}]\n\
         \x20   - name: test\n      targets: [{{namespace: soak-test}}]\n\
         \x20 promotion:\n    secretRef: {{name: soak-events}}\n    webhook: {{url: '{hook}'}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: soak-events, namespace: flux-system}}\n\
         stringData: {{hmac-key: {}}}\n",
        std::str::from_utf8(EVENTS_KEY).unwrap()
    )
}

async fn run(duration: Duration) {
    let rig = fake::start::<Gitea>("soak", Setup::typed("gitea"), |_| {}).await;
    let receiver = Receiver::start(202, "queued").await;
    std::fs::write(
        rig.server.manifests_dir().join("soak.yaml"),
        webhook_pipeline(&receiver.url("/job/promote")),
    )
    .unwrap();
    let url = format!("{}/promotion/flux-system/soak/dev", rig.server.webhook);
    let client = reqwest::Client::new();
    // The folder is watched: wait until the webhook pipeline is served.
    for _ in 0..100 {
        if post(&client, &url, "0.0.0").await == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pid = rig.server.child.id();
    let start = Instant::now();
    let mut samples: Vec<(Duration, u64, usize, usize)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut next_pr = Duration::ZERO;
    let (mut sent, mut refused, mut prs) = (0u64, 0u64, 0u64);
    println!(
        "{:>6} {:>10} {:>5} {:>8} {:>6}",
        "time", "RSS", "fds", "events", "PRs"
    );
    while start.elapsed() < duration {
        let tick = Instant::now();
        let elapsed = start.elapsed();
        if elapsed >= next_sample {
            let (rss, fds) = usage(pid);
            let delivered = receiver.received().len();
            println!(
                "{:>5}s {:>7} MiB {:>5} {:>8} {:>6}",
                elapsed.as_secs(),
                rss / 1024,
                fds,
                delivered,
                prs
            );
            samples.push((elapsed, rss, fds, delivered));
            next_sample += SAMPLE_EVERY;
        }
        if elapsed >= next_pr {
            prs += 1;
            let (status, _) = deployed_in_dev(&rig.server, &format!("9.{prs}.0")).await;
            assert_eq!(status, 202);
            next_pr += Duration::from_secs(PR_EVERY);
        }
        for _ in 0..RATE / 10 {
            sent += 1;
            if post(&client, &url, &format!("1.{sent}.0")).await != 202 {
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
    }
    // Let the last promotions finish, then the final sample.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, fds) = usage(pid);
    samples.push((start.elapsed(), rss, fds, receiver.received().len()));
    {
        let forge = rig.forge.lock().unwrap();
        assert!(forge.refused.is_empty(), "{:?}", forge.refused);
    }

    let warm = samples
        .iter()
        .find(|s| s.0 >= WARM_UP)
        .unwrap_or(&samples[0]);
    let last = samples.last().unwrap();
    println!(
        "{sent} webhook events ({refused} not accepted), {prs} pull-request promotions, {} deliveries, over {:?}",
        last.3, last.0
    );
    println!(
        "after warm-up ({}s): RSS {} -> {} MiB ({:+.1}%), fds {} -> {}",
        warm.0.as_secs(),
        warm.1 / 1024,
        last.1 / 1024,
        (last.1 as f64 / warm.1 as f64 - 1.0) * 100.0,
        warm.2,
        last.2
    );
    let half = &samples[samples.len() / 2];
    println!(
        "second half ({}s -> {}s): RSS {} -> {} MiB, fds {} -> {}",
        half.0.as_secs(),
        last.0.as_secs(),
        half.1 / 1024,
        last.1 / 1024,
        half.2,
        last.2
    );
}
