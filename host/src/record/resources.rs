//! Kubernetes mode's promotion records: `Promotion` resources (`promoter.dev/v1alpha1`)
//! in the Pipeline's namespace. The API server is the durable store every replica shares.
//!
//! - **Accept**: the resource is created before the webhook answers 202. Its name is the
//!   promotion's id, so a duplicate event, on any replica, meets `AlreadyExists`; the
//!   event's digest is kept in an annotation, and the first status (written before the
//!   202) says an event asked for it, so a replay of an answered event is recognised as
//!   one. Accepting is bounded ([`ResourceStore::open`]'s `accept_timeout`, below the 15 s
//!   Flux waits): past it the webhook answers 503 with Retry-After. A create that
//!   committed without its answer (504 after commit; the bound passed) carries the
//!   event's digest and no status: the same event again — kube-client's own retry, or
//!   Flux's — finishes recording it rather than calling it a replay or making another.
//! - **Claim**: a replica runs a promotion only after writing `phase: running` with itself
//!   as `holder` — a status update carrying the resourceVersion it read, so two replicas
//!   cannot both claim (the second gets 409 Conflict). A conflict caused by something
//!   else (a user annotating the resource) is retried on the fresh object.
//! - **Hold**: the holder renews `heldUntil` while the plugin runs. A replica killed
//!   mid-promotion stops renewing; once a replica has seen no renewal for [`CLAIM_TTL`]
//!   (by its own clock) it claims the promotion again and runs it with the same
//!   idempotency key, so it takes effect once.
//!
//! - **Requests**: a Promotion's spec is a request (pipeline, target environment,
//!   version, why) and never changes (the CRD says `self == oldSelf`). What runs — the
//!   strategy, its configuration, the targets — is the Pipeline's in force when it runs,
//!   never anything the resource says. A Promotion without a status (created with
//!   kubectl, or whose first status was never written) is checked against its Pipeline
//!   ([`crate::decide::admit`]) by whichever replica gets there first, and then waits,
//!   runs or is refused with an `Accepted: False` condition and an Event.
//! - **Keys**: resources are keyed by (namespace, name) everywhere. A promotion's id is
//!   its name, which must be [`crate::decide::promotion_id`] of its request (128 bits of
//!   hash over namespace, pipeline, environment and version): ids cannot be made to
//!   collide across namespaces, and a Promotion named otherwise is refused.
//!
//! Each replica keeps what it read and wrote in memory, following the API server's watch
//! of Promotions (relisted when the watch breaks); that is what `decide`, the worker and
//! `GET /promotions` read.

use super::{
    Accepted, Action, Approval, Cause, Due, Phase, Promotion, StoreError, now_ms, rfc3339,
};
use crate::cluster::crd;
use crate::decide::{History, VersionIndex, promotion_id_round};
use crate::pipeline::{Pipeline, StrategyRef};
use crate::promotion::{AppRef, PipelineRef};
use futures_util::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Annotating a waiting Promotion `promoter.dev/approved: "true"` approves it.
pub const APPROVED_ANNOTATION: &str = "promoter.dev/approved";
/// When the event was accepted (RFC 3339, milliseconds): the promotion's start.
const ACCEPTED_AT: &str = "promoter.dev/accepted-at";
/// SHA-256 of the event body that created the promotion.
const EVENT_DIGEST: &str = "promoter.dev/event-digest";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "promoter");
/// The Pipeline's name, for `kubectl get promotions -l promoter.dev/pipeline=<name>`:
/// see [`pipeline_label`] for names longer than a label value may be.
const PIPELINE_LABEL: &str = "promoter.dev/pipeline";
/// A label value's limit (a Pipeline's name may have 253 characters).
const LABEL_VALUE_MAX: usize = 63;

/// How long a claim holds unless renewed. The holder renews it every third of this;
/// a replica that has seen no renewal for this long (by its own clock, as client-go's
/// leader election does, so clock skew between nodes does not matter) resumes the
/// promotion: a killed replica's work goes on within 20 s (this plus one sync).
pub const CLAIM_TTL: Duration = Duration::from_secs(15);

/// Conflicts retried on one write before giving up.
const CONFLICT_RETRIES: usize = 5;

/// How long a Promotion without a status is left to the replica that created it (which
/// writes the first status at once) before any replica checks it as a request.
const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// The `Accepted` condition's reason on a Promotion an event created: written as its first
/// status, before the webhook's 2xx.
const BY_EVENT: &str = "Event";

/// Whether the event that created `r` was answered: its first status says so.
fn acknowledged(r: &crd::Promotion) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.reason == BY_EVENT)
    })
}

/// (namespace, name) of a Promotion resource.
type Key = (String, String);

fn key_of(r: &crd::Promotion) -> Key {
    (r.namespace().unwrap_or_default(), r.name_any())
}

/// The Promotions as this replica last saw them, by (namespace, name); the ids of those
/// named by their id, for lookups by id (those are unique across namespaces).
#[derive(Default)]
struct Cache {
    /// Boxed: a table grown to twice the entries it holds (and, while it grows, the old
    /// one too) then costs a pointer per slot, not a whole entry (about 1.6 KB).
    entries: HashMap<Key, Box<Entry>>,
    ids: HashMap<String, Key>,
    /// Counts the changes made to the cache (inserts and removals): an entry notes the
    /// count at its last change, so a relist can tell what changed since it began.
    changes: u64,
}

impl Cache {
    fn insert(&mut self, key: Key, mut entry: Entry) {
        self.changes += 1;
        entry.changed = self.changes;
        if entry.canonical {
            self.ids.insert(entry.promotion.id.clone(), key.clone());
        }
        self.entries.insert(key, Box::new(entry));
    }

    fn remove(&mut self, key: &Key) {
        self.changes += 1;
        if let Some(e) = self.entries.remove(key)
            && self.ids.get(&e.promotion.id) == Some(key)
        {
            self.ids.remove(&e.promotion.id);
        }
    }

    fn by_id(&self, id: &str) -> Option<&Entry> {
        self.ids
            .get(id)
            .and_then(|k| self.entries.get(k))
            .map(|e| &**e)
    }
}

struct Entry {
    resource: crd::Promotion,
    promotion: Promotion,
    /// Named [`promotion_id`] of its request: the only ones that can be admitted and run.
    canonical: bool,
    /// When this replica first saw it (ms, own clock).
    first_seen: u64,
    /// [`Cache::changes`] when it was last inserted (by the watch or this replica's
    /// own writes).
    changed: u64,
    /// When this replica first saw the current claim (holder and heldUntil), by its own
    /// clock (ms): the claim lapses [`CLAIM_TTL`] after that unless renewed.
    claim_seen_at: u64,
}

/// The claim of a Promotion as written: who holds it, until when (by the holder's clock).
fn claim(r: &crd::Promotion) -> Option<(Option<&String>, Option<&String>)> {
    let s = r.status.as_ref()?;
    (s.phase == Phase::Running).then_some((s.holder.as_ref(), s.held_until.as_ref()))
}

impl Entry {
    /// `known`: what the cache held for it; an unchanged claim keeps when it was seen.
    fn new(resource: crd::Promotion, known: Option<&Entry>, now: u64) -> Entry {
        let status = resource.status.clone();
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond().max(0) as u64)
        };
        // Accepted-at keeps milliseconds; whoever creates a Promotion may write it, so it
        // never counts as later than the API server says the object was created (a forged
        // future date would otherwise make it the "newest" that retention keeps).
        let accepted = resource
            .annotations()
            .get(ACCEPTED_AT)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond());
        let created = resource
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond() + 999);
        let created_at = match (accepted, created) {
            (Some(a), Some(c)) => a.min(c),
            (a, c) => a.or(c).unwrap_or(0),
        }
        .max(0) as u64;
        let spec = &resource.spec;
        let namespace = resource.namespace().unwrap_or_default();
        let name = resource.name_any();
        let round = spec.round.unwrap_or(1).max(1);
        let canonical = name
            == promotion_id_round(
                &namespace,
                &spec.pipeline,
                &spec.target_environment,
                &spec.version,
                round,
            );
        let phase = status.as_ref().map_or(Phase::Requested, |s| s.phase);
        // What runs is the Pipeline's in force when it runs (the worker fills strategy,
        // targets and app in from it); the status names the plugin that ran.
        let promotion = Promotion {
            id: name,
            pipeline: PipelineRef {
                namespace,
                name: spec.pipeline.clone(),
            },
            source_environment: spec.source_environment.clone().unwrap_or_default(),
            target_environment: spec.target_environment.clone(),
            version: spec.version.clone(),
            targets: Vec::new(),
            app: AppRef {
                api_version: String::new(),
                kind: String::new(),
                name: String::new(),
            },
            strategy: StrategyRef {
                plugin: status
                    .as_ref()
                    .and_then(|s| s.plugin.clone())
                    .unwrap_or_default(),
                config: serde_json::Value::Null,
            },
            event: spec.event.clone().unwrap_or_default(),
            phase,
            attempts: status.as_ref().map_or(0, |s| s.attempts),
            last_error: status.as_ref().and_then(|s| s.last_error.clone()),
            outcome_url: status.as_ref().and_then(|s| s.outcome_url.clone()),
            outcome_details: status.as_ref().and_then(|s| s.outcome_details.clone()),
            created_at,
            updated_at: now_ms(),
            next_attempt_at: status.as_ref().and_then(|s| parse(&s.next_attempt_at)),
            finished_at: status.as_ref().and_then(|s| parse(&s.finished_at)),
            approved_by: status.as_ref().and_then(|s| s.approved_by.clone()),
            cause: match (&spec.event, spec.rollback) {
                (Some(_), _) => Cause::Event,
                (None, true) => Cause::Rollback,
                (None, false) => Cause::Manual,
            },
            round,
            requested_by: status.as_ref().and_then(|s| s.requested_by.clone()),
            reason: spec.reason.clone(),
            retried_by: status.as_ref().and_then(|s| s.retried_by.clone()),
            retried_at: status.as_ref().and_then(|s| parse(&s.retried_at)),
            closed_by: status.as_ref().and_then(|s| s.closed_by.clone()),
            close_reason: status.as_ref().and_then(|s| s.close_reason.clone()),
        };
        let claim_seen_at = match known {
            Some(k) if claim(&k.resource) == claim(&resource) => k.claim_seen_at,
            _ => now,
        };
        Entry {
            resource,
            promotion,
            canonical,
            first_seen: known.map_or(now, |k| k.first_seen),
            changed: 0,
            claim_seen_at,
        }
    }

    /// The promotion as the worker sees it now: a running one whose holder stopped
    /// renewing its claim is pending again, due when the claim lapsed.
    fn current(&self, now: u64) -> Promotion {
        let mut p = self.promotion.clone();
        let lapses_at = self.claim_seen_at + CLAIM_TTL.as_millis() as u64;
        if p.phase == Phase::Running && lapses_at <= now {
            p.phase = Phase::Pending;
            p.next_attempt_at = Some(lapses_at);
        }
        p
    }

    /// Whether it is part of the pipeline's history: named by its request's id and neither
    /// an unchecked request nor a refused one.
    fn counts(&self) -> bool {
        self.canonical && !matches!(self.promotion.phase, Phase::Requested | Phase::Refused)
    }

    fn digest(&self) -> Option<&String> {
        self.resource.annotations().get(EVENT_DIGEST)
    }

    /// Whether `replica` may write `phase` now: claim it (`running`) when it is pending (a
    /// lapsed hold counts), or write anything while the claim is its own (a renewal, the
    /// outcome). If not, who or what has it.
    fn writable(&self, replica: &str, phase: Phase, now: u64) -> Result<(), String> {
        let held_by = claim(&self.resource).and_then(|(holder, _)| holder);
        let claiming = phase == Phase::Running && self.current(now).phase == Phase::Pending;
        if claiming || held_by.is_some_and(|h| h == replica) {
            return Ok(());
        }
        Err(match held_by {
            Some(holder) => holder.clone(),
            None => format!(
                "another replica, which left it {}",
                self.promotion.phase.as_str()
            ),
        })
    }
}

fn resource_version(r: &crd::Promotion) -> Option<u64> {
    r.metadata.resource_version.as_deref()?.parse().ok()
}

/// The promotion store over the API server. One per process; share it in an `Arc`.
pub struct ResourceStore {
    client: Client,
    /// This replica's name in `status.holder` (the pod's name).
    replica: String,
    cache: Mutex<Cache>,
    /// Since when the Promotion watch has been failing (None: it works).
    watch_failing_since: crate::cluster::requests::PromotionFeed,
    /// How long [`Self::accept`] may take (kube-client retries 429, 503 and 504 honouring
    /// Retry-After, with no read timeout of its own).
    accept_timeout: Duration,
    /// The watch of Promotions whose first list [`Self::open`] read: [`Self::follow`] goes
    /// on with it, so a start lists them once.
    feed: Mutex<Option<Feed>>,
}

type Feed = BoxStream<
    'static,
    Result<kube::runtime::watcher::Event<crd::Promotion>, kube::runtime::watcher::Error>,
>;

/// Readiness fails once the Promotion watch has failed for this long: what this replica
/// knows of other replicas' claims and outcomes is then too old to record events on.
const WATCH_FAILING_BOUND: Duration = Duration::from_secs(30);

impl ResourceStore {
    /// Connects and reads every Promotion this controller manages. Accepting an event
    /// gives up after `accept_timeout`.
    /// `feed` tells whether the client's lists and watches of Promotions are answered
    /// (see [`crate::cluster::requests::PromotionFeed`]).
    pub async fn open(
        client: Client,
        replica: String,
        accept_timeout: Duration,
        feed: crate::cluster::requests::PromotionFeed,
    ) -> Result<ResourceStore, StoreError> {
        let store = ResourceStore {
            client,
            replica,
            cache: Mutex::default(),
            watch_failing_since: feed,
            accept_timeout,
            feed: Mutex::default(),
        };
        store.sync().await?;
        Ok(store)
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Readiness: the Promotion watch works (or has failed for less than a bound).
    pub fn in_sync(&self) -> Result<(), String> {
        match *self.watch_failing_since.lock().unwrap() {
            Some(since) if since.elapsed() >= WATCH_FAILING_BOUND => Err(format!(
                "the watch of Promotion resources has been failing for {}s",
                since.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }

    /// The Promotions of every namespace, and the label selector of those this
    /// controller manages.
    fn managed(&self) -> (Api<crd::Promotion>, String) {
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        (Api::all(self.client.clone()), selector)
    }

    fn api(&self, namespace: &str) -> Api<crd::Promotion> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Keeps `resource` unless the cache already holds a newer version of it.
    fn remember(&self, mut resource: crd::Promotion) {
        // The largest part of a Promotion as read, never used; a status update without it
        // leaves the API server's as it is.
        resource.metadata.managed_fields = None;
        let mut cache = self.cache.lock().unwrap();
        let key = key_of(&resource);
        let known = cache.entries.get(&key).map(|e| &**e);
        if let Some(known) = known
            && let (Some(have), Some(new)) = (
                resource_version(&known.resource),
                resource_version(&resource),
            )
            && have > new
        {
            return;
        }
        let entry = Entry::new(resource, known, now_ms());
        cache.insert(key, entry);
    }

    /// Follows the managed Promotions of every namespace (list, then watch; again after
    /// an error, with backoff) into the cache: what other replicas record, claim and
    /// finish. Approves a waiting one annotated for approval. Calls `changed` after each
    /// change, so the worker looks at once. Runs until the process ends.
    pub async fn follow(self: std::sync::Arc<Self>, changed: impl Fn() + Send) {
        use futures_util::StreamExt;
        use kube::runtime::watcher;
        let opened = self.feed.lock().unwrap().take();
        let mut events = opened.unwrap_or_else(|| self.watch());
        // While a relist runs (after the watch expired, 410 Gone, or broke): where the
        // cache's change count stood when it began, and the resources it listed so far.
        let mut relisted: Option<(u64, HashSet<Key>)> = None;
        while let Some(event) = events.next().await {
            {
                let mut failing = self.watch_failing_since.lock().unwrap();
                match &event {
                    Err(_) => {
                        failing.get_or_insert_with(std::time::Instant::now);
                    }
                    Ok(_) => *failing = None,
                }
            }
            match event {
                Ok(watcher::Event::Init) => {
                    let began = self.cache.lock().unwrap().changes;
                    relisted = Some((began, HashSet::new()));
                }
                Ok(watcher::Event::InitApply(p)) => {
                    if let Some((_, keys)) = relisted.as_mut() {
                        keys.insert(key_of(&p));
                    }
                    self.observe(p).await;
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some((began, keys)) = relisted.take() {
                        self.forget_unlisted(began, &keys);
                    }
                }
                Ok(watcher::Event::Apply(p)) => self.observe(p).await,
                Ok(watcher::Event::Delete(p)) => {
                    self.cache.lock().unwrap().remove(&key_of(&p));
                }
                Err(e) => tracing::warn!("watching Promotion resources: {e}"),
            }
            changed();
        }
    }

    /// Keeps a Promotion seen on the watch; approves it when it waits for approval (as
    /// Promoter's own status says) and is annotated so.
    async fn observe(&self, resource: crd::Promotion) {
        let waiting = resource.status.as_ref().map(|s| s.phase) == Some(Phase::WaitingApproval);
        let approved = resource
            .annotations()
            .get(APPROVED_ANNOTATION)
            .map(String::as_str)
            == Some("true");
        let spec = resource.spec.clone();
        let key = key_of(&resource);
        self.remember(resource);
        if waiting && approved {
            let approval = Approval {
                pipeline: PipelineRef {
                    namespace: key.0.clone(),
                    name: spec.pipeline,
                },
                environment: spec.target_environment,
                version: spec.version,
                by: format!("annotation {APPROVED_ANNOTATION}"),
            };
            match self.approve(&key.1, &approval).await {
                Ok(_) => tracing::info!(promotion = %key.1, "promotion approved by annotation"),
                Err(e) => tracing::warn!(promotion = %key.1, "cannot approve: {e}"),
            }
        }
    }

    /// After a relist: drops every entry it did not list — deleted while the watch was
    /// down — except those changed since it began (`began`, a [`Cache::changes`] count):
    /// this replica's own creates and writes, which the list may predate.
    fn forget_unlisted(&self, began: u64, listed: &HashSet<Key>) {
        let mut cache = self.cache.lock().unwrap();
        let gone: Vec<Key> = cache
            .entries
            .iter()
            .filter(|(key, e)| !listed.contains(*key) && e.changed <= began)
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            tracing::debug!(promotion = %key.1, "gone from the API server: deleted while the watch was down");
            cache.remove(&key);
        }
    }

    /// The watch of the managed Promotions of every namespace: a list (in pages), then
    /// changes; listed again when the watch expires or breaks, after a backoff.
    fn watch(&self) -> Feed {
        use futures_util::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let (all, selector) = self.managed();
        watcher(all, watcher::Config::default().labels(&selector))
            .default_backoff()
            .boxed()
    }

    /// Reads the managed Promotions of every namespace into the cache (before serving, so
    /// the first decisions know the history): the first list of the watch that
    /// [`Self::follow`] goes on with.
    async fn sync(&self) -> Result<(), StoreError> {
        use futures_util::StreamExt;
        use kube::runtime::watcher::{Error, Event};
        let mut events = self.watch();
        loop {
            match events.next().await {
                Some(Ok(Event::InitApply(p))) => self.observe(p).await,
                Some(Ok(Event::InitDone)) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let hint = match &e {
                        Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404 => {
                            " (is the promoter.dev Promotion CRD installed? The chart installs it \
                             with crds.enabled; or `promoter crds | kubectl apply --server-side -f -`)"
                        }
                        _ => "",
                    };
                    let e = format!("cannot list Promotion resources: {e}{hint}");
                    return Err(StoreError::Read(e));
                }
                None => return Err(StoreError::Read("the Promotion watch ended".into())),
            }
        }
        *self.feed.lock().unwrap() = Some(events);
        Ok(())
    }

    /// Runs `f` with the history of `pipeline`.
    pub fn with_history<R>(&self, pipeline: &PipelineRef, f: impl FnOnce(&dyn History) -> R) -> R {
        f(&self.history(pipeline))
    }

    /// What was recorded for `pipeline` (requests not yet checked, and refused ones, were
    /// never promoted).
    fn history(&self, pipeline: &PipelineRef) -> VersionIndex {
        let cache = self.cache.lock().unwrap();
        let mut history = VersionIndex::default();
        for e in cache.entries.values().filter(|e| e.counts()) {
            if e.promotion.pipeline == *pipeline {
                history.note(&e.promotion);
            }
        }
        history
    }

    /// The promotions that have not run and may still: pending, waiting or held (a
    /// running one whose claim lapsed is pending again).
    pub fn not_run(&self) -> Vec<Promotion> {
        self.where_phase(|phase| phase.is_open() || phase == Phase::Running)
            .into_iter()
            .filter(|p| p.phase.is_open())
            .collect()
    }

    /// The promotions held while their Pipeline is suspended.
    pub fn held(&self) -> Vec<Promotion> {
        self.where_phase(|phase| phase == Phase::Held)
    }

    /// The canonical promotions whose recorded phase `wanted` takes, as they are now;
    /// only those are copied.
    fn where_phase(&self, wanted: impl Fn(Phase) -> bool) -> Vec<Promotion> {
        let now = now_ms();
        let cache = self.cache.lock().unwrap();
        cache
            .entries
            .values()
            .filter(|e| e.canonical && wanted(e.promotion.phase))
            .map(|e| e.current(now))
            .collect()
    }

    /// The promotions now in `phase` (a running one with a lapsed hold is pending).
    fn in_phase(&self, phase: Phase) -> Vec<Promotion> {
        let now = now_ms();
        let cache = self.cache.lock().unwrap();
        cache
            .entries
            .values()
            .filter(|e| e.canonical)
            .map(|e| e.current(now))
            .filter(|p| p.phase == phase)
            .collect()
    }

    /// Promotions waiting for approval.
    pub fn waiting(&self) -> super::Waiting {
        self.in_phase(Phase::WaitingApproval)
            .iter()
            .map(|p| p.created_at)
            .collect()
    }

    /// Promotions that may be claimed: pending, or running with a lapsed hold.
    pub fn pending(&self) -> Vec<(String, Due)> {
        self.in_phase(Phase::Pending)
            .into_iter()
            .map(|p| {
                let due = Due {
                    created_at: p.created_at,
                    next_attempt_at: p.next_attempt_at,
                };
                (p.id, due)
            })
            .collect()
    }

    /// Whether an event with this body was accepted and answered before.
    pub fn seen(&self, body: &[u8]) -> bool {
        let digest = digest(body);
        let cache = self.cache.lock().unwrap();
        cache
            .entries
            .values()
            .any(|e| e.digest() == Some(&digest) && acknowledged(&e.resource))
    }

    /// Creates a Promotion resource per promotion, within the accept timeout (else
    /// [`StoreError::TimedOut`]). One that exists already is left as it is; when all exist
    /// and were created and answered for this very event, it is a replay.
    pub async fn accept(
        &self,
        body: &[u8],
        promotions: Vec<Promotion>,
    ) -> Result<Accepted, StoreError> {
        let after = self.accept_timeout;
        tokio::time::timeout(after, self.record(body, promotions))
            .await
            .unwrap_or(Err(StoreError::TimedOut { after }))
    }

    async fn record(
        &self,
        body: &[u8],
        promotions: Vec<Promotion>,
    ) -> Result<Accepted, StoreError> {
        let digest = digest(body);
        let mut accepted = Accepted {
            replay: false,
            created: Vec::new(),
            existing: Vec::new(),
        };
        let mut same_event = true;
        for p in promotions {
            let api = self.api(&p.pipeline.namespace);
            // A request refused earlier (asked for too soon, say), or a resource under this
            // id that is not this promotion and that no replica has checked, does not stand
            // in the way of the promotion a signed event asks for: it is replaced, once.
            let mut replaced = false;
            let created = loop {
                let created = api
                    .create(&PostParams::default(), &new_resource(&p, &digest))
                    .await;
                let Err(kube::Error::Api(s)) = &created else {
                    break created;
                };
                if s.code != 409 || replaced {
                    break created;
                }
                let found = api.get(&p.id).await.map_err(|e| {
                    StoreError::Read(format!("cannot read Promotion {}: {e}", p.id))
                })?;
                let phase = found.status.as_ref().map(|s| s.phase);
                let other = (
                    found.spec.pipeline.as_str(),
                    found.spec.target_environment.as_str(),
                    found.spec.version.as_str(),
                ) != (
                    p.pipeline.name.as_str(),
                    p.target_environment.as_str(),
                    p.version.as_str(),
                );
                if phase != Some(Phase::Refused) && !(other && phase.is_none()) {
                    break created;
                }
                replaced = true;
                let preconditions = kube::api::Preconditions {
                    uid: found.metadata.uid.clone(),
                    resource_version: found.metadata.resource_version.clone(),
                };
                let params = kube::api::DeleteParams {
                    preconditions: Some(preconditions),
                    ..Default::default()
                };
                match api.delete(&p.id, &params).await {
                    Ok(_) => {
                        tracing::info!(promotion = %p.id, "a refused or foreign request under this id is replaced by the event's promotion");
                        self.cache.lock().unwrap().remove(&key_of(&found));
                    }
                    // Changed or gone meanwhile: look again.
                    Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                    Err(e) => {
                        return Err(StoreError::Write(format!(
                            "cannot replace Promotion {}/{}: {e}",
                            p.pipeline.namespace, p.id
                        )));
                    }
                }
            };
            match created {
                Ok(made) => {
                    self.first_status(&api, &p, made).await;
                    accepted.created.push(p.id);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let found = api.get(&p.id).await.map_err(|e| {
                        StoreError::Read(format!("cannot read Promotion {}: {e}", p.id))
                    })?;
                    let spec = &found.spec;
                    if (
                        spec.pipeline.as_str(),
                        spec.target_environment.as_str(),
                        spec.version.as_str(),
                    ) != (
                        p.pipeline.name.as_str(),
                        p.target_environment.as_str(),
                        p.version.as_str(),
                    ) {
                        return Err(StoreError::Mismatch {
                            id: p.id.clone(),
                            recorded: format!(
                                "{}/{}: {} into {}",
                                p.pipeline.namespace,
                                spec.pipeline,
                                spec.version,
                                spec.target_environment
                            ),
                            requested: p.describe(),
                        });
                    }
                    let ours = found.annotations().get(EVENT_DIGEST) == Some(&digest);
                    if ours && found.status.is_none() {
                        // This event's create committed, but its answer never came (504
                        // after commit and kube-client's retry, or the accept timeout and
                        // Flux's retry): finish recording it.
                        tracing::info!(promotion = %p.id, "the event's Promotion was created by an earlier, unanswered attempt");
                        self.first_status(&api, &p, found).await;
                        accepted.created.push(p.id);
                        continue;
                    }
                    // An unanswered attempt's Promotion, admitted meanwhile as a request, is
                    // this event's too: not a replay.
                    same_event &= ours && acknowledged(&found);
                    self.remember(found);
                    accepted.existing.push(p.id);
                }
                Err(e) => {
                    return Err(StoreError::Write(format!(
                        "cannot create Promotion {}/{}: {e}",
                        p.pipeline.namespace, p.id
                    )));
                }
            }
        }
        accepted.replay = accepted.created.is_empty() && same_event;
        Ok(accepted)
    }

    /// Keeps `made`, the Promotion `p`'s event created, and writes its first status: the
    /// phase for `kubectl get promotions`, and the condition saying an event asked for it
    /// (what tells a replay of this event from a retry of an unanswered one). It is
    /// written onto the object as created, and only there: if another replica changed it
    /// meanwhile (approved or claimed it), that stands.
    async fn first_status(&self, api: &Api<crd::Promotion>, p: &Promotion, made: crd::Promotion) {
        self.remember(made.clone());
        let mut first = made;
        let mut status = self.status(p);
        status.conditions = vec![accepted_condition(
            true,
            BY_EVENT,
            &format!(
                "a signed Flux event from {} asked for it",
                p.source_environment
            ),
        )];
        first.status = Some(status);
        match api
            .replace_status(&p.id, &PostParams::default(), &first)
            .await
        {
            Ok(written) => self.remember(written),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                tracing::warn!(promotion = %p.id, "cannot write the first status: {e}")
            }
        }
    }

    /// Writes the promotion's state. Marking it running claims it for this replica: that
    /// fails with [`StoreError::Claimed`] when another replica changed it since it was
    /// read. Any other conflict (metadata changed, or this replica's own earlier write)
    /// is retried on the fresh object.
    pub async fn put(&self, promotion: &Promotion) -> Result<(), StoreError> {
        let resource = {
            let cache = self.cache.lock().unwrap();
            let entry = cache
                .entries
                .get(&(promotion.pipeline.namespace.clone(), promotion.id.clone()))
                .ok_or_else(|| StoreError::NotFound(promotion.id.clone()))?;
            // The worker decided to claim it from an earlier read; the watch may have
            // brought another replica's claim, or its outcome, since. Written onto that,
            // the claim would succeed and the promotion run twice. Likewise an outcome
            // is this replica's to write only while the claim is.
            entry
                .writable(&self.replica, promotion.phase, now_ms())
                .map_err(|by| StoreError::Claimed {
                    id: promotion.id.clone(),
                    by,
                })?;
            entry.resource.clone()
        };
        self.write(promotion, resource, true).await
    }

    /// Writes the promotion's state onto `resource` (as read): see [`Self::put`].
    /// `over_own`: a conflict with a change of this replica's own claim (a renewal, say)
    /// is written over; for an operator's step it is not.
    async fn write(
        &self,
        promotion: &Promotion,
        mut resource: crd::Promotion,
        over_own: bool,
    ) -> Result<(), StoreError> {
        let id = &promotion.id;
        let base = resource.status.clone();
        let api = self.api(&promotion.pipeline.namespace);
        for _ in 0..CONFLICT_RETRIES {
            let conditions = resource.status.as_ref().map(|s| s.conditions.clone());
            let mut status = self.status(promotion);
            status.conditions = conditions.unwrap_or_default();
            resource.status = Some(status);
            match api
                .replace_status(id, &PostParams::default(), &resource)
                .await
            {
                Ok(written) => {
                    self.remember(written);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let fresh = api.get(id).await.map_err(|e| {
                        StoreError::Read(format!("cannot read Promotion {id}: {e}"))
                    })?;
                    let holder = fresh.status.as_ref().and_then(|s| s.holder.clone());
                    let mine = over_own && holder.as_deref() == Some(self.replica.as_str());
                    if fresh.status != base && !mine {
                        self.remember(fresh);
                        return Err(StoreError::Claimed {
                            id: id.clone(),
                            by: holder.unwrap_or_else(|| "another replica".into()),
                        });
                    }
                    tracing::debug!(promotion = %id, "status update conflicted; retrying on the fresh object");
                    resource = fresh;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    let key = (promotion.pipeline.namespace.clone(), id.clone());
                    self.cache.lock().unwrap().remove(&key);
                    return Err(StoreError::NotFound(id.clone()));
                }
                Err(e) => {
                    return Err(StoreError::Write(format!(
                        "cannot write the status of Promotion {id}: {e}"
                    )));
                }
            }
        }
        Err(StoreError::Write(format!(
            "the status of Promotion {id} kept changing under {CONFLICT_RETRIES} writes"
        )))
    }

    /// While the promotion runs, renews this replica's hold on it (returns only if the
    /// hold is lost).
    pub async fn hold(&self, id: &str) {
        loop {
            tokio::time::sleep(CLAIM_TTL / 3).await;
            // As recorded: a late renewal must not see its own lapsed hold as pending.
            let recorded = self
                .cache
                .lock()
                .unwrap()
                .by_id(id)
                .map(|e| e.promotion.clone());
            let Some(p) = recorded else { return };
            if p.phase != Phase::Running {
                return;
            }
            // Refused (Claimed) once another replica has taken the claim over.
            match self.put(&p).await {
                Ok(()) => {}
                Err(e @ StoreError::Claimed { .. }) => {
                    tracing::warn!(promotion = %id, "lost the claim while running: {e}");
                    return;
                }
                Err(e) => tracing::warn!(promotion = %id, "cannot renew the claim: {e}"),
            }
        }
    }

    /// Deletes the Promotion resources finished longer than `keep` ago, except the newest
    /// into each environment of each pipeline: decisions compare new versions with it.
    pub async fn prune(&self, keep: Duration) {
        let before = now_ms().saturating_sub(keep.as_millis() as u64);
        let old: Vec<(String, String)> = {
            let cache = self.cache.lock().unwrap();
            let key = |p: &Promotion| {
                let (ns, name) = (p.pipeline.namespace.clone(), p.pipeline.name.clone());
                (ns, name, p.target_environment.clone())
            };
            let mut newest: HashMap<(String, String, String), u64> = HashMap::new();
            for e in cache.entries.values().filter(|e| e.counts()) {
                let p = &e.promotion;
                let at = newest.entry(key(p)).or_default();
                *at = (*at).max(p.created_at);
            }
            cache
                .entries
                .values()
                .map(|e| &e.promotion)
                .filter(|p| p.phase.is_finished() && p.finished_at.is_some_and(|t| t < before))
                // The newest into each environment stays: decisions compare with it. A
                // refused request was never part of that history.
                .filter(|p| {
                    p.phase == Phase::Refused
                        || newest
                            .get(&key(p))
                            .is_some_and(|newest| *newest > p.created_at)
                })
                .map(|p| (p.pipeline.namespace.clone(), p.id.clone()))
                .collect()
        };
        for (namespace, id) in old {
            match self.api(&namespace).delete(&id, &Default::default()).await {
                Ok(_) => {
                    tracing::info!(promotion = %id, "finished promotion deleted after {}", humantime::format_duration(keep));
                    self.cache.lock().unwrap().remove(&(namespace, id));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.cache.lock().unwrap().remove(&(namespace, id));
                }
                Err(e) => {
                    tracing::warn!(promotion = %id, "cannot delete the finished promotion: {e}")
                }
            }
        }
    }

    /// Moves the promotion `id` waiting for approval to pending, if it is the one
    /// `approval` names.
    pub async fn approve(&self, id: &str, approval: &Approval) -> Result<Promotion, StoreError> {
        self.act(
            id,
            &approval.pipeline.namespace,
            Action::Approve(approval.clone()),
        )
        .await
    }

    /// Applies `action` to the Promotion `id` in `namespace`, if it applies to the object
    /// as read; a conflict (the object changed meanwhile) is looked at again.
    pub async fn act(
        &self,
        id: &str,
        namespace: &str,
        action: Action,
    ) -> Result<Promotion, StoreError> {
        for _ in 0..CONFLICT_RETRIES {
            // Written onto the very object found: one that was approved and claimed
            // meanwhile is not set back to pending (and run again).
            let (p, resource) = {
                let cache = self.cache.lock().unwrap();
                let entry = cache
                    .by_id(id)
                    .filter(|e| e.promotion.pipeline.namespace == namespace)
                    .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
                (entry.current(now_ms()), entry.resource.clone())
            };
            let p = action.apply(p, now_ms())?;
            // Never over a change made since it was read, even by this replica (its own
            // claim): the step is applied again to the fresh object.
            match self.write(&p, resource, false).await {
                Ok(()) => return Ok(p),
                // Changed since it was read (its first status written by the replica that
                // recorded it, say, or approved there): look again at the fresh one.
                Err(StoreError::Claimed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Write(format!(
            "Promotion {id} kept changing while it was given {}",
            action.name()
        )))
    }

    /// Checks each Promotion no replica has given a status yet (past [`REQUEST_GRACE`])
    /// against the Pipeline in force: a request it allows waits for approval or is
    /// pending; any other is refused, with the reason in its status. `pipeline` finds a
    /// Pipeline in force by namespace and name.
    pub async fn admit_requests(&self, pipeline: impl Fn(&str, &str) -> Option<Pipeline>) {
        let now = now_ms();
        let requests: Vec<(Promotion, crd::Promotion)> = {
            let cache = self.cache.lock().unwrap();
            cache
                .entries
                .values()
                .filter(|e| e.promotion.phase == Phase::Requested)
                .filter(|e| e.first_seen + REQUEST_GRACE.as_millis() as u64 <= now)
                .map(|e| (e.promotion.clone(), e.resource.clone()))
                .collect()
        };
        for (mut p, resource) in requests {
            let verdict = self.check_request(&p, &resource, &pipeline);
            let (phase, condition) = match &verdict {
                Ok(admitted) => {
                    p.source_environment = admitted.source_env.clone();
                    let phase = if admitted.manual {
                        Phase::WaitingApproval
                    } else {
                        Phase::Pending
                    };
                    (
                        phase,
                        accepted_condition(true, "Allowed", "the Pipeline allows it"),
                    )
                }
                Err(why) => {
                    // Bounded: the reason may quote what the request said.
                    p.last_error = Some(crate::runtime::clip(why.clone(), 1000));
                    p.finished_at = Some(now);
                    (Phase::Refused, accepted_condition(false, "Refused", why))
                }
            };
            p.phase = phase;
            p.updated_at = now;
            let mut resource = resource;
            let mut status = self.status(&p);
            status.conditions = vec![condition];
            resource.status = Some(status);
            let api = self.api(&p.pipeline.namespace);
            match api
                .replace_status(&p.id, &PostParams::default(), &resource)
                .await
            {
                Ok(written) => {
                    match &verdict {
                        Ok(_) => {
                            tracing::info!(promotion = %p.id, phase = phase.as_str(), "requested promotion admitted")
                        }
                        Err(why) => {
                            tracing::warn!(promotion = %p.id, "requested promotion refused: {why}")
                        }
                    }
                    self.remember(written);
                }
                // Another replica checked it first.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    tracing::warn!(promotion = %p.id, "cannot write the request's verdict: {e}")
                }
            }
        }
    }

    /// Whether the Pipeline in force allows the request `p` (read from `resource`).
    fn check_request(
        &self,
        p: &Promotion,
        resource: &crd::Promotion,
        pipeline: &impl Fn(&str, &str) -> Option<Pipeline>,
    ) -> Result<crate::decide::Admitted, String> {
        let (namespace, name) = (&p.pipeline.namespace, &p.pipeline.name);
        let spec = &resource.spec;
        if resource.annotations().contains_key(APPROVED_ANNOTATION) {
            return Err(format!(
                "Promotion {namespace}/{} was created carrying {APPROVED_ANNOTATION}: approval is \
                 given to a promotion waiting for it, by annotating it then",
                p.id
            ));
        }
        let Some(pipeline) = pipeline(namespace, name) else {
            return Err(crate::decide::Refusal::NoPipeline {
                pipeline: format!("{namespace}/{name}"),
            }
            .to_string());
        };
        let admitted = crate::decide::admit(
            &pipeline,
            &spec.target_environment,
            &spec.version,
            spec.source_environment.as_deref(),
            spec.rollback,
            &self.history(&p.pipeline),
        )
        .map_err(|e| e.to_string())?;
        if p.id != admitted.id {
            return Err(format!(
                "Promotion {namespace}/{} must be named {} with round {}: a Promotion is named \
                 after what it requests (pipeline, environment, version, round){}",
                p.id,
                admitted.id,
                admitted.round,
                if admitted.round > 1 {
                    "; `promoter promote` names it for you"
                } else {
                    ""
                }
            ));
        }
        Ok(admitted)
    }

    pub fn get(&self, id: &str) -> Option<Promotion> {
        let cache = self.cache.lock().unwrap();
        cache.by_id(id).map(|e| e.current(now_ms()))
    }

    pub fn list(&self) -> Vec<Promotion> {
        let now = now_ms();
        let cache = self.cache.lock().unwrap();
        let mut all: Vec<Promotion> = cache.entries.values().map(|e| e.current(now)).collect();
        // Newest first, as pages go: by (createdAt, id), both descending.
        all.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(b.id.cmp(&a.id))
                .then(a.pipeline.namespace.cmp(&b.pipeline.namespace))
        });
        all
    }

    fn status(&self, p: &Promotion) -> crd::PromotionStatus {
        let running = p.phase == Phase::Running;
        crd::PromotionStatus {
            phase: p.phase,
            attempts: p.attempts,
            last_error: p.last_error.clone(),
            outcome_url: p.outcome_url.clone(),
            outcome_details: p.outcome_details.clone(),
            next_attempt_at: p.next_attempt_at.map(rfc3339),
            finished_at: p.finished_at.map(rfc3339),
            holder: running.then(|| self.replica.clone()),
            held_until: running.then(|| rfc3339(now_ms() + CLAIM_TTL.as_millis() as u64)),
            plugin: Some(p.strategy.plugin.clone()).filter(|s| !s.is_empty()),
            approved_by: p.approved_by.clone(),
            requested_by: p.requested_by.clone(),
            retried_by: p.retried_by.clone(),
            retried_at: p.retried_at.map(rfc3339),
            closed_by: p.closed_by.clone(),
            close_reason: p.close_reason.clone(),
            conditions: Vec::new(),
        }
    }
}

fn accepted_condition(accepted: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: "Accepted".into(),
        status: if accepted { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: crate::runtime::clip(message.to_string(), 1000),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: None,
    }
}

fn digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

/// The `promoter.dev/pipeline` label's value for the Pipeline `name`: the name itself when
/// it fits a label value (63 characters; a Pipeline's name, a DNS subdomain, has only
/// characters a label value allows), else its first 50 characters and 12 hex digits of
/// its SHA-256 — always a valid label, so the create never meets 422. Any name can be
/// selected by `--field-selector spec.pipeline=<name>` (the CRD's selectable field).
pub fn pipeline_label(name: &str) -> String {
    if name.len() <= LABEL_VALUE_MAX {
        return name.to_string();
    }
    let cut = name.char_indices().nth(50).map_or(name.len(), |(at, _)| at);
    let head = name[..cut].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{}", &digest(name.as_bytes())[..12])
}

fn new_resource(p: &Promotion, digest: &str) -> crd::Promotion {
    let mut object = crd::Promotion::new(
        &p.id,
        crd::PromotionSpec {
            pipeline: p.pipeline.name.clone(),
            target_environment: p.target_environment.clone(),
            version: p.version.clone(),
            source_environment: Some(p.source_environment.clone()),
            reason: p.reason.clone(),
            rollback: p.cause == Cause::Rollback,
            round: (p.round > 1).then_some(p.round),
            event: (p.cause == Cause::Event).then(|| p.event.clone()),
        },
    );
    object.metadata.namespace = Some(p.pipeline.namespace.clone());
    object.metadata.labels = Some(
        [
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            (PIPELINE_LABEL.to_string(), pipeline_label(&p.pipeline.name)),
        ]
        .into(),
    );
    object.metadata.annotations = Some(
        [
            (ACCEPTED_AT.to_string(), rfc3339(p.created_at)),
            (EVENT_DIGEST.to_string(), digest.to_string()),
        ]
        .into(),
    );
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promotion() -> Promotion {
        serde_json::from_value(serde_json::json!({
            "id": "podinfo-test-6-0-1-abc",
            "pipeline": {"namespace": "flux-system", "name": "podinfo"},
            "sourceEnvironment": "dev", "targetEnvironment": "test", "version": "6.0.1",
            "targets": [{"namespace": "podinfo-test"}],
            "app": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "podinfo", "namespace": "podinfo-test"},
            "strategy": {"plugin": "webhook", "config": {"url": "https://ci.example/hook"}},
            "event": {"reason": "UpgradeSucceeded", "message": "ok", "timestamp": "2026-12-01T10:00:00Z"},
            "phase": "waiting-approval", "attempts": 0,
            "createdAt": 1764583200123u64, "updatedAt": 1764583200123u64
        }))
        .unwrap()
    }

    /// A store whose client points nowhere: for what happens in its cache.
    fn offline_store() -> ResourceStore {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        ResourceStore {
            client: Client::try_from(config).unwrap(),
            replica: "promoter-0".into(),
            cache: Mutex::default(),
            watch_failing_since: Default::default(),
            accept_timeout: Duration::from_secs(10),
            feed: Mutex::default(),
        }
    }

    fn stored(name: &str, version: u64) -> crd::Promotion {
        let mut p = promotion();
        p.id = name.into();
        let mut r = new_resource(&p, "d1");
        r.metadata.resource_version = Some(version.to_string());
        r
    }

    // A runtime: the client, though never called, spawns its request buffer.
    #[tokio::test]
    async fn a_relist_drops_what_it_did_not_list_unless_changed_since_it_began() {
        let store = offline_store();
        // Listed before the watch expired: a (rv 5) and b (rv 9, newer than anything the
        // relist will list — what the old rule kept forever once deleted).
        store.remember(stored("a", 5));
        store.remember(stored("b", 9));
        let began = store.cache.lock().unwrap().changes;
        // During the relist: a listed again; c created by this replica (rv 12), which
        // the list, taken before, does not have.
        store.remember(stored("a", 5));
        store.remember(stored("c", 12));
        let listed: HashSet<Key> = [("flux-system".to_string(), "a".to_string())].into();
        store.forget_unlisted(began, &listed);
        let mut left: Vec<String> = store.list().into_iter().map(|p| p.id).collect();
        left.sort();
        assert_eq!(left, ["a", "c"], "b was deleted while the watch was down");
    }

    #[tokio::test]
    async fn a_promotion_is_kept_without_its_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let store = offline_store();
        let mut read = stored("a", 5);
        read.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("promoter".into()),
            ..Default::default()
        }]);
        store.remember(read);
        let cache = store.cache.lock().unwrap();
        let kept = &cache.entries[&("flux-system".to_string(), "a".to_string())];
        assert_eq!(kept.resource.metadata.managed_fields, None);
        assert_eq!(resource_version(&kept.resource), Some(5));
    }

    #[test]
    fn the_pipeline_label_is_the_name_when_it_fits_and_a_valid_label_value_always() {
        assert_eq!(pipeline_label("podinfo"), "podinfo");
        let fits = "a".repeat(63);
        assert_eq!(pipeline_label(&fits), fits);
        let valid = |v: &str| {
            v.len() <= 63
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        // 253 characters, a '.' where the cut falls: still valid, and distinct.
        let long = format!("{}.{}", "b".repeat(49), "c".repeat(203));
        let other = format!("{}.{}", "b".repeat(49), "d".repeat(203));
        let (a, b) = (pipeline_label(&long), pipeline_label(&other));
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(a.starts_with(&"b".repeat(49)));
    }

    #[test]
    fn a_new_resource_reads_back_as_the_request_it_records() {
        let p = promotion();
        let back = Entry::new(new_resource(&p, "d1"), None, now_ms());
        assert_eq!(
            back.promotion.phase,
            Phase::Requested,
            "no status: a request no replica has checked"
        );
        assert!(!back.canonical, "the fixture's id is not its request's");
        let p = back.promotion;
        assert_eq!(
            p.created_at,
            promotion().created_at,
            "accepted-at keeps milliseconds"
        );
        assert_eq!(
            (
                p.pipeline,
                p.target_environment.as_str(),
                p.version.as_str(),
                p.source_environment.as_str()
            ),
            (promotion().pipeline, "test", "6.0.1", "dev")
        );
        assert_eq!(p.event, promotion().event);
        assert!(
            p.strategy.plugin.is_empty() && p.targets.is_empty(),
            "what runs is never read from the resource"
        );

        let mut named = promotion();
        named.id = crate::decide::promotion_id("flux-system", "podinfo", "test", "6.0.1");
        assert!(Entry::new(new_resource(&named, "d1"), None, now_ms()).canonical);
    }

    fn running(holder: &str, until: &str) -> crd::Promotion {
        let mut r = new_resource(&promotion(), "d1");
        r.status = Some(crd::PromotionStatus {
            phase: Phase::Running,
            attempts: 1,
            last_error: None,
            outcome_url: None,
            outcome_details: None,
            next_attempt_at: None,
            finished_at: None,
            holder: Some(holder.into()),
            held_until: Some(until.into()),
            plugin: None,
            approved_by: None,
            requested_by: None,
            retried_by: None,
            retried_at: None,
            closed_by: None,
            close_reason: None,
            conditions: Vec::new(),
        });
        r
    }

    #[test]
    fn a_claim_lapses_when_no_renewal_was_seen_for_its_ttl_whatever_the_holders_clock() {
        let ttl = CLAIM_TTL.as_millis() as u64;
        // The holder's clock is a day behind: its heldUntil is long past by ours.
        let seen = 1_800_000_000_000;
        let e = Entry::new(running("promoter-0", "2027-01-14T08:00:00Z"), None, seen);
        assert_eq!(
            e.current(seen + ttl - 1).phase,
            Phase::Running,
            "held: running elsewhere"
        );
        let resumed = e.current(seen + ttl);
        assert_eq!(resumed.phase, Phase::Pending);
        assert_eq!(resumed.next_attempt_at, Some(seen + ttl));
        assert_eq!(resumed.attempts, 1, "the next attempt is counted on top");

        // A renewal seen later moves the lapse; the same claim read again does not.
        let again = Entry::new(
            running("promoter-0", "2027-01-14T08:00:00Z"),
            Some(&e),
            seen + 5000,
        );
        assert_eq!(again.claim_seen_at, seen);
        let renewed = Entry::new(
            running("promoter-0", "2027-01-14T08:00:05Z"),
            Some(&e),
            seen + 5000,
        );
        assert_eq!(renewed.current(seen + ttl).phase, Phase::Running);
        let taken = Entry::new(
            running("promoter-1", "2027-01-14T08:00:00Z"),
            Some(&e),
            seen + 9000,
        );
        assert_eq!(
            taken.claim_seen_at,
            seen + 9000,
            "another holder is a new claim"
        );
    }

    #[test]
    fn a_promotion_claimed_or_finished_elsewhere_is_neither_claimed_nor_given_an_outcome_here() {
        let seen = 1_800_000_000_000;
        let unclaimed = |phase| {
            let mut r = running("promoter-1", "2027-01-14T08:00:00Z");
            let status = r.status.as_mut().unwrap();
            (status.phase, status.holder, status.held_until) = (phase, None, None);
            Entry::new(r, None, seen)
        };
        let claim = |e: &Entry, replica: &str, at: u64| e.writable(replica, Phase::Running, at);
        let outcome = |e: &Entry, replica: &str| e.writable(replica, Phase::Succeeded, seen);
        assert_eq!(
            claim(&unclaimed(Phase::Pending), "promoter-0", seen),
            Ok(())
        );
        assert_eq!(
            outcome(&unclaimed(Phase::Pending), "promoter-0"),
            Err("another replica, which left it pending".to_string()),
            "an outcome without the claim"
        );

        let elsewhere = Entry::new(running("promoter-1", "2027-01-14T08:00:00Z"), None, seen);
        assert_eq!(
            claim(&elsewhere, "promoter-0", seen + 1000),
            Err("promoter-1".to_string())
        );
        assert_eq!(
            outcome(&elsewhere, "promoter-0"),
            Err("promoter-1".to_string())
        );
        let ttl = CLAIM_TTL.as_millis() as u64;
        assert_eq!(
            claim(&elsewhere, "promoter-0", seen + ttl),
            Ok(()),
            "a lapsed hold may be taken over"
        );
        assert_eq!(
            claim(&elsewhere, "promoter-1", seen + 1000),
            Ok(()),
            "the holder renews"
        );
        assert_eq!(
            outcome(&elsewhere, "promoter-1"),
            Ok(()),
            "the holder writes the outcome"
        );

        let finished = unclaimed(Phase::Succeeded);
        assert_eq!(
            claim(&finished, "promoter-0", seen),
            Err("another replica, which left it succeeded".to_string())
        );
        assert_eq!(
            outcome(&finished, "promoter-0"),
            Err("another replica, which left it succeeded".to_string())
        );
    }
}
