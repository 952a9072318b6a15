//! Fault injection: a receiver that flaps, a data directory that fills up, and a server
//! killed with SIGKILL every few seconds under a steady event stream. In each, every
//! accepted event ends in exactly one promotion, delivered under one idempotency key.

mod support;

use promoter::client::{deployment_event, signature_header};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{EVENTS_KEY, RESET, Receiver, STALL, Server, event_url, scratch, send, start};

#[tokio::test]
async fn a_flapping_receiver_gets_the_promotion_once_it_recovers_under_one_idempotency_key() {
    let ci = Receiver::start(202, "queued").await;
    // An error, a reset connection, a rate limit, a stall past the HTTP timeout, an
    // unavailable answer; then it recovers.
    ci.then_answer(&[
        (500, &[]),
        (RESET, &[]),
        (429, &[("Retry-After", "1")]),
        (STALL, &[]),
        (503, &[]),
    ]);
    let server = start("flapping", &ci, &[]).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "2.0.0");
    let (status, text) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    let all = server
        .wait_for("the promotion after the receiver recovers", |all| {
            all[0]["phase"] == "succeeded" || all[0]["phase"] == "failed"
        })
        .await;
    assert_eq!(all[0]["phase"], "succeeded", "{all:#?}\n{}", server.logs());
    assert_eq!(
        all[0]["attempts"], 6,
        "five failures of every kind, then success"
    );
    let received = ci.received();
    assert_eq!(received.len(), 6);
    let keys: HashSet<_> = received
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "every attempt carries the same idempotency key"
    );
    assert_eq!(all.len(), 1, "one promotion");
}

/// Mounts a tmpfs of `size` at `dir` (the test runs as root in CI), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    let mut chunk = block.as_slice();
    loop {
        match f.write(chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => {
                // ENOSPC; finish with smaller writes so no byte is left free.
                if chunk.len() == 1 {
                    break;
                }
                chunk = &block[..chunk.len() / 2];
            }
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_data_dir_answers_503_keeps_nothing_it_could_not_write_and_recovers() {
    let dir = scratch("full-disk");
    let Some(_mount) = Tmpfs::mount(&dir.join("data"), "16m") else {
        mount_unavailable("a tmpfs");
        return;
    };
    let ci = Receiver::start(202, "queued").await;
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    support::write_manifests(&manifests, &ci.url("/job/promote"));
    let mut server = Server::start(&manifests, &dir.join("data"), &[]);

    let first = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "3.0.0");
    assert_eq!(send(&server, "dev", &first, Some(EVENTS_KEY)).await.0, 202);

    // The disk fills up while the journal holds changes not yet checkpointed: the next
    // write may be torn, and the checkpoint fails too (after which the database takes no
    // transaction until reopened). Events are refused with 503 and Retry-After, and
    // nothing of them is kept.
    let filler = dir.join("data/filler");
    fill(&filler);
    let mut second = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "3.1.0");
    // Larger than the slack a full filesystem may still have in the journal's last page.
    second.message.push_str(&" (release notes)".repeat(4096));
    let body = serde_json::to_vec(&second).unwrap();
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(event_url(&server, "dev"))
            .header("x-signature", signature_header(EVENTS_KEY, &body))
            .body(body.clone())
            .send()
    };
    for _ in 0..3 {
        let answer = post().await.unwrap();
        assert_eq!(answer.status(), 503, "{}", answer.text().await.unwrap());
        assert_eq!(answer.headers()["retry-after"], "5");
        tokio::time::sleep(Duration::from_millis(700)).await; // checkpoints come and fail
    }
    assert!(
        server.logs().contains("No space left on device"),
        "the cause is logged:\n{}",
        server.logs()
    );
    let (status, why) = server.probe("/readyz").await;
    assert_eq!(status, 503, "not ready while the store cannot write: {why}");
    assert!(why.contains("promotion store"), "{why}");
    assert_eq!(server.probe("/healthz").await.0, 200, "alive all the same");

    // Space again: ready again within seconds, without a write to try it; the same event
    // (Flux retries with the same body) is accepted — it was not half-kept as a replay —
    // and promoted once.
    std::fs::remove_file(&filler).unwrap();
    let mut ready = server.probe("/readyz").await;
    for _ in 0..50 {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = server.probe("/readyz").await;
    }
    assert_eq!(ready.0, 200, "ready once the disk has room: {}", ready.1);
    let answer = post().await.unwrap();
    assert_eq!(answer.status(), 202, "{}", answer.text().await.unwrap());
    let all = server
        .wait_for("both promotions after recovery", |all| {
            all.len() == 2 && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(all[0]["version"], "3.1.0");
    assert_eq!(post().await.unwrap().status(), 409, "now it is a replay");

    // And all of it survives SIGKILL: the store reopened cleanly after the failures.
    server.kill();
    server.restart();
    let all = server.promotions().await;
    let versions: Vec<_> = all.iter().map(|p| p["version"].clone()).collect();
    assert_eq!(versions, ["3.1.0", "3.0.0"]);
    assert_eq!(ci.received().len(), 2, "each promotion delivered once");
}

/// Mounting needs CAP_SYS_ADMIN. .ci/run checks whether this machine allows it and sets
/// PROMOTER_MOUNT_TESTS=1 when it does (and says so in its output); then a failed mount
/// fails the test. Elsewhere the test is skipped, loudly.
fn mount_unavailable(what: &str) {
    assert!(
        std::env::var_os("PROMOTER_MOUNT_TESTS").is_none(),
        "could not mount {what}, though PROMOTER_MOUNT_TESTS says this machine can"
    );
    eprintln!("SKIPPED: mounting {what} is not permitted here (needs CAP_SYS_ADMIN)");
}

#[tokio::test]
async fn sigkill_every_few_seconds_under_a_steady_stream_ends_each_accepted_event_in_one_promotion()
{
    let seconds: u64 = std::env::var("PROMOTER_RESTART_LOOP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let ci = Receiver::start(202, "queued").await;
    let mut server = start("restart-loop", &ci, &[]).await;
    let url = event_url(&server, "dev");

    // One sender, versions in release order, each reported twice (two Flux events). It
    // sends until the kills are done and the last restart has had a few seconds.
    let stopped = Arc::new(AtomicBool::new(false));
    let stop = stopped.clone();
    let sender = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut accepted = HashSet::new();
        let mut sent = HashSet::new();
        let mut n = 0u32;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let version = format!("4.{n}.0");
            for _ in 0..2 {
                let mut event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", &version);
                event.reporting_instance = format!("helm-controller-{}", sent.len());
                let body = serde_json::to_vec(&event).unwrap();
                sent.insert(version.clone());
                let answer = client
                    .post(&url)
                    .header("x-signature", signature_header(EVENTS_KEY, &body))
                    .body(body)
                    .send()
                    .await;
                if let Ok(answer) = answer
                    && answer.status() == 202
                {
                    accepted.insert(version.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (sent, accepted)
    });

    // A kill every 2.5 s of uptime, counted rather than timed: a slow restart on a busy
    // machine makes the run longer, not the kills fewer.
    let kills = seconds / 3;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.restart();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stopped.store(true, Ordering::SeqCst);
    let (sent, accepted) = sender.await.unwrap();
    assert!(
        accepted.len() > 10,
        "a steady stream got through: {}",
        accepted.len()
    );

    let all = server
        .wait_for("every promotion to finish", |all| {
            all.len() >= accepted.len() && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    let mut per_version: HashMap<String, usize> = HashMap::new();
    for p in &all {
        *per_version
            .entry(p["version"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for version in &accepted {
        assert_eq!(
            per_version.get(version),
            Some(&1),
            "accepted {version}: exactly one promotion"
        );
    }
    // Promotions whose 202 was lost to a kill exist too (Flux would resend them); none
    // is for something never sent, none twice.
    for (version, count) in &per_version {
        assert!(sent.contains(version), "{version} was never sent");
        assert_eq!(*count, 1, "{version} promoted {count} times");
    }
    // Deliveries: every promotion reached the receiver under its own key; a delivery cut
    // by a kill is retried under the same key, so a find-or-create receiver acts once.
    let mut keys: HashMap<String, usize> = HashMap::new();
    for r in ci.received() {
        *keys
            .entry(r.header("idempotency-key").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(keys.len(), all.len(), "one idempotency key per promotion");
    eprintln!(
        "{kills} kills, {} versions sent, {} accepted, {} promoted, {} deliveries",
        sent.len(),
        accepted.len(),
        all.len(),
        keys.values().sum::<usize>()
    );
}

/// A read-only bind mount of `dir` onto itself, undone on drop.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn mount(dir: &std::path::Path) -> Option<ReadOnly> {
        let run = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !run(&["--bind"]) {
            return None;
        }
        let guard = ReadOnly(dir.to_path_buf());
        run(&["-o", "remount,ro,bind"]).then_some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn an_unwritable_data_dir_stops_the_server_at_start_naming_it() {
    let dir = scratch("read-only");
    let ci = Receiver::start(202, "queued").await;
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    support::write_manifests(&manifests, &ci.url("/job/promote"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(_ro) = ReadOnly::mount(&data) else {
        mount_unavailable("a read-only bind mount");
        return;
    };
    let stderr = support::serve_fails(&manifests, &data, &[]);
    assert!(
        stderr.contains(&data.display().to_string()) && stderr.contains("Read-only file system"),
        "the error names the directory and the cause: {stderr}"
    );
}
