//! Ingestion of signed Flux events, load from `wrk` in its own process (Debian's `wrk`:
//! `apt-get install wrk`), against three references started in the same run and then
//! the release `promoter serve` binary in local mode:
//!
//! - bare axum: answers 202;
//! - axum + HMAC: checks the `X-Signature` of the body with its pipeline's key, 202;
//! - the durable reference: axum + HMAC + the least a durable 202 costs, each body
//!   appended to a file by one writer thread that group-commits with one fsync per batch
//!   before answering every request of the batch;
//! - Promoter: new promotions (each body a new version: a durable record, 202), replays
//!   (bodies accepted before: 409) and ignored events (a reason that is no deployment:
//!   200).
//!
//! Targets: new promotions at least 0.5 of the durable reference's throughput with a p99
//! at most 3 times its p99; replays and ignored events at least 0.6 of axum + HMAC's
//! throughput. Every answer is checked: wrk counts those of 400 and above, Promoter's
//! events metric says what each request it answered was; a run whose answers are not all
//! the expected one is reported as such and its ratio is not taken.
//!
//! Each Promoter run comes right after the reference it is compared with, so that both
//! see much the same machine. The bodies are written to files (`<path> TAB <signature>
//! TAB <body>` a line, one file per wrk thread) that `ingest.lua` reads a line per request.

use promoter::client::{deployment_event, signature_header};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const THREADS: usize = 2;
const CONNECTIONS: usize = 50;
const DURATION: Duration = Duration::from_secs(10);
/// A run against each server before any is measured: connections, caches, allocator.
const WARM_UP: Duration = Duration::from_secs(2);
/// Pipelines the events are spread over (each with its own events key).
const PIPELINES: usize = 20;
/// Distinct bodies cycled through where repeating them is harmless or intended: the
/// references (which keep nothing), replays (all accepted before) and ignored events
/// (never recorded).
const CYCLED: usize = 20_000;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ingest.lua");

fn key(pipeline: usize) -> Vec<u8> {
    format!("bench-events-key-{pipeline:03}").into_bytes()
}

fn name(pipeline: usize) -> String {
    format!("app-{pipeline:03}")
}

/// One signed event as a line of the events files; `version` makes it distinct, `reason`
/// (when given) replaces the successful upgrade's.
fn event_line(pipeline: usize, version: &str, reason: Option<&str>) -> Vec<u8> {
    let name = name(pipeline);
    let mut event = deployment_event("HelmRelease", &format!("{name}-dev"), &name, version);
    if let Some(reason) = reason {
        event.reason = reason.to_string();
    }
    let body = serde_json::to_vec(&event).unwrap();
    let mut line = format!(
        "/promotion/flux-system/{name}/dev\t{}\t",
        signature_header(&key(pipeline), &body)
    )
    .into_bytes();
    line.extend_from_slice(&body);
    line
}

/// Writes `lines` round-robin to `<prefix>.0` … `<prefix>.<THREADS - 1>`.
fn write_events(prefix: &Path, lines: impl Iterator<Item = Vec<u8>>) {
    let mut files: Vec<_> = (0..THREADS)
        .map(|i| {
            std::io::BufWriter::new(
                std::fs::File::create(format!("{}.{i}", prefix.display())).unwrap(),
            )
        })
        .collect();
    for (n, line) in lines.enumerate() {
        let file = &mut files[n % THREADS];
        file.write_all(&line).unwrap();
        file.write_all(b"\n").unwrap();
    }
    for mut f in files {
        f.flush().unwrap();
    }
}

/// What one wrk run measured (from the line `ingest.lua` prints when wrk is done).
struct Run {
    requests: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Answers of 400 and above.
    non2xx: u64,
    socket_errors: u64,
    /// Times a wrk thread came to the end of its events file and started it again.
    wrapped: u64,
    /// CPU the server used during the run, per request.
    cpu_per_request: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn wrk_installed() -> bool {
    match Command::new("wrk").arg("-v").output() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run wrk: {e}"),
    }
}

/// Runs `wrk -t2 -c50 -d<duration> --latency -s ingest.lua` on `base` with the events
/// of `prefix`; `server` is the pid whose CPU time the run is charged.
fn wrk(base: &str, prefix: &Path, duration: Duration, server: u32) -> Run {
    let cpu = cpu_time(server);
    let output = Command::new("wrk")
        .args([
            format!("-t{THREADS}"),
            format!("-c{CONNECTIONS}"),
            format!("-d{}s", duration.as_secs()),
            "--latency".into(),
            "-s".into(),
            SCRIPT.into(),
            base.into(),
            "--".into(),
            prefix.display().to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let cpu = cpu_time(server) - cpu;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "wrk failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("bench-result "))
        .unwrap_or_else(|| panic!("wrk printed no result line:\n{stdout}"));
    let fields: BTreeMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    let f = |k: &str| *fields.get(k).unwrap_or_else(|| panic!("no {k} in {line}"));
    let requests = f("requests");
    Run {
        requests,
        seconds: f("duration_us") as f64 / 1e6,
        p50: Duration::from_micros(f("p50_us")),
        p99: Duration::from_micros(f("p99_us")),
        max: Duration::from_micros(f("max_us")),
        non2xx: f("non2xx"),
        socket_errors: f("connect") + f("read") + f("write") + f("timeout"),
        wrapped: f("wrapped"),
        cpu_per_request: cpu / requests.max(1) as u32,
    }
}

/// CPU time (user + system) process `pid` has used, from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// The HMAC check the references make: the pipeline's key from the path, the body's
/// `X-Signature` checked with it (Promoter's own verification).
fn signed(
    keys: &BTreeMap<String, Vec<u8>>,
    name: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> bool {
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    keys.get(name)
        .is_some_and(|key| promoter::signature::verify(signature, key, body).is_ok())
}

/// The durable reference's writer: takes one body, then whatever else is queued, appends
/// them, fsyncs once, and only then answers every request of the batch.
fn durable_writer(
    path: PathBuf,
    rx: std::sync::mpsc::Receiver<(axum::body::Bytes, tokio::sync::oneshot::Sender<()>)>,
) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buffer = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        buffer.clear();
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

type Path3 = axum::extract::Path<(String, String, String)>;

/// Starts the three references; returns their ports (bare, HMAC, durable).
fn start_references(rt: &tokio::runtime::Runtime, dir: &Path) -> [u16; 3] {
    let keys: Arc<BTreeMap<String, Vec<u8>>> =
        Arc::new((0..PIPELINES).map(|p| (name(p), key(p))).collect());
    let route = "/promotion/{ns}/{name}/{env}";
    let bare = axum::Router::new().route(
        route,
        axum::routing::post(|_body: axum::body::Bytes| async { axum::http::StatusCode::ACCEPTED }),
    );
    let hmac = axum::Router::new().route(
        route,
        axum::routing::post({
            let keys = keys.clone();
            move |axum::extract::Path((_, name, _)): Path3,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| async move {
                if signed(&keys, &name, &headers, &body) {
                    axum::http::StatusCode::ACCEPTED
                } else {
                    axum::http::StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let (to_writer, rx) = std::sync::mpsc::sync_channel(4096);
    let journal = dir.join("durable-reference.log");
    std::thread::spawn(move || durable_writer(journal, rx));
    let durable = axum::Router::new().route(
        route,
        axum::routing::post(
            move |axum::extract::Path((_, name, _)): Path3,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let (keys, to_writer) = (keys.clone(), to_writer.clone());
                async move {
                    if !signed(&keys, &name, &headers, &body) {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let (reply, done) = tokio::sync::oneshot::channel();
                    to_writer.send((body, reply)).unwrap();
                    done.await.unwrap();
                    axum::http::StatusCode::ACCEPTED
                }
            },
        ),
    );
    [bare, hmac, durable].map(|router| {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move { axum::serve(listener, router).await.unwrap() });
        port
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Pipelines and Secrets of the run: `PIPELINES` pipelines dev -> prod, promotions
/// into prod manual, so no strategy runs while the bench measures.
fn write_manifests(dir: &Path) {
    let mut yaml = String::new();
    for p in 0..PIPELINES {
        let name = name(p);
        yaml += &format!(
            "apiVersion: pipelines.weave.works/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}, namespace: flux-system}}\n\
             spec:\n  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: {name}}}\n  environments:\n\
             \x20   - name: dev\n      targets: [{{namespace: {name}-dev}}]\n    - name: prod\n      targets: [{{namespace: {name}-prod}}]\n\
             \x20 promotion:\n    manual: true\n    secretRef: {{name: {name}-events}}\n    webhook: {{url: 'http://127.0.0.1:9/never'}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-events, namespace: flux-system}}\nstringData: {{hmac-key: {}}}\n---\n",
            String::from_utf8(key(p)).unwrap()
        );
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("pipelines.yaml"), yaml).unwrap();
}

/// The promoter server, killed when dropped.
struct Server {
    child: Child,
    webhook: u16,
    admin: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_promoter(rt: &tokio::runtime::Runtime, dir: &Path) -> Server {
    write_manifests(&dir.join("manifests"));
    let (webhook, admin) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("promoter.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_promoter"))
        .arg("serve")
        .arg("--manifests")
        .arg(dir.join("manifests"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--webhook-addr", &format!("127.0.0.1:{webhook}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start promoter serve");
    let server = Server {
        child,
        webhook,
        admin,
    };
    let ready = rt.block_on(async {
        let client = reqwest::Client::new();
        for _ in 0..600 {
            let answer = client
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    assert!(
        ready,
        "promoter did not get ready; see {}",
        dir.join("promoter.log").display()
    );
    server
}

/// Promoter's count of events answered, by result (accepted, replay, ignored, …).
fn results(rt: &tokio::runtime::Runtime, admin: u16) -> BTreeMap<String, u64> {
    let text = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("promoter_events_received_total{"))
    {
        let result = line
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *counts.entry(result.to_string()).or_default() += value as u64;
    }
    counts
}

/// Sends every line of `lines` once (concurrently), expecting 202 for each: the bodies
/// the replay run sends again.
fn prime(rt: &tokio::runtime::Runtime, port: u16, lines: Vec<Vec<u8>>) {
    rt.block_on(async {
        let client = reqwest::Client::new();
        let queue = Arc::new(std::sync::Mutex::new(lines));
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let (client, queue) = (client.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(line) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let mut parts = line.splitn(3, |b| *b == b'\t');
                    let (path, signature, body) = (
                        String::from_utf8(parts.next().unwrap().to_vec()).unwrap(),
                        String::from_utf8(parts.next().unwrap().to_vec()).unwrap(),
                        parts.next().unwrap().to_vec(),
                    );
                    let answer = client
                        .post(format!("http://127.0.0.1:{port}{path}"))
                        .header("content-type", "application/json")
                        .header("x-signature", signature)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = answer.status();
                    let text = answer.text().await.unwrap();
                    assert_eq!(status, 202, "priming the replays: {text}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// A measured run and whether every answer was the one expected (else why not).
struct Measured {
    name: &'static str,
    run: Run,
    wrong: Option<String>,
}

fn print_run(m: &Measured) {
    let r = &m.run;
    println!(
        "{:<46} {:>8.0} req/s  p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  {:>5.1} µs CPU/req  {}",
        m.name,
        r.rate(),
        r.p50,
        r.p99,
        r.max,
        r.cpu_per_request.as_secs_f64() * 1e6,
        m.wrong.as_deref().unwrap_or("answers as expected")
    );
}

/// What the answers of a reference run say: all 202 (no answer of 400 and above, no
/// socket error).
fn reference_answers(run: &Run) -> Option<String> {
    (run.non2xx > 0 || run.socket_errors > 0).then(|| {
        format!(
            "UNEXPECTED ANSWERS: {} of {} were 4xx/5xx where 202 was expected, {} socket errors",
            run.non2xx, run.requests, run.socket_errors
        )
    })
}

/// What Promoter's answers during a run were: wrk's count of 4xx/5xx and the events
/// metric's results, against the one expected (`result`, with its status).
fn promoter_answers(
    run: &Run,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    result: &str,
    status: u16,
) -> Option<String> {
    let delta: BTreeMap<&str, u64> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let others: u64 = delta
        .iter()
        .filter(|(k, _)| **k != result)
        .map(|(_, v)| v)
        .sum();
    let expected = delta.get(result).copied().unwrap_or(0);
    // wrk stops with requests in flight: the server may have answered up to one more per
    // connection than wrk counted.
    let counted = (run.requests..=run.requests + CONNECTIONS as u64).contains(&expected);
    let non2xx_wrong = if status >= 400 {
        run.non2xx != run.requests
    } else {
        run.non2xx != 0
    };
    (others > 0 || !counted || non2xx_wrong || run.socket_errors > 0 || (status == 202 && run.wrapped > 0))
        .then(|| {
            format!(
                "UNEXPECTED ANSWERS (expected {status} {result}): server results {delta:?}, \
                 wrk: {} requests, {} of them 4xx/5xx, {} socket errors, {} wraps of the events files",
                run.requests, run.non2xx, run.socket_errors, run.wrapped
            )
        })
}

/// `value / reference`, and whether it meets `target` (`at_least`: a floor, else a cap),
/// or why it was not taken.
fn ratio(label: &str, value: f64, reference: f64, target: f64, at_least: bool, valid: bool) {
    if !valid {
        println!("{label}: not measured (unexpected answers above)");
        return;
    }
    let r = value / reference;
    let met = if at_least { r >= target } else { r <= target };
    println!(
        "{label}: {r:.2} (target {} {target}: {})",
        if at_least { ">=" } else { "<=" },
        if met { "met" } else { "NOT met" }
    );
}

fn main() {
    if !wrk_installed() {
        eprintln!(
            "the ingest bench drives the load with wrk in its own process, and wrk is not \
             installed: `apt-get install wrk` (Debian, Ubuntu), or build it from \
             https://github.com/wg/wrk"
        );
        std::process::exit(2);
    }
    promoter::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("promoter-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let me = std::process::id();
    let started = Instant::now();

    // The references keep nothing: CYCLED distinct new-promotion bodies, over and over.
    let cycled = dir.join("cycled");
    write_events(
        &cycled,
        (0..CYCLED).map(|i| event_line(i % PIPELINES, &format!("ref-{i:07}"), None)),
    );
    let [bare, hmac, durable] = start_references(&rt, &dir);
    let server = start_promoter(&rt, &dir);
    let pid = server.child.id();
    let promoter = format!("http://127.0.0.1:{}", server.webhook);
    // Ignored events: not a deployment, never recorded; CYCLED distinct bodies.
    let ignored = dir.join("ignored");
    write_events(
        &ignored,
        (0..CYCLED).map(|i| {
            event_line(
                i % PIPELINES,
                &format!("ignored-{i:07}"),
                Some("DependencyNotReady"),
            )
        }),
    );
    // Replays: CYCLED bodies accepted once first (not measured), then sent again.
    let replays: Vec<Vec<u8>> = (0..CYCLED)
        .map(|i| event_line(i % PIPELINES, &format!("replayed-{i:07}"), None))
        .collect();
    write_events(&dir.join("replays"), replays.iter().cloned());
    let references = [bare, hmac, durable].map(|port| format!("http://127.0.0.1:{port}"));
    for base in &references {
        wrk(base, &cycled, WARM_UP, me);
    }
    wrk(&promoter, &ignored, WARM_UP, pid);
    prime(&rt, server.webhook, replays);

    // Each Promoter run right after the reference it is compared with, so that both see
    // much the same machine (other processes' load comes and goes).
    let reference = |name: &'static str, base: &str| {
        let run = wrk(base, &cycled, DURATION, me);
        let wrong = reference_answers(&run);
        Measured { name, run, wrong }
    };
    let promoter_run = |name: &'static str, prefix: &Path, result: &str, status: u16| {
        let before = results(&rt, server.admin);
        let run = wrk(&promoter, prefix, DURATION, pid);
        let after = results(&rt, server.admin);
        let wrong = promoter_answers(&run, &before, &after, result, status);
        Measured { name, run, wrong }
    };
    let mut measured = vec![
        reference("bare axum (202)", &references[0]),
        reference("axum + HMAC + group-committed fsync (202)", &references[2]),
    ];
    // New promotions: every body a version never seen, so enough of them for the whole
    // run. Promoter does all the durable reference does and more, so 1.5 times what that
    // reached (at least 100,000) is plenty; a wrap would be reported (409 replays).
    let fresh = dir.join("new");
    let count = ((measured[1].run.rate() * DURATION.as_secs_f64() * 1.5) as usize).max(100_000);
    write_events(
        &fresh,
        (0..count).map(|i| event_line(i % PIPELINES, &format!("build-{i:07}"), None)),
    );
    measured.push(promoter_run(
        "promoter: new promotions (202)",
        &fresh,
        "accepted",
        202,
    ));
    measured.push(reference("axum + HMAC (202)", &references[1]));
    let replays = dir.join("replays");
    measured.push(promoter_run(
        "promoter: replays (409)",
        &replays,
        "replay",
        409,
    ));
    measured.push(promoter_run(
        "promoter: ignored events (200)",
        &ignored,
        "ignored",
        200,
    ));
    drop(server);

    println!(
        "ingest: wrk -t{THREADS} -c{CONNECTIONS} -d{}s --latency -s benches/ingest.lua, signed \
         Flux events over {PIPELINES} pipelines, each server in turn (each Promoter run right \
         after its reference); CPU is the server's",
        DURATION.as_secs()
    );
    for m in &measured {
        print_run(m);
    }
    // (what, measured run, reference run, p99 instead of throughput, target, floor or cap)
    let targets = [
        (
            "new promotions / durable reference, throughput",
            2,
            1,
            false,
            0.5,
            true,
        ),
        (
            "new promotions / durable reference, p99",
            2,
            1,
            true,
            3.0,
            false,
        ),
        ("replays / axum + HMAC, throughput", 4, 3, false, 0.6, true),
        (
            "ignored events / axum + HMAC, throughput",
            5,
            3,
            false,
            0.6,
            true,
        ),
    ];
    for (label, i, reference, p99, target, at_least) in targets {
        let figure = |m: &Measured| {
            if p99 {
                m.run.p99.as_secs_f64()
            } else {
                m.run.rate()
            }
        };
        ratio(
            label,
            figure(&measured[i]),
            figure(&measured[reference]),
            target,
            at_least,
            measured[i].wrong.is_none() && measured[reference].wrong.is_none(),
        );
    }
    let (h, r) = (&measured[3].run, &measured[1].run);
    println!(
        "for reference: axum + HMAC {:.2} of bare axum, the durable reference {:.2}; whole run {:.0?}",
        h.rate() / measured[0].run.rate(),
        r.rate() / measured[0].run.rate(),
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
