//! Durable promotion records for local mode: an embedded database file (redb).
//!
//! Every write is committed (fsync) before the caller hears back, so an event the
//! webhook answered 2xx survives `kill -9`. Writes from concurrent requests are
//! grouped into one transaction by a single writer thread (group commit): one fsync
//! acknowledges many events, which is what keeps ingestion fast under load.
//!
//! Idempotency lives here: a promotion's id is derived from (pipeline, target
//! environment, version), so recording the same promotion twice finds the first;
//! an event's digest is kept, so a replayed event changes nothing.

use crate::decide::VersionIndex;
use crate::pipeline::StrategyRef;
use crate::promotion::{AppRef, EventInfo, PipelineRef, Target};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PROMOTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("promotions");
const EVENTS: TableDefinition<&[u8], u64> = TableDefinition::new("events");

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Pending,
    WaitingApproval,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::WaitingApproval => "waiting-approval",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One promotion of one version into one environment of one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Deterministic from (pipeline, target environment, version): the idempotency key.
    pub id: String,
    pub pipeline: PipelineRef,
    pub source_environment: String,
    pub target_environment: String,
    pub version: String,
    pub targets: Vec<Target>,
    pub app: AppRef,
    pub strategy: StrategyRef,
    pub event: EventInfo,
    pub phase: Phase,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_details: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// Not before this time (ms) will the next attempt run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// RFC 3339 for people and JSON.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the promotion database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("the promotion database could not be written: {0}")]
    Write(String),
    #[error("the promotion database could not be read: {0}")]
    Read(String),
    #[error("the promotion store has shut down")]
    Closed,
    #[error("no promotion {0}")]
    NotFound(String),
    #[error("promotion {id} is {phase}, not waiting for approval")]
    NotWaiting { id: String, phase: &'static str },
}

/// What recording an accepted event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The same event body was accepted before; nothing changed.
    pub replay: bool,
    /// Promotions this event created.
    pub created: Vec<String>,
    /// Promotions that already existed for the same (pipeline, environment, version).
    pub existing: Vec<String>,
}

enum Op {
    Accept {
        digest: [u8; 32],
        promotions: Vec<Promotion>,
        reply: tokio::sync::oneshot::Sender<Result<Accepted, StoreError>>,
    },
    Put {
        promotion: Box<Promotion>,
        reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    },
    Approve {
        id: String,
        reply: tokio::sync::oneshot::Sender<Result<Promotion, StoreError>>,
    },
}

/// What the hot paths need without scanning the database: the versions recorded per
/// pipeline (`ns/name`), for `decide`, and the promotions waiting to run, for the worker.
/// Rebuilt at open, then kept by the writer after each commit.
#[derive(Default)]
struct Index {
    history: HashMap<String, VersionIndex>,
    pending: HashMap<String, Due>,
}

type SharedIndex = Arc<Mutex<Index>>;

/// When a pending promotion may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub created_at: u64,
    pub next_attempt_at: Option<u64>,
}

impl Index {
    fn note(&mut self, p: &Promotion, created: bool) {
        if created {
            self.history
                .entry(pipeline_key(&p.pipeline))
                .or_default()
                .record(&p.target_environment, &p.version);
        }
        if p.phase == Phase::Pending {
            self.pending.insert(
                p.id.clone(),
                Due {
                    created_at: p.created_at,
                    next_attempt_at: p.next_attempt_at,
                },
            );
        } else {
            self.pending.remove(&p.id);
        }
    }
}

fn pipeline_key(p: &PipelineRef) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The local promotion store. Clone freely.
#[derive(Clone)]
pub struct LocalStore {
    db: Arc<Database>,
    ops: mpsc::SyncSender<Op>,
    index: SharedIndex,
}

impl LocalStore {
    /// Opens (or creates) `<data_dir>/promotions.redb` and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<LocalStore, StoreError> {
        let path = data_dir.join("promotions.redb");
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Write(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        {
            let txn = db
                .begin_write()
                .map_err(|e| StoreError::Write(e.to_string()))?;
            txn.open_table(PROMOTIONS)
                .map_err(|e| StoreError::Write(e.to_string()))?;
            txn.open_table(EVENTS)
                .map_err(|e| StoreError::Write(e.to_string()))?;
            txn.commit().map_err(|e| StoreError::Write(e.to_string()))?;
        }
        let db = Arc::new(db);
        let (ops, rx) = mpsc::sync_channel(4096);
        let writer_db = db.clone();
        let store = LocalStore {
            db,
            ops,
            index: Arc::default(),
        };
        {
            let mut index = store.index.lock().unwrap();
            for p in store.list()? {
                index.note(&p, true);
            }
        }
        let index = store.index.clone();
        std::thread::Builder::new()
            .name("promotion-store".into())
            .spawn(move || writer(writer_db, rx, index))
            .map_err(|e| StoreError::Write(e.to_string()))?;
        Ok(store)
    }

    /// Runs `f` with every version recorded for `pipeline`, in any phase.
    pub fn with_history<R>(&self, pipeline: &PipelineRef, f: impl FnOnce(&VersionIndex) -> R) -> R {
        let index = self.index.lock().unwrap();
        match index.history.get(&pipeline_key(pipeline)) {
            Some(h) => f(h),
            None => f(&VersionIndex::default()),
        }
    }

    /// Promotions in phase pending, with when they may run.
    pub fn pending(&self) -> Vec<(String, Due)> {
        let index = self.index.lock().unwrap();
        index
            .pending
            .iter()
            .map(|(id, due)| (id.clone(), *due))
            .collect()
    }

    /// Whether an event with this exact body was accepted before.
    pub fn seen(&self, body: &[u8]) -> Result<bool, StoreError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(body).into();
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(EVENTS).map_err(|e| read(&e))?;
        Ok(table
            .get(digest.as_slice())
            .map_err(|e| read(&e))?
            .is_some())
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.ops.send(op).map_err(|_| StoreError::Closed)
    }

    /// Records an accepted event and the promotions it asks for, durably, in one
    /// transaction. Promotions whose id exists already are left as they are.
    pub async fn accept(
        &self,
        body: &[u8],
        promotions: Vec<Promotion>,
    ) -> Result<Accepted, StoreError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(body).into();
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Accept {
            digest,
            promotions,
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes a promotion's new state durably.
    pub async fn put(&self, promotion: Promotion) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Put {
            promotion: Box::new(promotion),
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Moves a promotion waiting for approval to pending.
    pub async fn approve(&self, id: &str) -> Result<Promotion, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Approve {
            id: id.to_string(),
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub fn get(&self, id: &str) -> Result<Option<Promotion>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(PROMOTIONS).map_err(|e| read(&e))?;
        let value = table.get(id).map_err(|e| read(&e))?;
        value
            .map(|v| serde_json::from_slice(v.value()).map_err(|e| read(&e)))
            .transpose()
    }

    /// Every promotion, newest first.
    pub fn list(&self) -> Result<Vec<Promotion>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(PROMOTIONS).map_err(|e| read(&e))?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (_, v) = entry.map_err(|e| read(&e))?;
            all.push(serde_json::from_slice::<Promotion>(v.value()).map_err(|e| read(&e))?);
        }
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }
}

/// The single writer: takes one op, then whatever else is queued, applies them all in
/// one transaction and commits once.
fn writer(db: Arc<Database>, rx: mpsc::Receiver<Op>, index: SharedIndex) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let outcome = apply(&db, &batch);
        match outcome {
            Ok(results) => {
                let mut index = index.lock().unwrap();
                for (op, result) in batch.iter().zip(&results) {
                    match (op, result) {
                        (Op::Accept { promotions, .. }, Done::Accepted(a)) => {
                            for p in promotions.iter().filter(|p| a.created.contains(&p.id)) {
                                index.note(p, true);
                            }
                        }
                        (Op::Put { promotion, .. }, _) => index.note(promotion, false),
                        (Op::Approve { .. }, Done::Approved(Ok(p))) => index.note(p, false),
                        _ => {}
                    }
                }
                drop(index);
                for (op, result) in batch.into_iter().zip(results) {
                    reply(op, Ok(result));
                }
            }
            Err(e) => {
                tracing::error!("promotion store write failed: {e}");
                for op in batch {
                    reply(op, Err(StoreError::Write(e.clone())));
                }
            }
        }
    }
}

enum Done {
    Accepted(Accepted),
    Put,
    Approved(Result<Promotion, StoreError>),
}

fn reply(op: Op, result: Result<Done, StoreError>) {
    match (op, result) {
        (Op::Accept { reply, .. }, Ok(Done::Accepted(a))) => drop(reply.send(Ok(a))),
        (Op::Accept { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Op::Put { reply, .. }, Ok(_)) => drop(reply.send(Ok(()))),
        (Op::Put { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Op::Approve { reply, .. }, Ok(Done::Approved(r))) => drop(reply.send(r)),
        (Op::Approve { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Op::Accept { reply, .. }, Ok(_)) => drop(reply.send(Err(StoreError::Closed))),
        (Op::Approve { reply, .. }, Ok(_)) => drop(reply.send(Err(StoreError::Closed))),
    }
}

fn apply(db: &Database, batch: &[Op]) -> Result<Vec<Done>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut txn = db.begin_write().map_err(|x| e(&x))?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|x| e(&x))?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut promotions = txn.open_table(PROMOTIONS).map_err(|x| e(&x))?;
        let mut events = txn.open_table(EVENTS).map_err(|x| e(&x))?;
        for op in batch {
            match op {
                Op::Accept {
                    digest,
                    promotions: wanted,
                    ..
                } => {
                    if events.get(digest.as_slice()).map_err(|x| e(&x))?.is_some() {
                        results.push(Done::Accepted(Accepted {
                            replay: true,
                            created: Vec::new(),
                            existing: wanted.iter().map(|p| p.id.clone()).collect(),
                        }));
                        continue;
                    }
                    events
                        .insert(digest.as_slice(), now_ms())
                        .map_err(|x| e(&x))?;
                    let mut accepted = Accepted {
                        replay: false,
                        created: Vec::new(),
                        existing: Vec::new(),
                    };
                    for p in wanted {
                        if promotions.get(p.id.as_str()).map_err(|x| e(&x))?.is_some() {
                            accepted.existing.push(p.id.clone());
                        } else {
                            let bytes = serde_json::to_vec(p).map_err(|x| e(&x))?;
                            promotions
                                .insert(p.id.as_str(), bytes.as_slice())
                                .map_err(|x| e(&x))?;
                            accepted.created.push(p.id.clone());
                        }
                    }
                    results.push(Done::Accepted(accepted));
                }
                Op::Put { promotion, .. } => {
                    let bytes = serde_json::to_vec(promotion).map_err(|x| e(&x))?;
                    promotions
                        .insert(promotion.id.as_str(), bytes.as_slice())
                        .map_err(|x| e(&x))?;
                    results.push(Done::Put);
                }
                Op::Approve { id, .. } => {
                    let current: Option<Promotion> = promotions
                        .get(id.as_str())
                        .map_err(|x| e(&x))?
                        .map(|v| serde_json::from_slice(v.value()))
                        .transpose()
                        .map_err(|x| e(&x))?;
                    let result = match current {
                        None => Err(StoreError::NotFound(id.clone())),
                        Some(p) if p.phase != Phase::WaitingApproval => {
                            Err(StoreError::NotWaiting {
                                id: id.clone(),
                                phase: p.phase.as_str(),
                            })
                        }
                        Some(mut p) => {
                            p.phase = Phase::Pending;
                            p.updated_at = now_ms();
                            let bytes = serde_json::to_vec(&p).map_err(|x| e(&x))?;
                            promotions
                                .insert(id.as_str(), bytes.as_slice())
                                .map_err(|x| e(&x))?;
                            Ok(p)
                        }
                    };
                    results.push(Done::Approved(result));
                }
            }
        }
    }
    txn.commit().map_err(|x| e(&x))?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promotion(id: &str, env: &str, version: &str) -> Promotion {
        Promotion {
            id: id.into(),
            pipeline: PipelineRef {
                namespace: "ns".into(),
                name: "app".into(),
            },
            source_environment: "dev".into(),
            target_environment: env.into(),
            version: version.into(),
            targets: vec![],
            app: AppRef {
                api_version: "helm.toolkit.fluxcd.io/v2".into(),
                kind: "HelmRelease".into(),
                name: "app".into(),
            },
            strategy: StrategyRef {
                plugin: "webhook".into(),
                config: serde_json::json!({}),
            },
            event: EventInfo::default(),
            phase: Phase::Pending,
            attempts: 0,
            last_error: None,
            outcome_url: None,
            outcome_details: None,
            created_at: now_ms(),
            updated_at: now_ms(),
            next_attempt_at: None,
            finished_at: None,
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("promoter-record-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn the_same_promotion_recorded_twice_exists_once_and_a_replayed_event_changes_nothing() {
        let dir = temp_dir("idem");
        let store = LocalStore::open(&dir).unwrap();
        let a = store
            .accept(b"event-1", vec![promotion("p1", "test", "1.0.0")])
            .await
            .unwrap();
        assert_eq!(
            a,
            Accepted {
                replay: false,
                created: vec!["p1".into()],
                existing: vec![]
            }
        );
        let b = store
            .accept(b"event-2", vec![promotion("p1", "test", "1.0.0")])
            .await
            .unwrap();
        assert_eq!(b.existing, vec!["p1".to_string()]);
        assert!(b.created.is_empty());
        let c = store
            .accept(b"event-1", vec![promotion("p2", "test", "2.0.0")])
            .await
            .unwrap();
        assert!(c.replay);
        assert!(store.get("p2").unwrap().is_none());
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn records_survive_reopening_the_database() {
        let dir = temp_dir("reopen");
        {
            let store = LocalStore::open(&dir).unwrap();
            store
                .accept(b"e", vec![promotion("p1", "test", "1.0.0")])
                .await
                .unwrap();
            let mut p = store.get("p1").unwrap().unwrap();
            p.phase = Phase::Running;
            p.attempts = 1;
            store.put(p).await.unwrap();
        }
        // The writer thread of the first store keeps the file open until its channel
        // closes; give it a moment.
        std::thread::sleep(Duration::from_millis(50));
        let store = LocalStore::open(&dir).unwrap();
        let p = store.get("p1").unwrap().unwrap();
        assert_eq!((p.phase, p.attempts), (Phase::Running, 1));
    }

    #[tokio::test]
    async fn only_a_waiting_promotion_can_be_approved() {
        let dir = temp_dir("approve");
        let store = LocalStore::open(&dir).unwrap();
        let mut waiting = promotion("w", "prod", "1.0.0");
        waiting.phase = Phase::WaitingApproval;
        store
            .accept(b"e", vec![waiting, promotion("p", "test", "1.0.0")])
            .await
            .unwrap();
        assert_eq!(store.approve("w").await.unwrap().phase, Phase::Pending);
        assert!(matches!(
            store.approve("p").await,
            Err(StoreError::NotWaiting { .. })
        ));
        assert!(matches!(
            store.approve("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn concurrent_writers_are_grouped_and_all_acknowledged() {
        let dir = temp_dir("group");
        let store = LocalStore::open(&dir).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.accept(
                        format!("event-{i}").as_bytes(),
                        vec![promotion(&format!("p{}", i % 50), "test", "1")],
                    )
                    .await
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            created += t.await.unwrap().unwrap().created.len();
        }
        assert_eq!(created, 50);
        assert_eq!(store.list().unwrap().len(), 50);
    }
}
