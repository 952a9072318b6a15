//! The worker: claims pending promotions, runs their strategy, retries with backoff and
//! records every outcome durably.
//!
//! A promotion is marked running (and its attempt counted) durably *before* the plugin
//! is called. After a crash, running promotions are pending again on start-up and run
//! once more with the same id: the idempotency key that makes the default plugins
//! find-or-create, so no promotion takes effect twice.

use crate::metrics::Metrics;
use crate::pipeline::StrategyRef;
use crate::promotion::{Outcome, PromotionRequest};
use crate::record::{Phase, Promotion, Store, StoreError, now_ms};
use crate::runtime::Plugin;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;

/// What one attempt runs: the plugin with its grant, the request handed to it, and the
/// strategy they come from.
pub struct Prepared {
    pub plugin: Plugin,
    pub request: PromotionRequest,
    pub strategy: StrategyRef,
}

/// Prepares an attempt from the Pipeline in force: a record (or a Promotion resource) is a
/// request to be checked against it, never a command. Strategy, configuration, targets
/// and grant are the Pipeline's as it is now, whatever was recorded.
pub trait PluginResolver: Send + Sync + 'static {
    fn prepare(&self, promotion: &Promotion) -> Result<Prepared, String>;
    /// Whether the promotion's Pipeline is suspended now: then it waits.
    fn suspended(&self, promotion: &Promotion) -> bool;
    /// Whether the promotion's environment waits for approval (`manual: true`) now.
    fn manual(&self, promotion: &Promotion) -> bool;
}

/// Retry policy for retryable failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Calls made before a promotion is given up as failed.
    pub max_attempts: u32,
    /// First backoff; doubles with each attempt.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// How soon to ask again a plugin that answered "waiting".
    pub waiting_poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            waiting_poll: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter: a random delay in [d/2, d] for d = base·2^(n-1),
    /// at least what the far side asked for.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.cap);
        let half = exp / 2;
        let jitter = half.mul_f64(random_unit());
        (half + jitter).max(retry_after.unwrap_or(Duration::ZERO))
    }
}

fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs promotions. Wake it with [`Executor::wake`] after recording new work.
pub struct Executor {
    store: Store,
    plugins: Arc<dyn PluginResolver>,
    metrics: Metrics,
    retry: RetryPolicy,
    concurrency: usize,
    wake: Notify,
    in_flight: Mutex<HashSet<String>>,
    /// The environments (`ns/name/env`) a promotion is running into: one at a time each,
    /// so an older version never lands after a newer one that ran beside it.
    busy: Mutex<HashSet<String>>,
    /// The tasks running a promotion, by id.
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Promotions claimed (marked running) whose plugin call has not returned yet: what
    /// a drain hands back when the call does not finish in time.
    calling: Mutex<HashMap<String, Promotion>>,
    /// Set by [`Executor::drain`]: nothing new is started.
    draining: std::sync::atomic::AtomicBool,
    /// When the work loop last went round (ms): a dead or stuck worker stops it.
    heartbeat: std::sync::atomic::AtomicU64,
}

impl Executor {
    pub fn new(
        store: Store,
        plugins: Arc<dyn PluginResolver>,
        metrics: Metrics,
        retry: RetryPolicy,
        concurrency: usize,
    ) -> Arc<Executor> {
        Arc::new(Executor {
            store,
            plugins,
            metrics,
            retry,
            concurrency: concurrency.max(1),
            wake: Notify::new(),
            in_flight: Mutex::default(),
            busy: Mutex::default(),
            tasks: Mutex::default(),
            calling: Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            heartbeat: std::sync::atomic::AtomicU64::new(now_ms()),
        })
    }

    /// How long ago the work loop last went round.
    pub fn since_heartbeat(&self) -> Duration {
        let at = self.heartbeat.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(at))
    }

    /// Stops starting promotions and gives the running ones until `within` to finish.
    /// Those whose plugin call is still going are then cancelled and handed back as
    /// pending (Kubernetes: the claim released, so another replica takes it at once;
    /// local: it runs at the next start). Their ids.
    pub async fn drain(&self, within: Duration) -> Vec<String> {
        use std::sync::atomic::Ordering;
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        while !self.in_flight.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cut: Vec<Promotion> = {
            // Under the lock: a call returning now either is still listed (and is cut) or
            // has taken itself off (and records its outcome).
            let mut calling = self.calling.lock().unwrap();
            let mut tasks = self.tasks.lock().unwrap();
            for id in calling.keys() {
                if let Some(task) = tasks.remove(id) {
                    task.abort();
                }
            }
            calling.drain().map(|(_, p)| p).collect()
        };
        let mut handed_back = Vec::new();
        for mut p in cut {
            p.phase = Phase::Pending;
            p.next_attempt_at = None;
            p.updated_at = now_ms();
            let id = p.id.clone();
            match self.store.put(p).await {
                Ok(()) => {
                    tracing::info!(promotion = %id, "handed back: its plugin call did not finish within the drain");
                    handed_back.push(id);
                }
                Err(e) => tracing::warn!(promotion = %id, "cannot hand back: {e}"),
            }
        }
        // Calls that returned in time are recording their outcomes: let them.
        let settle = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.tasks.lock().unwrap().is_empty() && tokio::time::Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handed_back
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resumes what a previous process left running, then works until the process ends.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.store.resume_interrupted().await {
            tracing::error!("cannot resume promotions interrupted by a restart: {e}");
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        loop {
            let now = now_ms();
            self.heartbeat
                .store(now, std::sync::atomic::Ordering::Relaxed);
            if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            self.release_held().await;
            let mut next_due: Option<u64> = None;
            let pending = self.store.pending();
            let depth = pending.len() as i64;
            let mut due = Vec::new();
            for (id, when) in pending {
                match when.next_attempt_at {
                    Some(at) if at > now => next_due = Some(next_due.map_or(at, |n| n.min(at))),
                    _ => due.push((when.created_at, id)),
                }
            }
            // Oldest first.
            due.sort();
            for (_, id) in due {
                if !self.in_flight.lock().unwrap().insert(id.clone()) {
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    self.in_flight.lock().unwrap().remove(&id);
                    break;
                };
                let p = match self.store.get(&id) {
                    Ok(Some(p)) if p.phase == Phase::Pending && !self.plugins.suspended(&p) => p,
                    Ok(_) => {
                        self.in_flight.lock().unwrap().remove(&id);
                        drop(permit);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("cannot read promotion {id}: {e}");
                        self.in_flight.lock().unwrap().remove(&id);
                        continue;
                    }
                };
                let env = format!(
                    "{}/{}/{}",
                    p.pipeline.namespace, p.pipeline.name, p.target_environment
                );
                if !self.busy.lock().unwrap().insert(env.clone()) {
                    // Another promotion runs into that environment; this one after it.
                    self.in_flight.lock().unwrap().remove(&id);
                    drop(permit);
                    continue;
                }
                let this = self.clone();
                let task_id = id.clone();
                let span = tracing::info_span!(
                    "promotion",
                    id = %p.id,
                    pipeline = %format!("{}/{}", p.pipeline.namespace, p.pipeline.name),
                    environment = %p.target_environment,
                    version = %p.version,
                );
                let mut tasks = self.tasks.lock().unwrap();
                let task = tokio::spawn(async move {
                    this.run_one(p).instrument(span).await;
                    this.busy.lock().unwrap().remove(&env);
                    this.tasks.lock().unwrap().remove(&id);
                    this.in_flight.lock().unwrap().remove(&id);
                    drop(permit);
                    this.wake();
                });
                tasks.insert(task_id, task.abort_handle());
            }
            self.metrics.queue_depth.set(depth);
            let sleep = next_due
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Promotions held while their Pipeline was suspended, once it is resumed: the newest
    /// version per environment goes on (pending, or waiting for approval where the
    /// environment says so); the others are superseded by it.
    async fn release_held(&self) {
        let held = match self.store.held() {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!("cannot read held promotions: {e}");
                return;
            }
        };
        let mut groups: std::collections::BTreeMap<(String, String, String), Vec<Promotion>> =
            Default::default();
        for p in held {
            if self.plugins.suspended(&p) {
                continue;
            }
            let key = (
                p.pipeline.namespace.clone(),
                p.pipeline.name.clone(),
                p.target_environment.clone(),
            );
            groups.entry(key).or_default().push(p);
        }
        for (_, mut group) in groups {
            group.sort_by(|a, b| {
                crate::decide::version_order(&a.version, &b.version)
                    .then(a.created_at.cmp(&b.created_at))
                    .then(a.id.cmp(&b.id))
            });
            let newest = group.pop().expect("groups are never empty");
            let by = format!(
                "{} ({}), the newest held when resumed",
                newest.version, newest.id
            );
            for p in group {
                let supersede = crate::record::Action::Supersede { by: by.clone() };
                if let Err(e) = self
                    .store
                    .act(&p.id, &p.pipeline.namespace, supersede)
                    .await
                {
                    tracing::warn!(promotion = %p.id, "cannot supersede a held promotion: {e}");
                }
            }
            let release = crate::record::Action::Release {
                manual: self.plugins.manual(&newest),
            };
            match self
                .store
                .act(&newest.id, &newest.pipeline.namespace, release)
                .await
            {
                Ok(p) => {
                    tracing::info!(promotion = %p.id, phase = p.phase.as_str(), "held promotion released: its Pipeline was resumed")
                }
                Err(e) => {
                    tracing::warn!(promotion = %newest.id, "cannot release a held promotion: {e}")
                }
            }
        }
    }

    async fn run_one(&self, mut p: Promotion) {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // A newer version reached the environment since this was recorded: it never runs.
        if let Some(by) = self.store.superseded_by(&p) {
            match self
                .store
                .act(
                    &p.id,
                    &p.pipeline.namespace,
                    crate::record::Action::Supersede { by },
                )
                .await
            {
                Ok(_) => tracing::info!("superseded; not run"),
                Err(e) => tracing::warn!("cannot mark superseded: {e}"),
            }
            return;
        }
        p.phase = Phase::Running;
        p.attempts += 1;
        p.updated_at = now_ms();
        match self.store.put(p.clone()).await {
            Ok(()) => {}
            Err(e @ (StoreError::Claimed { .. } | StoreError::WrongPhase { .. })) => {
                tracing::info!("not run here: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("cannot mark promotion running; will retry: {e}");
                return;
            }
        }
        let (plugin, request) = match self.plugins.prepare(&p) {
            Ok(prepared) => {
                p.strategy = prepared.strategy;
                p.targets = prepared.request.targets.clone();
                p.app = prepared.request.app.clone();
                (prepared.plugin, prepared.request)
            }
            Err(reason) => {
                tracing::error!("promotion failed: {reason}");
                self.finish(p, Phase::Failed, Some(reason), None).await;
                return;
            }
        };
        let started = std::time::Instant::now();
        self.calling.lock().unwrap().insert(p.id.clone(), p.clone());
        // Other replicas see the claim renewed while the plugin works.
        let result = tokio::select! {
            result = plugin.promote(&request) => result,
            _ = self.store.hold(&p.id) => unreachable!("a hold is kept until the call ends"),
        };
        if self.calling.lock().unwrap().remove(&p.id).is_none() {
            // A drain has cut this call and handed the promotion back.
            return;
        }
        let kind = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.metrics
            .plugin_calls
            .with_label_values(&[plugin.name(), kind])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Outcome::Done { url, details }) => {
                tracing::info!(url = url.as_deref().unwrap_or("-"), "promotion succeeded");
                p.outcome_details = details;
                self.finish(p, Phase::Succeeded, None, url).await;
            }
            Ok(Outcome::Waiting { reason }) => {
                tracing::info!("promotion waiting: {reason}");
                p.phase = Phase::Pending;
                p.outcome_details = Some(reason);
                p.next_attempt_at = Some(now_ms() + self.retry.waiting_poll.as_millis() as u64);
                self.save(p).await;
            }
            Err(e) if e.is_retryable() && p.attempts < self.retry.max_attempts => {
                let delay = self.retry.delay(p.attempts, e.retry_after());
                tracing::warn!(
                    attempt = p.attempts,
                    ?delay,
                    "promotion attempt failed, will retry: {e}"
                );
                p.phase = Phase::Pending;
                p.last_error = Some(e.to_string());
                p.next_attempt_at = Some(now_ms() + delay.as_millis() as u64);
                self.save(p).await;
            }
            Err(e) => {
                let why = if e.is_retryable() {
                    format!("{e} (gave up after {} attempts)", p.attempts)
                } else {
                    e.to_string()
                };
                tracing::error!("promotion failed: {why}");
                self.finish(p, Phase::Failed, Some(why), None).await;
            }
        }
    }

    async fn finish(
        &self,
        mut p: Promotion,
        phase: Phase,
        error: Option<String>,
        url: Option<String>,
    ) {
        let now = now_ms();
        p.phase = phase;
        p.last_error = error.or(p.last_error);
        if phase == Phase::Succeeded {
            p.last_error = None;
        }
        p.outcome_url = url.or(p.outcome_url);
        p.finished_at = Some(now);
        p.next_attempt_at = None;
        let result = if phase == Phase::Succeeded {
            "succeeded"
        } else {
            "failed"
        };
        let pipeline = format!("{}/{}", p.pipeline.namespace, p.pipeline.name);
        self.metrics
            .promotions
            .with_label_values(&[&pipeline, &p.target_environment, &p.strategy.plugin, result])
            .inc();
        self.metrics
            .promotion_latency
            .with_label_values(&[&pipeline, &p.target_environment, &p.strategy.plugin, result])
            .observe(now.saturating_sub(p.created_at) as f64 / 1000.0);
        let succeeded = (phase == Phase::Succeeded).then(|| p.clone());
        self.save(p).await;
        if let Some(done) = succeeded {
            match self.store.supersede_older(&done).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(superseded = ?ids, "older promotions into the environment superseded")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot supersede older promotions: {e}"),
            }
        }
    }

    /// Records the outcome, retrying while the store cannot write (a full disk, say): the
    /// outcome exists only here, and a promotion left running would run again.
    async fn save(&self, mut p: Promotion) {
        let mut delay = Duration::from_millis(500);
        loop {
            p.updated_at = now_ms();
            match self.store.put(p.clone()).await {
                Ok(()) => return,
                Err(e @ (StoreError::Claimed { .. } | StoreError::NotFound(_))) => {
                    tracing::warn!("outcome not recorded: {e}");
                    return;
                }
                Err(e) => {
                    tracing::error!("cannot record promotion outcome; retrying in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let r = RetryPolicy::default();
        for attempt in 1..=6 {
            let full = Duration::from_secs(1 << (attempt - 1));
            let d = r.delay(attempt, None);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(r.delay(30, None) <= r.cap);
        assert!(r.delay(1, Some(Duration::from_secs(42))) >= Duration::from_secs(42));
    }

    struct NoPlugins;
    impl PluginResolver for NoPlugins {
        fn prepare(&self, _: &Promotion) -> Result<Prepared, String> {
            Err("no plugins here".into())
        }

        fn suspended(&self, _: &Promotion) -> bool {
            false
        }

        fn manual(&self, _: &Promotion) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn the_heartbeat_goes_stale_once_the_work_loop_is_dead() {
        let dir = std::env::temp_dir().join(format!("promoter-heartbeat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::Local(crate::record::LocalStore::open(&dir).unwrap());
        let executor = Executor::new(
            store,
            Arc::new(NoPlugins),
            Metrics::new(),
            RetryPolicy::default(),
            1,
        );
        let worker = tokio::spawn(executor.clone().run());
        // Alive: the loop goes round at least every second.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(
                executor.since_heartbeat() < Duration::from_millis(1500),
                "{:?}",
                executor.since_heartbeat()
            );
        }
        // Dead (a panic would end the task the same way): the heartbeat stops.
        worker.abort();
        let _ = worker.await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(executor.since_heartbeat() >= Duration::from_millis(1900));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
