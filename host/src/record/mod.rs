//! Durable promotion records. [`Store`] is what the rest of the host uses; it is one of
//! two stores: in Kubernetes mode, `Promotion` resources in the API server
//! ([`resources`]); in local mode, [`LocalStore`], an embedded database file (redb).
//!
//! The local store:
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod journal;
pub mod resources;
use journal::{Journal, apply, read_journal, writer};

const PROMOTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("promotions");
const EVENTS: TableDefinition<&[u8], u64> = TableDefinition::new("events");

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Kubernetes mode: a Promotion resource no replica has checked against its Pipeline
    /// yet (one created with kubectl, or one whose first status was never written).
    Requested,
    Pending,
    WaitingApproval,
    Running,
    Succeeded,
    Failed,
    /// Its Pipeline does not allow it (the reason is in `lastError`); never runs.
    Refused,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Requested => "requested",
            Phase::Pending => "pending",
            Phase::WaitingApproval => "waiting-approval",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Refused => "refused",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Refused)
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
    /// How the approval that let it run was authorised (`key <ns>/<Secret>`, `annotation`,
    /// `user <name>`), when it waited for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

impl Promotion {
    /// `ns/pipeline: version into env`, as errors name a promotion.
    pub fn describe(&self) -> String {
        describe(&self.pipeline, &self.target_environment, &self.version)
    }

    /// Whether this record is the promotion of `version` into `environment` of `pipeline`.
    pub fn is(&self, pipeline: &PipelineRef, environment: &str, version: &str) -> bool {
        self.pipeline == *pipeline
            && self.target_environment == environment
            && self.version == version
    }
}

fn describe(pipeline: &PipelineRef, environment: &str, version: &str) -> String {
    format!(
        "{}/{}: {version} into {environment}",
        pipeline.namespace, pipeline.name
    )
}

/// An authenticated request to approve one promotion. The store approves the record only
/// if it is the promotion this names: an id alone is never trusted to say what it approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub pipeline: PipelineRef,
    pub environment: String,
    pub version: String,
    /// How the caller was authorised, recorded on the promotion.
    pub by: String,
}

impl Approval {
    fn describe(&self) -> String {
        describe(&self.pipeline, &self.environment, &self.version)
    }

    /// Approves `p` if it is the promotion this names and it waits for approval.
    fn apply(&self, mut p: Promotion, now: u64) -> Result<Promotion, StoreError> {
        if !p.is(&self.pipeline, &self.environment, &self.version) {
            return Err(StoreError::Mismatch {
                id: p.id.clone(),
                recorded: p.describe(),
                requested: self.describe(),
            });
        }
        if p.phase != Phase::WaitingApproval {
            return Err(StoreError::NotWaiting {
                id: p.id,
                phase: p.phase.as_str(),
            });
        }
        p.phase = Phase::Pending;
        p.approved_by = Some(self.by.clone());
        p.updated_at = now;
        Ok(p)
    }
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
    #[error("promotion {id} was claimed by {by}")]
    Claimed { id: String, by: String },
    /// The store did not confirm the write within its bound (Kubernetes mode's
    /// `--accept-timeout`): it may still land, and a retry of the same event finds it.
    #[error(
        "the API server did not confirm the record within {}; retry (the same event is \
         recorded once)",
        humantime::format_duration(*after)
    )]
    TimedOut { after: Duration },
    /// The record under an id is another promotion than the one asked for: refused, never
    /// taken for it.
    #[error("promotion {id} records {recorded}, not {requested}; refused")]
    Mismatch {
        id: String,
        recorded: String,
        requested: String,
    },
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

/// A change to the store: applied to the database and, first, written to the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Change {
    Accept {
        digest: String,
        promotions: Vec<Record>,
    },
    Put {
        promotion: Box<Record>,
    },
    Approve {
        id: String,
        /// What the authenticated caller approves. (Absent in journals of older versions,
        /// which checked before journaling.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval: Option<Approval>,
    },
    /// Drops the digests of events accepted before this time (ms): their timestamps are
    /// outside the event window, so a replay is refused as stale anyway.
    Forget {
        before: u64,
    },
}

/// A promotion and its JSON: serialized once, by the caller rather than the single writer
/// thread, for both the journal line and the database value.
#[derive(Debug, Clone)]
struct Record {
    promotion: Promotion,
    json: Box<serde_json::value::RawValue>,
}

impl Record {
    fn new(promotion: Promotion) -> Record {
        let json = serde_json::value::to_raw_value(&promotion)
            .expect("a promotion is plain data and always serializes");
        Record { promotion, json }
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Record {
    // Read back only when the journal is replayed. (Inside the tagged `Change`, serde
    // buffers the value, which a RawValue cannot be read from.)
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        Promotion::deserialize(d).map(Record::new)
    }
}

enum Reply {
    Accept(tokio::sync::oneshot::Sender<Result<Accepted, StoreError>>),
    Put(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
    Approve(tokio::sync::oneshot::Sender<Result<Promotion, StoreError>>),
}

struct Op {
    change: Change,
    reply: Reply,
}

/// What the hot paths need without scanning the database: the versions recorded per
/// pipeline (`ns/name`), for `decide`, and the promotions waiting to run, for the worker.
/// Rebuilt at open, then kept by the writer after each commit.
#[derive(Default)]
struct Index {
    history: HashMap<String, VersionIndex>,
    pending: HashMap<String, Due>,
    /// Promotions waiting for approval: id -> created_at.
    waiting: HashMap<String, u64>,
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
        if p.phase == Phase::WaitingApproval {
            self.waiting.insert(p.id.clone(), p.created_at);
        } else {
            self.waiting.remove(&p.id);
        }
    }
}

/// A writer thread silent for longer than this is dead or stuck.
const WRITER_SILENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Promotions waiting for approval: how many, and when the oldest was accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    pub count: usize,
    pub oldest_created_at: Option<u64>,
}

impl FromIterator<u64> for Waiting {
    fn from_iter<I: IntoIterator<Item = u64>>(created: I) -> Waiting {
        created
            .into_iter()
            .fold(Waiting::default(), |w, at| Waiting {
                count: w.count + 1,
                oldest_created_at: Some(w.oldest_created_at.map_or(at, |o| o.min(at))),
            })
    }
}

fn pipeline_key(p: &PipelineRef) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Pages of the database kept in memory. The promotions list is read in full and is
/// small; redb's default (1 GiB) would let a long-running server's memory grow with the
/// file.
const CACHE_BYTES: usize = 4 << 20;

fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
}

/// The database handle. After a failed write (a full or failing disk) redb refuses every
/// further transaction, so the writer closes the file and opens it again, replaying the
/// journal; until then readers are told the store is unavailable.
pub(crate) struct Slot {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

impl Slot {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().unwrap().clone().ok_or_else(|| {
            StoreError::Read(format!(
                "{} is being reopened after a write error",
                self.path.display()
            ))
        })
    }

    /// Closes the database: takes it from readers and waits (briefly) for those reading.
    fn close(&self) {
        let Some(db) = self.db.write().unwrap().take() else {
            return;
        };
        for _ in 0..1000 {
            if Arc::strong_count(&db) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(db);
    }

    /// Opens the database file again and applies what the journal holds (every change
    /// acknowledged since the last checkpoint; each is idempotent).
    fn reopen(&self, journal: &Path) -> Result<(), String> {
        self.close();
        let db = open_database(&self.path).map_err(|e| e.to_string())?;
        let pending = read_journal(journal).map_err(|e| e.to_string())?;
        let changes: Vec<&Change> = pending.iter().collect();
        if !changes.is_empty() {
            apply(&db, &changes, redb::Durability::None)?;
        }
        *self.db.write().unwrap() = Some(Arc::new(db));
        Ok(())
    }
}

/// The local promotion store. Clone freely.
#[derive(Clone)]
pub struct LocalStore {
    db: Arc<Slot>,
    ops: mpsc::SyncSender<Op>,
    index: SharedIndex,
    /// How the writer thread is doing.
    health: Arc<WriterHealth>,
}

/// Kept by the writer thread, read by the health probes.
pub(crate) struct WriterHealth {
    /// When the writer thread last went round (ms; it does at least every second).
    pub(crate) beat: std::sync::atomic::AtomicU64,
    /// The last write (a batch, a checkpoint, or the idle probe after a failure) failed.
    pub(crate) failed: std::sync::atomic::AtomicBool,
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
        let db = open_database(&path).map_err(|source| StoreError::Open {
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
        // Replay what a previous process journaled after its last checkpoint.
        let journal_path = data_dir.join("promotions.journal");
        let pending = read_journal(&journal_path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal_path)
            .map_err(|e| {
                StoreError::Write(format!("cannot open {}: {e}", journal_path.display()))
            })?;
        let mut journal = Journal {
            file,
            path: journal_path,
            len: 0,
            checkpointed: std::time::Instant::now(),
        };
        if !pending.is_empty() {
            tracing::info!(changes = pending.len(), "replaying the promotion journal");
            let changes: Vec<&Change> = pending.iter().collect();
            apply(&db, &changes, redb::Durability::Immediate).map_err(StoreError::Write)?;
        }
        journal.checkpoint(&db).map_err(StoreError::Write)?;
        let db = Arc::new(Slot {
            path,
            db: RwLock::new(Some(Arc::new(db))),
        });
        let (ops, rx) = mpsc::sync_channel(4096);
        let writer_db = db.clone();
        let store = LocalStore {
            db,
            ops,
            index: Arc::default(),
            health: Arc::new(WriterHealth {
                beat: std::sync::atomic::AtomicU64::new(now_ms()),
                failed: std::sync::atomic::AtomicBool::new(false),
            }),
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
            .spawn({
                let health = store.health.clone();
                move || writer(writer_db, rx, index, journal, health)
            })
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

    /// Whether the writer thread is alive (it goes round at least every second).
    pub fn writer_alive(&self) -> Result<(), String> {
        let beat = self.health.beat.load(std::sync::atomic::Ordering::Relaxed);
        let silent = now_ms().saturating_sub(beat);
        if silent > WRITER_SILENCE.as_millis() as u64 {
            return Err(format!(
                "the promotion store's writer thread has not run for {}s",
                silent / 1000
            ));
        }
        Ok(())
    }

    /// Whether a write can be taken now: the database is open (it is closed after a
    /// failed write until it is reopened) and the writer runs.
    pub fn writable(&self) -> Result<(), String> {
        self.writer_alive()?;
        if self
            .health
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(
                "the last write to the promotion store failed (the log says why); \
                        retried every second"
                    .to_string(),
            );
        }
        self.db
            .get()
            .map(|_| ())
            .map_err(|_| "the promotion store is being reopened after a write error".to_string())
    }

    /// Promotions waiting for approval.
    pub fn waiting(&self) -> Waiting {
        let index = self.index.lock().unwrap();
        index.waiting.values().copied().collect()
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
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(EVENTS).map_err(|e| read(&e))?;
        Ok(table
            .get(hex::encode(digest).as_bytes())
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
        self.send(Op {
            change: Change::Accept {
                digest: hex::encode(digest),
                promotions: promotions.into_iter().map(Record::new).collect(),
            },
            reply: Reply::Accept(reply),
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes a promotion's new state durably.
    pub async fn put(&self, promotion: Promotion) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op {
            change: Change::Put {
                promotion: Box::new(Record::new(promotion)),
            },
            reply: Reply::Put(reply),
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Forgets the digests of events accepted before `before` (ms since the epoch), so the
    /// replay record stays as large as the event window, not as the server's lifetime.
    pub async fn forget_events_before(&self, before: u64) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op {
            change: Change::Forget { before },
            reply: Reply::Put(reply),
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Moves a promotion waiting for approval to pending, if it is the one `approval`
    /// names.
    pub async fn approve(&self, id: &str, approval: &Approval) -> Result<Promotion, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op {
            change: Change::Approve {
                id: id.to_string(),
                approval: Some(approval.clone()),
            },
            reply: Reply::Approve(reply),
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub fn get(&self, id: &str) -> Result<Option<Promotion>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(PROMOTIONS).map_err(|e| read(&e))?;
        let value = table.get(id).map_err(|e| read(&e))?;
        value
            .map(|v| serde_json::from_slice(v.value()).map_err(|e| read(&e)))
            .transpose()
    }

    /// Every promotion, newest first.
    pub fn list(&self) -> Result<Vec<Promotion>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
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

/// The promotion records, wherever they live. Clone freely.
#[derive(Clone)]
pub enum Store {
    Local(LocalStore),
    Resources(Arc<resources::ResourceStore>),
}

impl Store {
    /// Runs `f` with every version recorded for `pipeline`, in any phase.
    pub fn with_history<R>(&self, pipeline: &PipelineRef, f: impl FnOnce(&VersionIndex) -> R) -> R {
        match self {
            Store::Local(s) => s.with_history(pipeline, f),
            Store::Resources(s) => s.with_history(pipeline, f),
        }
    }

    /// Readiness: whether an event can be recorded now (local: the database is open
    /// and its writer runs; Kubernetes: the Promotion watch is in sync).
    pub fn ready(&self) -> Result<(), String> {
        match self {
            Store::Local(s) => s.writable(),
            Store::Resources(s) => s.in_sync(),
        }
    }

    /// Liveness: the local store's writer thread runs.
    pub fn alive(&self) -> Result<(), String> {
        match self {
            Store::Local(s) => s.writer_alive(),
            Store::Resources(_) => Ok(()),
        }
    }

    /// Promotions waiting for approval.
    pub fn waiting(&self) -> Waiting {
        match self {
            Store::Local(s) => s.waiting(),
            Store::Resources(s) => s.waiting(),
        }
    }

    /// Promotions that may run, with when.
    pub fn pending(&self) -> Vec<(String, Due)> {
        match self {
            Store::Local(s) => s.pending(),
            Store::Resources(s) => s.pending(),
        }
    }

    /// Whether an event with this exact body was accepted before.
    pub fn seen(&self, body: &[u8]) -> Result<bool, StoreError> {
        match self {
            Store::Local(s) => s.seen(body),
            Store::Resources(s) => Ok(s.seen(body)),
        }
    }

    /// Records an accepted event's promotions durably; existing ones stay as they are.
    pub async fn accept(
        &self,
        body: &[u8],
        promotions: Vec<Promotion>,
    ) -> Result<Accepted, StoreError> {
        match self {
            Store::Local(s) => s.accept(body, promotions).await,
            // Boxed: inline, the kube client's future made every webhook request's
            // future 8.5 KB (656 bytes boxed), in local mode too.
            Store::Resources(s) => Box::pin(s.accept(body, promotions)).await,
        }
    }

    /// Writes a promotion's new state durably. Marking it running claims it: with
    /// several replicas that can fail with [`StoreError::Claimed`].
    pub async fn put(&self, promotion: Promotion) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => s.put(promotion).await,
            Store::Resources(s) => s.put(&promotion).await,
        }
    }

    /// Keeps this process's claim on a running promotion alive; returns only if it is
    /// lost (never for the local store, which one process owns).
    pub async fn hold(&self, id: &str) {
        match self {
            Store::Local(_) => std::future::pending().await,
            Store::Resources(s) => {
                s.hold(id).await;
                // Lost: let the promotion run to its end; its idempotency key keeps the
                // other replica's run from taking effect twice.
                std::future::pending().await
            }
        }
    }

    /// Local store: a promotion left running by a previous process is pending again.
    /// (Resources: a lapsed hold does the same, for any replica.)
    pub async fn resume_interrupted(&self) -> Result<usize, StoreError> {
        let Store::Local(s) = self else { return Ok(0) };
        let mut resumed = 0;
        for mut p in s.list()?.into_iter().filter(|p| p.phase == Phase::Running) {
            tracing::info!(promotion = %p.id, attempts = p.attempts, "resuming promotion interrupted by a restart");
            p.phase = Phase::Pending;
            p.next_attempt_at = None;
            p.updated_at = now_ms();
            s.put(p).await?;
            resumed += 1;
        }
        Ok(resumed)
    }

    pub async fn forget_events_before(&self, before: u64) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => s.forget_events_before(before).await,
            // Replays are told by the digest on the Promotion, which lives as long as it.
            Store::Resources(_) => Ok(()),
        }
    }

    /// Moves the promotion `id` from waiting for approval to pending, if it is the one
    /// `approval` names (else [`StoreError::Mismatch`]), recording who approved it.
    pub async fn approve(&self, id: &str, approval: &Approval) -> Result<Promotion, StoreError> {
        match self {
            Store::Local(s) => s.approve(id, approval).await,
            Store::Resources(s) => s.approve(id, approval).await,
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Promotion>, StoreError> {
        match self {
            Store::Local(s) => s.get(id),
            Store::Resources(s) => Ok(s.get(id)),
        }
    }

    /// Every promotion, newest first.
    pub fn list(&self) -> Result<Vec<Promotion>, StoreError> {
        match self {
            Store::Local(s) => s.list(),
            Store::Resources(s) => Ok(s.list()),
        }
    }
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
            approved_by: None,
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
    async fn changes_journaled_but_not_checkpointed_are_replayed_on_open() {
        use sha2::Digest;
        let dir = temp_dir("journal");
        std::fs::create_dir_all(&dir).unwrap();
        // What a process killed between its journal fsync and its next checkpoint leaves:
        // an acknowledged change, and a torn write that was never acknowledged.
        let digest = hex::encode(sha2::Sha256::digest(b"event-body"));
        let change = Change::Accept {
            digest,
            promotions: vec![Record::new(promotion("p1", "test", "1.0.0"))],
        };
        let mut text = serde_json::to_string(&change).unwrap();
        text.push('\n');
        text.push_str(r#"{"op":"put","promotion":{"id":"p2","#);
        std::fs::write(dir.join("promotions.journal"), text).unwrap();

        let store = LocalStore::open(&dir).unwrap();
        assert!(
            store.get("p1").unwrap().is_some(),
            "the journaled promotion is back"
        );
        assert!(
            store.seen(b"event-body").unwrap(),
            "and so is its event digest"
        );
        assert!(store.get("p2").unwrap().is_none());
        assert_eq!(store.pending().len(), 1);
        assert_eq!(
            std::fs::metadata(dir.join("promotions.journal"))
                .unwrap()
                .len(),
            0,
            "replayed changes are checkpointed and the journal emptied"
        );
    }

    #[tokio::test]
    async fn digests_of_events_older_than_the_cutoff_are_forgotten_and_nothing_else() {
        let dir = temp_dir("forget");
        let store = LocalStore::open(&dir).unwrap();
        store
            .accept(b"event-1", vec![promotion("p1", "test", "1.0.0")])
            .await
            .unwrap();
        store.forget_events_before(now_ms() - 60_000).await.unwrap();
        assert!(store.seen(b"event-1").unwrap(), "a recent digest is kept");
        store.forget_events_before(now_ms() + 1).await.unwrap();
        assert!(!store.seen(b"event-1").unwrap(), "an old digest is gone");
        assert!(store.get("p1").unwrap().is_some(), "promotions stay");
        // Through a restart (the change is journaled like any other).
        drop(store);
        std::thread::sleep(Duration::from_millis(50));
        let store = LocalStore::open(&dir).unwrap();
        assert!(!store.seen(b"event-1").unwrap());
        assert!(store.get("p1").unwrap().is_some());
    }

    fn approval(env: &str, version: &str) -> Approval {
        Approval {
            pipeline: PipelineRef {
                namespace: "ns".into(),
                name: "app".into(),
            },
            environment: env.into(),
            version: version.into(),
            by: "key ns/approvals".into(),
        }
    }

    #[tokio::test]
    async fn only_a_waiting_promotion_can_be_approved_and_the_approver_is_recorded() {
        let dir = temp_dir("approve");
        let store = LocalStore::open(&dir).unwrap();
        let mut waiting = promotion("w", "prod", "1.0.0");
        waiting.phase = Phase::WaitingApproval;
        store
            .accept(b"e", vec![waiting, promotion("p", "test", "1.0.0")])
            .await
            .unwrap();
        let approved = store
            .approve("w", &approval("prod", "1.0.0"))
            .await
            .unwrap();
        assert_eq!(approved.phase, Phase::Pending);
        let kept = store.get("w").unwrap().unwrap();
        assert_eq!(kept.approved_by.as_deref(), Some("key ns/approvals"));
        assert!(matches!(
            store.approve("p", &approval("test", "1.0.0")).await,
            Err(StoreError::NotWaiting { .. })
        ));
        assert!(matches!(
            store.approve("nope", &approval("prod", "1.0.0")).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn an_approval_for_another_promotion_never_approves_the_record_under_its_id() {
        let dir = temp_dir("approve-other");
        let store = LocalStore::open(&dir).unwrap();
        let mut waiting = promotion("w", "prod", "1.0.0");
        waiting.phase = Phase::WaitingApproval;
        store.accept(b"e", vec![waiting]).await.unwrap();
        let mut other_tenant = approval("prod", "1.0.0");
        other_tenant.pipeline.namespace = "other".into();
        for wrong in [
            other_tenant,
            approval("prod", "6.6.6"),
            approval("test", "1.0.0"),
        ] {
            let err = store.approve("w", &wrong).await.unwrap_err();
            assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
            assert!(err.to_string().contains("ns/app: 1.0.0 into prod"), "{err}");
        }
        assert_eq!(
            store.get("w").unwrap().unwrap().phase,
            Phase::WaitingApproval
        );
    }

    #[tokio::test]
    async fn a_colliding_id_from_another_promotion_is_refused_and_nothing_of_its_event_is_kept() {
        let dir = temp_dir("collide");
        let store = LocalStore::open(&dir).unwrap();
        store
            .accept(b"e1", vec![promotion("same", "prod", "1.0.0")])
            .await
            .unwrap();
        let mut other = promotion("same", "prod", "2.0.0");
        other.pipeline.namespace = "other".into();
        let err = store.accept(b"e2", vec![other]).await.unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        assert!(
            !store.seen(b"e2").unwrap(),
            "the refused event is not recorded as seen"
        );
        assert_eq!(store.get("same").unwrap().unwrap().version, "1.0.0");
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

    #[tokio::test]
    async fn a_silent_writer_thread_fails_liveness_and_readiness() {
        let dir = temp_dir("writer-health");
        let store = LocalStore::open(&dir).unwrap();
        assert_eq!(store.writer_alive(), Ok(()));
        assert_eq!(store.writable(), Ok(()));
        // As if the writer had stopped going round a minute ago (it goes round every
        // second while alive).
        let a_minute_ago = now_ms() - 60_000;
        store
            .health
            .beat
            .store(a_minute_ago, std::sync::atomic::Ordering::Relaxed);
        let dead = store.writer_alive().unwrap_err();
        assert!(dead.contains("writer thread has not run for 60s"), "{dead}");
        assert!(store.writable().is_err());
    }
}
