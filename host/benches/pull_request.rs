//! Event accepted → pull request opened, through the whole path: signed event, decision,
//! durable record, the pull-request plugin in its sandbox, the host's git (fetch into the
//! cached working copy, commit, push) against a real git server (`git http-backend` on
//! loopback) and the fake Gitea API of the end-to-end tests. Beside it, in the same run and
//! against the same servers, the baseline: the same promotion done by plain `git` and `curl`
//! in a shell script (shallow clone, sed on the marked lines, commit, push, create the pull
//! request) — the least a CI job would do, with no lookup of an existing pull request.
//! Interleaved, so both see the same machine. Prints latencies and their ratio; never fails
//! on a time. Run: cargo bench -p promoter --bench pull_request

#[path = "../../tests/support/forges/mod.rs"]
mod fake;
#[path = "../../tests/support/mod.rs"]
mod support;

use fake::gitea::Gitea;
use fake::{Rig, Setup, TOKEN};
use std::time::{Duration, Instant};
use support::{PASSWORD, USER, deployed_in_dev};

/// Measured promotions per side (override with PROMOTER_BENCH_ITERATIONS).
const ITERATIONS: usize = 20;

/// The baseline: what a pipeline script does to open the same pull request.
const SCRIPT: &str = r#"set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null HOME="$work"
git -c "http.extraHeader=$AUTH" clone --quiet --depth 1 --single-branch --branch main "$REPO" "$work/repo"
cd "$work/repo"
git checkout --quiet -b "$BRANCH"
grep -rlF '"flux-system:podinfo:test"}' . --exclude-dir=.git | while read -r f; do
  sed -i -E '/"flux-system:podinfo:test"\}/ s/[0-9]+\.[0-9]+\.[0-9]+/'"$VERSION"'/' "$f"
done
git -c user.name=CI -c user.email=ci@example.invalid commit --quiet -am "promoting version"
git -c "http.extraHeader=$AUTH" push --quiet origin "$BRANCH"
curl -sf -o /dev/null -X POST "$API/repos/org/config/pulls" \
  -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' \
  -d '{"head":"'"$BRANCH"'","base":"main","title":"Promote flux-system/podinfo in test to '"$VERSION"'","body":"flux-system/podinfo/test"}'
"#;

fn main() {
    let iterations = std::env::var("PROMOTER_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(iterations));
}

/// Waits until the forge has an open pull request titled for `version`.
async fn opened(rig: &Rig, version: &str) -> Instant {
    let title = format!("Promote flux-system/podinfo in test to {version}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if rig
            .forge
            .lock()
            .unwrap()
            .pulls
            .iter()
            .any(|p| p["title"] == title.as_str() && p["state"] == "open")
        {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no pull request for {version}:\n{}",
            rig.server.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn promoter(rig: &Rig, version: &str) -> Duration {
    let (status, text) = deployed_in_dev(&rig.server, version).await;
    assert_eq!(status, 202, "{text}");
    let accepted = Instant::now();
    opened(rig, version).await - accepted
}

async fn script(rig: &Rig, api: &str, i: usize, version: &str) -> Duration {
    use base64::Engine;
    let auth = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let start = Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .env("REPO", &rig.repo_url)
        .env("API", api)
        .env("AUTH", auth)
        .env("TOKEN", TOKEN)
        .env("BRANCH", format!("baseline-{i}"))
        .env("VERSION", version)
        .output()
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "baseline script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    opened(rig, version).await;
    took
}

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<34} p50 {:>7.1} ms   p90 {:>7.1} ms   min {:>7.1} ms   max {:>7.1} ms",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );
    at(0.5)
}

async fn run(iterations: usize) {
    let rig = fake::start::<Gitea>("bench-pr", Setup::typed("gitea"), |_| {}).await;
    let api = format!("{}/api/v1", rig.forge.lock().unwrap().origin);

    // The first promotion clones the repository; shown apart, since every later one
    // fetches into the cached working copy.
    let first = promoter(&rig, "7.0.0").await;
    script(&rig, &api, 0, "7.1.0").await; // warms the git server and the page cache

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 1..=iterations {
        ours.push(promoter(&rig, &format!("7.0.{i}")).await);
        theirs.push(script(&rig, &api, i, &format!("7.1.{i}")).await);
    }
    {
        let forge = rig.forge.lock().unwrap();
        assert!(forge.refused.is_empty(), "{:?}", forge.refused);
    }

    println!(
        "event accepted -> pull request opened, {iterations} promotions each (Gitea API fake, git http-backend)"
    );
    println!(
        "{:<34} {:>7.1} ms",
        "promoter, first (clone)",
        first.as_secs_f64() * 1e3
    );
    let p = summary("promoter (fetch into cached copy)", ours);
    let b = summary("baseline: git + curl script", theirs);
    println!(
        "ratio promoter/baseline (p50): {:.2} (below 1: faster than the script)",
        p.as_secs_f64() / b.as_secs_f64()
    );
}
