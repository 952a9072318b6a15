//! Ingestion throughput and latency for signed events through the full path
//! (signature, parse, replay check, decision, durable group-committed record, 202),
//! beside a bare axum handler on the same machine in the same run.
//! Target: at least half the bare handler's throughput.
//!
//! For reference only (the target stays the bare handler), a third server: the bare
//! handler plus the least a durable answer needs, each body appended to a file by one
//! writer thread that group-commits with one fsync per batch before answering. It shows
//! what durability alone costs on the machine at hand.

use promoter::client::{deployment_event, signature_header};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS: usize = 10_000;
const SENDERS: usize = 50;
/// Events sent to each server before measuring (connections, caches, allocator).
const WARM_UP: usize = 500;
const KEY: &[u8] = b"bench-events-key";

/// The durable baseline's writer: takes one body, then whatever else is queued, appends
/// them, fsyncs once, and only then answers every sender of the batch.
fn durable_writer(
    path: std::path::PathBuf,
    rx: std::sync::mpsc::Receiver<(axum::body::Bytes, tokio::sync::oneshot::Sender<()>)>,
) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        let mut buffer = Vec::new();
        for (body, _) in &batch {
            buffer.extend_from_slice(body);
            buffer.push(b'\n');
        }
        file.write_all(&buffer).unwrap();
        file.sync_data().unwrap();
        for (_, reply) in batch {
            let _ = reply.send(());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(port: u16) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// Posts every body with `SENDERS` concurrent keep-alive clients; returns elapsed time,
/// per-request latencies and status counts.
async fn load(
    url: String,
    bodies: Vec<(Vec<u8>, String)>,
) -> (
    Duration,
    Vec<Duration>,
    std::collections::BTreeMap<u16, usize>,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(SENDERS)
        .build()
        .unwrap();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let Some((body, signature)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                // Read the answer whole, as a real client does: a connection whose
                // response body was left unread cannot go back to the pool.
                response.bytes().await.unwrap();
                out.push((t.elapsed(), status));
            }
            out
        }));
    }
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        for (latency, status) in t.await.unwrap() {
            latencies.push(latency);
            *statuses.entry(status).or_default() += 1;
        }
    }
    (started.elapsed(), latencies, statuses)
}

/// CPU time this process has used (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5), here 11 and 12; USER_HZ is 100.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn report(name: &str, elapsed: Duration, mut latencies: Vec<Duration>) -> f64 {
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{name:<34} {rate:>9.0} events/s   p50 {:>9.2?}   p99 {:>9.2?}",
        p(0.5),
        p(0.99)
    );
    rate
}

fn bodies() -> Vec<(Vec<u8>, String)> {
    // Distinct, non-semver revisions: every event is accepted and durably recorded.
    (0..EVENTS + WARM_UP)
        .map(|i| {
            let body = serde_json::to_vec(&deployment_event(
                "HelmRelease",
                "podinfo-dev",
                "podinfo",
                &format!("build-{i:06}"),
            ))
            .unwrap();
            let signature = signature_header(KEY, &body);
            (body, signature)
        })
        .collect()
}

fn main() {
    promoter::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Baseline: a bare axum handler on the same path.
        let bare_port = free_port();
        let bare = axum::Router::new().route(
            "/promotion/{ns}/{name}/{env}",
            axum::routing::post(|_body: axum::body::Bytes| async { axum::http::StatusCode::ACCEPTED }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", bare_port)).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, bare).await.unwrap() });

        // Reference: the bare handler made durable (append + group-committed fsync).
        let dir = std::env::temp_dir().join(format!("promoter-bench-ingest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let durable_port = free_port();
        let (to_writer, rx) = std::sync::mpsc::sync_channel(4096);
        let journal = dir.join("durable-baseline.log");
        std::thread::spawn(move || durable_writer(journal, rx));
        let durable = axum::Router::new().route(
            "/promotion/{ns}/{name}/{env}",
            axum::routing::post(move |body: axum::body::Bytes| {
                let to_writer = to_writer.clone();
                async move {
                    let (reply, done) = tokio::sync::oneshot::channel();
                    to_writer.send((body, reply)).unwrap();
                    done.await.unwrap();
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", durable_port)).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, durable).await.unwrap() });

        // Promoter in local mode; prod is manual so no plugin runs during the measurement.
        std::fs::write(
            dir.join("manifests/pipeline.yaml"),
            format!(
                "apiVersion: pipelines.weave.works/v1alpha1\nkind: Pipeline\nmetadata: {{name: podinfo, namespace: flux-system}}\n\
                 spec:\n  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: podinfo}}\n  environments:\n\
                 \x20   - name: dev\n      targets: [{{namespace: podinfo-dev}}]\n    - name: prod\n      targets: [{{namespace: podinfo-prod}}]\n\
                 \x20 promotion:\n    manual: true\n    secretRef: {{name: events}}\n    webhook: {{url: 'http://127.0.0.1:9/never'}}\n---\n\
                 apiVersion: v1\nkind: Secret\nmetadata: {{name: events, namespace: flux-system}}\nstringData: {{hmac-key: {}}}\n",
                std::str::from_utf8(KEY).unwrap()
            ),
        )
        .unwrap();
        let (webhook_port, admin_port) = (free_port(), free_port());
        let settings = promoter::serve::Settings {
            source: promoter::serve::Source::Folder(dir.join("manifests")),
            data_dir: dir.join("data"),
            webhook_addr: format!("127.0.0.1:{webhook_port}").parse().unwrap(),
            admin_addr: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            tls: None,
            allow_unsigned: false,
            require_promoted_source: false,
            max_event_age: Duration::from_secs(600),
            body_limit: 1 << 20,
            max_plugin_size: promoter::oci::DEFAULT_MAX_SIZE,
            git: Default::default(),
            retry: Default::default(),
            workers: 4,
            builtin_private_networks: false,
            watch_interval: Duration::from_secs(3600),
            keep_finished: Duration::from_secs(3600),
            accept_timeout: Duration::from_secs(10),
            events_addr: None,
            admin_token_file: None,
            drain_timeout: Duration::from_secs(5),
        };
        tokio::spawn(async move { promoter::serve::run(settings).await.unwrap() });
        wait_listening(bare_port).await;
        wait_listening(durable_port).await;
        wait_listening(webhook_port).await;

        let mut bodies = bodies();
        let warm_up = bodies.split_off(EVENTS);
        load(format!("http://127.0.0.1:{bare_port}/promotion/flux-system/podinfo/dev"), warm_up.clone()).await;
        load(format!("http://127.0.0.1:{durable_port}/promotion/flux-system/podinfo/dev"), warm_up.clone()).await;
        load(format!("http://127.0.0.1:{webhook_port}/promotion/flux-system/podinfo/dev"), warm_up).await;
        let cpu = cpu_time();
        let (bare_elapsed, bare_lat, _) =
            load(format!("http://127.0.0.1:{bare_port}/promotion/flux-system/podinfo/dev"), bodies.clone()).await;
        let bare_cpu = cpu_time() - cpu;
        let cpu = cpu_time();
        let (durable_elapsed, durable_lat, _) =
            load(format!("http://127.0.0.1:{durable_port}/promotion/flux-system/podinfo/dev"), bodies.clone()).await;
        let durable_cpu = cpu_time() - cpu;
        let cpu = cpu_time();
        let (full_elapsed, full_lat, statuses) =
            load(format!("http://127.0.0.1:{webhook_port}/promotion/flux-system/podinfo/dev"), bodies).await;
        let full_cpu = cpu_time() - cpu;

        println!("{EVENTS} signed events, {SENDERS} concurrent senders, one run; CPU is the whole process's (senders included)");
        let bare_rate = report("bare axum handler (baseline)", bare_elapsed, bare_lat);
        println!("{:<34} {:>9.0} µs CPU/event", "", bare_cpu.as_secs_f64() * 1e6 / EVENTS as f64);
        let durable_rate = report("bare handler + fsync'd append", durable_elapsed, durable_lat);
        println!("{:<34} {:>9.0} µs CPU/event", "", durable_cpu.as_secs_f64() * 1e6 / EVENTS as f64);
        let full_rate = report("promoter, full path, durable", full_elapsed, full_lat);
        println!("{:<34} {:>9.0} µs CPU/event", "", full_cpu.as_secs_f64() * 1e6 / EVENTS as f64);
        println!("promoter statuses: {statuses:?}");
        println!(
            "throughput ratio: {:.2} of the bare handler; target >= 0.50: {}",
            full_rate / bare_rate,
            if full_rate / bare_rate >= 0.5 { "met" } else { "NOT met" }
        );
        println!(
            "for reference: the bare handler with an fsync'd append reaches {:.2} of the bare one; promoter reaches {:.2} of it",
            durable_rate / bare_rate,
            full_rate / durable_rate
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
