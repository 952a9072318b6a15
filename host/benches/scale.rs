//! Local mode at size: 1,000,000 promotion records across 1,000 pipelines, then the
//! release binary started on them. Prints start-to-ready, resident memory idle and while
//! the admin API is paged through, and the latency of a page of 100. Never fails on a
//! figure. Targets (issue #21): idle RSS ≤ 128 MiB, start-to-ready ≤ 2 s, RSS ≤ 128 MiB
//! while queried, a page of 100 in ≤ 50 ms p99.
//!
//! Run: cargo bench -p promoter --bench scale
//! (PROMOTER_SCALE_RECORDS to change the count; the records are written once into
//! $TMPDIR/promoter-scale-<count> and reused by later runs.)

use promoter::promotion::{AppRef, EventInfo, PipelineRef, Target};
use promoter::record::{LocalStore, Phase, Promotion};
use std::time::{Duration, Instant};

const PIPELINES: usize = 1000;
const NAMESPACES: usize = 50;
const PAGE: usize = 100;
const QUERIES: usize = 400;

fn main() {
    let records = std::env::var("PROMOTER_SCALE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000usize);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(records));
}

fn namespace(i: usize) -> String {
    format!("team-{:02}", i % NAMESPACES)
}

fn name(i: usize) -> String {
    format!("app-{i:04}")
}

/// Record `n` of pipeline `i`: version 1.<n/2>.0 into test (from dev) or prod (from test),
/// finished; 8 % failed, the rest succeeded; created one a second, newest last.
fn record(i: usize, n: usize, start: u64) -> Promotion {
    let (ns, app) = (namespace(i), name(i));
    let version = format!("1.{}.0", n / 2);
    let (source, env) = if n.is_multiple_of(2) {
        ("dev", "test")
    } else {
        ("test", "prod")
    };
    let created = start + (n * PIPELINES + i) as u64 * 5;
    let failed = (i * 7 + n * 13) % 100 < 8;
    Promotion {
        id: promoter::decide::promotion_id(&ns, &app, env, &version),
        pipeline: PipelineRef {
            namespace: ns.clone(),
            name: app.clone(),
        },
        source_environment: source.into(),
        targets: vec![Target {
            namespace: format!("{app}-{env}"),
            cluster: None,
        }],
        app: AppRef {
            api_version: "helm.toolkit.fluxcd.io/v2".into(),
            kind: "HelmRelease".into(),
            name: app.clone(),
        },
        strategy: promoter::pipeline::StrategyRef {
            plugin: "webhook".into(),
            config: serde_json::json!({}),
        },
        event: EventInfo {
            kind: "HelmRelease".into(),
            name: app.clone(),
            namespace: format!("{app}-{source}"),
            reason: "UpgradeSucceeded".into(),
            severity: "info".into(),
            message: format!("Helm upgrade succeeded for release {app} with chart {app}@{version}"),
            timestamp: "2026-12-01T10:00:00Z".into(),
            reporting_controller: "helm-controller".into(),
            metadata: [("revision".to_string(), version.clone())].into(),
        },
        phase: if failed {
            Phase::Failed
        } else {
            Phase::Succeeded
        },
        attempts: 1,
        last_error: failed.then(|| "webhook answered HTTP 400: bad request".to_string()),
        outcome_url: (!failed).then(|| format!("https://ci.example.com/{app}/{n}")),
        created_at: created,
        updated_at: created + 40_000,
        finished_at: Some(created + 40_000),
        ..Promotion::blank(env, &version)
    }
}

/// Writes the records (once; reused by later runs with the same count).
async fn seed(dir: &std::path::Path, records: usize) {
    if dir.join("seeded").exists() {
        println!("reusing {} ({records} records)", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    let started = Instant::now();
    let store = LocalStore::open(dir).unwrap();
    let per_pipeline = records / PIPELINES;
    // Start ~20 days ago (inside the default --keep-finished), 5 ms apart.
    let start = promoter::record::now_ms() - (records as u64 * 5) - 3_600_000;
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    for n in 0..per_pipeline {
        for i in 0..PIPELINES {
            batch.push(record(i, n, start));
            if batch.len() == 500 {
                batches.push(std::mem::take(&mut batch));
            }
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let total = batches.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, batch) in batches.into_iter().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .accept(format!("seed {k}").as_bytes(), batch)
                .await
                .unwrap();
        });
        while tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
        if k % 200 == 0 {
            println!("  seeded {k}/{total} batches ({:.0?})", started.elapsed());
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    drop(store);
    // The writer thread checkpoints and lets go of the file.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(dir.join("seeded"), b"").unwrap();
    println!(
        "seeded {records} records in {:.1?} ({} MiB on disk)",
        started.elapsed(),
        std::fs::metadata(dir.join("promotions.redb"))
            .unwrap()
            .len()
            >> 20
    );
}

/// Pipelines app-0000..app-0999 (dev → test → prod) in 50 namespaces, with their
/// event Secret.
fn manifests(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for i in 0..PIPELINES {
        let (ns, app) = (namespace(i), name(i));
        text.push_str(&format!(
            "apiVersion: pipelines.weave.works/v1alpha1\nkind: Pipeline\nmetadata: {{name: {app}, namespace: {ns}}}\n\
             spec:\n  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: {app}}}\n  environments:\n\
             \x20   - name: dev\n      targets: [{{namespace: {app}-dev}}]\n\
             \x20   - name: test\n      targets: [{{namespace: {app}-test}}]\n\
             \x20   - name: prod\n      targets: [{{namespace: {app}-prod}}]\n\
             \x20 promotion:\n    secretRef: {{name: events}}\n    webhook: {{url: 'http://127.0.0.1:9/job/promote'}}\n---\n"
        ));
    }
    for k in 0..NAMESPACES {
        let ns = namespace(k);
        text.push_str(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: events, namespace: {ns}}}\n\
             stringData: {{hmac-key: {ns}-events-0123456789abcdef0123456789abcdef}}\n---\n"
        ));
    }
    std::fs::write(dir.join("pipelines.yaml"), text).unwrap();
}

/// The server process, killed however the bench ends (a panic included): it holds the
/// data directory's lock.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            >> 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn run(records: usize) {
    promoter::install_crypto_provider();
    let base = std::env::temp_dir().join(format!("promoter-scale-{records}"));
    let data = base.join("data");
    seed(&data, records).await;
    let folder = base.join("manifests");
    manifests(&folder);

    let admin = free_port();
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .args(["serve", "--manifests"])
        .arg(&folder)
        .arg("--data-dir")
        .arg(&data)
        .args(["--webhook-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(base.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let child = Child(child);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{admin}");
    loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, _) = memory(pid);

    // Pages: the newest 100, then onward with continue; one pipeline's; one phase's.
    let mut latencies = Vec::new();
    let mut next: Option<String> = None;
    for q in 0..QUERIES {
        let path = match q % 4 {
            0 | 1 => match &next {
                Some(token) => format!("/promotions?limit={PAGE}&continue={token}"),
                None => format!("/promotions?limit={PAGE}"),
            },
            2 => format!(
                "/promotions?limit={PAGE}&pipeline={}/{}",
                namespace(q % PIPELINES),
                name(q % PIPELINES)
            ),
            _ => format!("/promotions?limit={PAGE}&phase=failed"),
        };
        let at = Instant::now();
        let body: serde_json::Value = client
            .get(format!("{url}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        latencies.push(at.elapsed());
        assert!(body["promotions"].as_array().is_some(), "{body}");
        if q % 4 < 2 {
            next = body["continue"].as_str().map(String::from);
        }
    }
    latencies.sort();
    let (queried, peak) = memory(pid);
    drop(child);

    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("\nlocal mode, {records} records across {PIPELINES} pipelines");
    println!(
        "  start to ready:          {:>8.2?}   (target <= 2 s: {})",
        ready,
        mark(ready <= Duration::from_secs(2))
    );
    println!(
        "  RSS idle:                {idle:>5} MiB   (target <= 128 MiB: {})",
        mark(idle <= 128)
    );
    println!(
        "  RSS after {QUERIES} pages:    {queried:>5} MiB, peak {peak} MiB   (target <= 128 MiB: {})",
        mark(peak <= 128)
    );
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  page of {PAGE}:             p50 {p50:.1?}, p99 {p99:.1?}, max {:.1?}   (target p99 <= 50 ms: {})",
        latencies.last().unwrap(),
        mark(p99 <= Duration::from_millis(50))
    );
}
