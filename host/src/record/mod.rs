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

use crate::decide::{Current, EnvLatest, History, Latest};
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

mod derived;
mod journal;
pub mod resources;
use journal::{Journal, apply, read_journal, writer};

const PROMOTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("promotions");
const EVENTS: TableDefinition<&[u8], u64> = TableDefinition::new("events");
/// Pipelines suspended through the admin API (local mode): `ns/name` -> who suspended it.
const SUSPENDED: TableDefinition<&str, &str> = TableDefinition::new("suspended");

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
    /// Recorded while its Pipeline was suspended; when the Pipeline is resumed, the newest
    /// held version per environment goes on (pending, or waiting for approval) and the
    /// others are superseded.
    Held,
    /// An operator rejected it while it waited for approval (`closedBy`, `closeReason`).
    Rejected,
    /// An operator stopped it before it ran (`closedBy`, `closeReason`).
    Aborted,
    /// A newer version reached its environment first (`closedBy` names it); never runs.
    Superseded,
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
            Phase::Held => "held",
            Phase::Rejected => "rejected",
            Phase::Aborted => "aborted",
            Phase::Superseded => "superseded",
        }
    }

    /// Every phase, as the API and the CLI spell them.
    pub const ALL: [Phase; 11] = [
        Phase::Requested,
        Phase::Pending,
        Phase::WaitingApproval,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Refused,
        Phase::Held,
        Phase::Rejected,
        Phase::Aborted,
        Phase::Superseded,
    ];

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Final: nothing moves it on (a failed one can be retried by an operator).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Phase::Succeeded
                | Phase::Failed
                | Phase::Refused
                | Phase::Rejected
                | Phase::Aborted
                | Phase::Superseded
        )
    }

    /// Not yet run, and may still run: what a newer version supersedes.
    pub fn is_open(self) -> bool {
        matches!(self, Phase::Pending | Phase::WaitingApproval | Phase::Held)
    }
}

/// How a promotion came to be recorded.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// A Flux event from the environment before.
    #[default]
    Event,
    /// An operator asked for this version (`promoter promote`, or a Promotion created
    /// with kubectl).
    Manual,
    /// An operator asked for a version older than the one in the environment
    /// (`promoter promote --rollback`).
    Rollback,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Event => "event",
            Cause::Manual => "manual",
            Cause::Rollback => "rollback",
        }
    }

    fn is_event(&self) -> bool {
        *self == Cause::Event
    }
}

fn first_round() -> u32 {
    1
}

fn is_first_round(round: &u32) -> bool {
    *round <= 1
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
    /// How it came to be recorded.
    #[serde(default, skip_serializing_if = "Cause::is_event")]
    pub cause: Cause,
    /// The same version promoted into the same environment again (a rollback to it, or a
    /// promotion after the first was rejected, aborted or superseded) is a new record, its
    /// round one more than the last; its id is [`crate::decide::promotion_id_round`].
    #[serde(default = "first_round", skip_serializing_if = "is_first_round")]
    pub round: u32,
    /// Who asked for it, when an operator did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why, in the words of who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who last ran it again after it failed, and when (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_at: Option<u64>,
    /// Rejected or aborted: by whom; superseded: by which version (and its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

impl Promotion {
    /// `ns/pipeline: version into env`, as errors name a promotion.
    pub fn describe(&self) -> String {
        describe(&self.pipeline, &self.target_environment, &self.version)
    }

    /// A bare record of `version` having succeeded into `environment`: what a history
    /// built by hand (tests, properties) holds.
    pub fn succeeded(environment: &str, version: &str) -> Promotion {
        Promotion {
            phase: Phase::Succeeded,
            attempts: 1,
            ..Promotion::blank(environment, version)
        }
    }

    /// A record of `version` into `environment` with nothing else said yet (pending,
    /// recorded by an event, first round): the base the fields that matter are set on.
    pub fn blank(environment: &str, version: &str) -> Promotion {
        Promotion {
            id: String::new(),
            pipeline: PipelineRef {
                namespace: String::new(),
                name: String::new(),
            },
            source_environment: String::new(),
            target_environment: environment.to_string(),
            version: version.to_string(),
            targets: Vec::new(),
            app: AppRef {
                api_version: String::new(),
                kind: String::new(),
                name: String::new(),
            },
            strategy: StrategyRef::default(),
            event: EventInfo::default(),
            phase: Phase::Pending,
            attempts: 0,
            last_error: None,
            outcome_url: None,
            outcome_details: None,
            created_at: 0,
            updated_at: 0,
            next_attempt_at: None,
            finished_at: None,
            approved_by: None,
            cause: Cause::Event,
            round: 1,
            requested_by: None,
            reason: None,
            retried_by: None,
            retried_at: None,
            closed_by: None,
            close_reason: None,
        }
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

/// A step taken on one recorded promotion: an approval, or an operator's command. It is
/// checked against the record as it stands when it is applied (in the local store's writer,
/// or on the Promotion resource just read), so two operators racing cannot both win.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    Approve(Approval),
    /// A failed promotion runs again: same id (the idempotency key), a new count of attempts.
    /// `approve_again`: it waits for approval first (an event's retry into an environment
    /// with `manual: true`).
    Retry {
        by: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        approve_again: bool,
    },
    /// A promotion waiting for approval will never run.
    Reject {
        by: String,
        reason: String,
    },
    /// A promotion that has not run (pending, waiting or held), or that failed, will never
    /// run (again).
    Abort {
        by: String,
        reason: String,
    },
    /// A newer version reached the environment (`by` names it): this one never runs.
    Supersede {
        by: String,
    },
    /// Its Pipeline was resumed and this is the newest held version for its environment.
    Release {
        manual: bool,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Approve(_) => "approve",
            Action::Retry { .. } => "retry",
            Action::Reject { .. } => "reject",
            Action::Abort { .. } => "abort",
            Action::Supersede { .. } => "supersede",
            Action::Release { .. } => "release",
        }
    }

    /// `p` after this step, or why the step does not apply to it.
    pub fn apply(&self, mut p: Promotion, now: u64) -> Result<Promotion, StoreError> {
        let wrong = |p: &Promotion, wanted: &'static str| StoreError::WrongPhase {
            id: p.id.clone(),
            phase: p.phase.as_str(),
            action: self.name(),
            wanted,
        };
        match self {
            Action::Approve(_) | Action::Release { .. } if p.phase == Phase::Superseded => {
                return Err(StoreError::Superseded {
                    by: p.closed_by.unwrap_or_else(|| "a newer version".into()),
                    id: p.id,
                });
            }
            Action::Approve(approval) => return approval.apply(p, now),
            Action::Retry { by, approve_again } => {
                if p.phase != Phase::Failed {
                    return Err(wrong(&p, "failed"));
                }
                p.phase = if *approve_again {
                    p.approved_by = None;
                    Phase::WaitingApproval
                } else {
                    Phase::Pending
                };
                // A new count of attempts, under the same id (the idempotency key).
                p.attempts = 0;
                p.next_attempt_at = None;
                p.finished_at = None;
                p.retried_by = Some(by.clone());
                p.retried_at = Some(now);
            }
            Action::Reject { by, reason } => {
                if p.phase != Phase::WaitingApproval {
                    return Err(wrong(&p, "waiting-approval"));
                }
                p.phase = Phase::Rejected;
                p.closed_by = Some(by.clone());
                p.close_reason = Some(reason.clone());
                p.finished_at = Some(now);
            }
            Action::Abort { by, reason } => {
                if !p.phase.is_open() && p.phase != Phase::Failed {
                    return Err(wrong(&p, "pending, waiting-approval, held or failed"));
                }
                p.phase = Phase::Aborted;
                p.closed_by = Some(by.clone());
                p.close_reason = Some(reason.clone());
                p.finished_at = Some(now);
            }
            Action::Supersede { by } => {
                if !p.phase.is_open() {
                    return Err(wrong(&p, "pending, waiting-approval or held"));
                }
                p.phase = Phase::Superseded;
                p.closed_by = Some(by.clone());
                p.finished_at = Some(now);
            }
            Action::Release { manual } => {
                if p.phase != Phase::Held {
                    return Err(wrong(&p, "held"));
                }
                p.phase = if *manual && p.approved_by.is_none() {
                    Phase::WaitingApproval
                } else {
                    Phase::Pending
                };
            }
        }
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
    #[error("promotion {id} is {phase}: only a promotion that is {wanted} can be given {action}")]
    WrongPhase {
        id: String,
        phase: &'static str,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("promotion {id} was superseded by {by}; it will not run")]
    Superseded { id: String, by: String },
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
    /// A step on one promotion ([`Action`]), checked when applied.
    Act {
        id: String,
        action: Action,
    },
    /// Deletes at most `most` records finished before this time (ms), except the one
    /// that put the version now in its environment there.
    Prune {
        before: u64,
        most: usize,
    },
    /// Suspends the pipeline `ns/name` (`by`: who), or resumes it (`by` absent).
    Suspend {
        pipeline: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
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
    Act(tokio::sync::oneshot::Sender<Result<Promotion, StoreError>>),
    Count(tokio::sync::oneshot::Sender<Result<usize, StoreError>>),
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
    /// Per pipeline (`ns/name`), per environment: the newest version recorded and the one
    /// there now. Constant in size per environment; everything else a decision needs is
    /// looked up by id.
    envs: HashMap<String, HashMap<String, EnvLatest>>,
    pending: HashMap<String, Due>,
    /// Promotions waiting for approval: id -> created_at.
    waiting: HashMap<String, u64>,
    /// Promotions held while their Pipeline is suspended.
    held: std::collections::HashSet<String>,
    /// Pipelines suspended through the admin API: `ns/name` -> who.
    suspended: HashMap<String, String>,
}

type SharedIndex = Arc<Mutex<Index>>;

/// When a pending promotion may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub created_at: u64,
    pub next_attempt_at: Option<u64>,
}

impl Index {
    fn note(&mut self, p: &Promotion) {
        self.envs
            .entry(pipeline_key(&p.pipeline))
            .or_default()
            .entry(p.target_environment.clone())
            .or_default()
            .note(p);
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
        if p.phase == Phase::Held {
            self.held.insert(p.id.clone());
        } else {
            self.held.remove(&p.id);
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

/// Pages of the database kept in memory: what the index tables and recent records need.
/// redb's default (1 GiB) would let a long-running server's memory grow with the file.
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
            txn.open_table(SUSPENDED)
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
        if derived::rebuild_if_needed(&db).map_err(StoreError::Write)? {
            tracing::info!(
                "indexed the promotion records (a data directory from an older version)"
            );
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
            // What is constant per environment, and the promotions not finished: never
            // every record.
            let (envs, open) = store.read_derived()?;
            let mut index = store.index.lock().unwrap();
            for ((pipeline, env), latest) in envs {
                index.envs.entry(pipeline).or_default().insert(env, latest);
            }
            for p in open {
                index.note(&p);
            }
            index.suspended = store.read_suspended()?;
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

    /// Runs `f` with the history of `pipeline`.
    /// The pipeline's environments are read once, when the decision first asks (an event
    /// that is no deployment never does).
    pub fn with_history<R>(&self, pipeline: &PipelineRef, f: impl FnOnce(&dyn History) -> R) -> R {
        f(&LocalHistory {
            store: self,
            pipeline,
            envs: std::cell::OnceCell::new(),
        })
    }

    /// What the index says of each environment of `pipeline` now.
    fn env_index(&self, pipeline: &PipelineRef) -> HashMap<String, EnvLatest> {
        let index = self.index.lock().unwrap();
        index
            .envs
            .get(&pipeline_key(pipeline))
            .cloned()
            .unwrap_or_default()
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

    /// The derived tables' per-environment state, and the records not finished.
    #[allow(clippy::type_complexity)]
    fn read_derived(
        &self,
    ) -> Result<(Vec<((String, String), EnvLatest)>, Vec<Promotion>), StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(derived::ENVS).map_err(|e| read(&e))?;
        let mut envs = Vec::new();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (k, v) = entry.map_err(|e| read(&e))?;
            let (pipeline, env) = k.value();
            let latest: EnvLatest = serde_json::from_slice(v.value()).map_err(|e| read(&e))?;
            envs.push(((pipeline.to_string(), env.to_string()), latest));
        }
        let table = txn.open_table(derived::OPEN).map_err(|e| read(&e))?;
        let mut ids = Vec::new();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (k, _) = entry.map_err(|e| read(&e))?;
            ids.push(k.value().to_string());
        }
        drop(table);
        drop(txn);
        let mut open = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get(&id)? {
                open.push(p);
            }
        }
        Ok((envs, open))
    }

    /// What the index says of the last round of `version` (any spelling) into `env` of
    /// `pipeline`: one read, no record parsed.
    fn version_state(
        &self,
        pipeline: &PipelineRef,
        env: &str,
        version: &str,
    ) -> Result<Option<Latest>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(derived::VERSIONS).map_err(|e| read(&e))?;
        let key = crate::decide::version_key(version);
        let pipeline = pipeline_key(pipeline);
        let found = table
            .get((pipeline.as_str(), env, key.as_str()))
            .map_err(|e| read(&e))?;
        Ok(found.and_then(|v| {
            let (round, id, phase, succeeded) = v.value();
            Some(Latest {
                id: id.to_string(),
                phase: Phase::parse(phase)?,
                round,
                succeeded,
            })
        }))
    }

    /// A page of records newest first, after `after`: through the records of one pipeline
    /// when the query names it with its namespace, else through all.
    pub fn page(
        &self,
        query: &Query,
        limit: usize,
        after: Option<&Cursor>,
        readable: &dyn Fn(&str) -> bool,
    ) -> Result<Page, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
        let promotions = txn.open_table(PROMOTIONS).map_err(|e| read(&e))?;
        let record = |id: &str| -> Result<Promotion, StoreError> {
            let v = promotions
                .get(id)
                .map_err(|e| read(&e))?
                .ok_or_else(|| StoreError::Read(format!("the index names {id}, which is gone")))?;
            serde_json::from_slice(v.value()).map_err(|e| read(&e))
        };
        if let (Some(ns), Some(name)) = (&query.namespace, &query.pipeline) {
            let key = format!("{ns}/{name}");
            let table = txn.open_table(derived::BY_PIPELINE).map_err(|e| read(&e))?;
            let end = match after {
                Some((at, id)) => (key.as_str(), *at, id.as_str()),
                None => (key.as_str(), u64::MAX, ""),
            };
            let range = table
                .range((key.as_str(), 0u64, "")..end)
                .map_err(|e| read(&e))?;
            let records = range.rev().map(|entry| {
                let (k, _) = entry.map_err(|e| read(&e))?;
                record(k.value().2)
            });
            return fill_page(records, query, limit, readable);
        }
        let table = txn.open_table(derived::BY_TIME).map_err(|e| read(&e))?;
        let range = match after {
            Some((at, id)) => table.range(..(*at, id.as_str())),
            None => table.range::<(u64, &str)>(..),
        }
        .map_err(|e| read(&e))?;
        let records = range.rev().map(|entry| {
            let (k, _) = entry.map_err(|e| read(&e))?;
            record(k.value().1)
        });
        fill_page(records, query, limit, readable)
    }

    /// The namespaces that have promotions.
    pub fn namespaces(&self) -> std::collections::BTreeSet<String> {
        let index = self.index.lock().unwrap();
        index
            .envs
            .keys()
            .filter_map(|k| k.split_once('/').map(|(ns, _)| ns.to_string()))
            .collect()
    }

    /// Records running when the last process stopped (or now).
    pub fn running(&self) -> Result<Vec<Promotion>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let ids: Vec<String> = {
            let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
            let table = txn.open_table(derived::OPEN).map_err(|e| read(&e))?;
            let mut ids = Vec::new();
            for entry in table.iter().map_err(|e| read(&e))? {
                let (k, v) = entry.map_err(|e| read(&e))?;
                if v.value() == Phase::Running.as_str() {
                    ids.push(k.value().to_string());
                }
            }
            ids
        };
        let mut found = Vec::new();
        for id in ids {
            if let Some(p) = self.get(&id)?.filter(|p| p.phase == Phase::Running) {
                found.push(p);
            }
        }
        Ok(found)
    }

    fn read_suspended(&self) -> Result<HashMap<String, String>, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.get()?.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(SUSPENDED).map_err(|e| read(&e))?;
        let mut all = HashMap::new();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (k, v) = entry.map_err(|e| read(&e))?;
            all.insert(k.value().to_string(), v.value().to_string());
        }
        Ok(all)
    }

    /// Who suspended `pipeline` through the admin API, if it is.
    pub fn suspended(&self, pipeline: &PipelineRef) -> Option<String> {
        let index = self.index.lock().unwrap();
        index.suspended.get(&pipeline_key(pipeline)).cloned()
    }

    /// Suspends `pipeline` (`by`: who) or resumes it (`None`), durably.
    pub async fn suspend(
        &self,
        pipeline: &PipelineRef,
        by: Option<String>,
    ) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op {
            change: Change::Suspend {
                pipeline: pipeline_key(pipeline),
                by,
            },
            reply: Reply::Put(reply),
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Promotions held while their Pipeline is suspended.
    pub fn held(&self) -> Result<Vec<Promotion>, StoreError> {
        let ids: Vec<String> = self.index.lock().unwrap().held.iter().cloned().collect();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get(&id)?.filter(|p| p.phase == Phase::Held) {
                found.push(p);
            }
        }
        Ok(found)
    }

    /// The promotions that have not run and may still: pending, waiting or held.
    pub fn not_run(&self) -> Result<Vec<Promotion>, StoreError> {
        let ids: Vec<String> = {
            let index = self.index.lock().unwrap();
            let mut ids: Vec<String> = index.pending.keys().cloned().collect();
            ids.extend(index.waiting.keys().cloned());
            ids.extend(index.held.iter().cloned());
            ids
        };
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get(&id)?.filter(|p| p.phase.is_open()) {
                found.push(p);
            }
        }
        Ok(found)
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

    /// Deletes the records finished more than `keep` ago, except the promotion that put
    /// each environment's version there (what later decisions and rollbacks compare
    /// with), in batches so that events are not held up; the number deleted.
    pub async fn prune(&self, keep: Duration) -> Result<usize, StoreError> {
        const BATCH: usize = 2000;
        let before = now_ms().saturating_sub(keep.as_millis() as u64);
        let mut deleted = 0;
        loop {
            let (reply, rx) = tokio::sync::oneshot::channel();
            self.send(Op {
                change: Change::Prune {
                    before,
                    most: BATCH,
                },
                reply: Reply::Count(reply),
            })?;
            let done = rx.await.map_err(|_| StoreError::Closed)??;
            deleted += done;
            if done < BATCH {
                return Ok(deleted);
            }
        }
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
        self.act(id, Action::Approve(approval.clone())).await
    }

    /// Applies `action` to the promotion `id` durably, if it applies to the record as it
    /// stands then; answers the promotion after it.
    pub async fn act(&self, id: &str, action: Action) -> Result<Promotion, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Op {
            change: Change::Act {
                id: id.to_string(),
                action,
            },
            reply: Reply::Act(reply),
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

/// What `GET /promotions` filters on; each given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Query {
    pub fn matches(&self, p: &Promotion) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.namespace, &p.pipeline.namespace)
            && is(&self.pipeline, &p.pipeline.name)
            && is(&self.environment, &p.target_environment)
            && self.phase.is_none_or(|ph| ph == p.phase)
            && is(&self.version, &p.version)
    }
}

/// A place in the newest-first order of records: (createdAt, id) of the last one a page
/// looked at; the next page holds those before it.
pub type Cursor = (u64, String);

/// One page of records, newest first, and where the next begins (none: this was the last).
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Promotion>,
    pub next: Option<Cursor>,
}

/// Records a page looks at before it answers with what it found (and where to go on), so
/// a query that matches few records of many answers in bounded time.
pub const PAGE_SCAN: usize = 20_000;

/// Fills a page from `records`, newest first and after `after`, with at most `limit` that
/// match `query` and whose namespace is `readable`.
fn fill_page(
    records: impl Iterator<Item = Result<Promotion, StoreError>>,
    query: &Query,
    limit: usize,
    readable: &dyn Fn(&str) -> bool,
) -> Result<Page, StoreError> {
    let mut page = Page::default();
    // Past the scan budget, the page still takes the rest of the millisecond it stopped
    // in, so the next page can start after that millisecond: a cursor never names a
    // record the caller may not read.
    let mut stopping_in: Option<u64> = None;
    for (looked, p) in records.enumerate() {
        let p = p?;
        if stopping_in.is_some_and(|at| p.created_at != at) {
            page.next = stopping_in.map(|at| (at, String::new()));
            return Ok(page);
        }
        let at = (p.created_at, p.id.clone());
        if query.matches(&p) && readable(&p.pipeline.namespace) {
            page.items.push(p);
            if page.items.len() == limit {
                page.next = Some(at);
                return Ok(page);
            }
        }
        if looked + 1 >= PAGE_SCAN && stopping_in.is_none() {
            stopping_in = Some(at.0);
        }
    }
    Ok(page)
}

/// The local store's history of one pipeline: what is constant in size per environment
/// from the index, the records of one version looked up by id.
struct LocalHistory<'a> {
    store: &'a LocalStore,
    pipeline: &'a PipelineRef,
    envs: std::cell::OnceCell<HashMap<String, EnvLatest>>,
}

impl LocalHistory<'_> {
    fn env(&self, target_env: &str) -> Option<&EnvLatest> {
        self.envs
            .get_or_init(|| self.store.env_index(self.pipeline))
            .get(target_env)
    }
}

impl History for LocalHistory<'_> {
    fn latest(&self, target_env: &str, version: &str) -> Option<Latest> {
        match self.store.version_state(self.pipeline, target_env, version) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("cannot read what is recorded of {version} into {target_env}: {e}");
                None
            }
        }
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        self.env(target_env).and_then(EnvLatest::newest)
    }

    fn current(&self, target_env: &str) -> Option<Current> {
        self.env(target_env).and_then(EnvLatest::current)
    }
}

/// The promotion records, wherever they live. Clone freely.
#[derive(Clone)]
pub enum Store {
    Local(LocalStore),
    Resources(Arc<resources::ResourceStore>),
}

impl Store {
    /// Runs `f` with the history of `pipeline`.
    pub fn with_history<R>(&self, pipeline: &PipelineRef, f: impl FnOnce(&dyn History) -> R) -> R {
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
        for mut p in s.running()? {
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
    /// `approval` names (else [`StoreError::Mismatch`]), recording who approved it. One a
    /// newer version superseded is refused ([`StoreError::Superseded`]) and marked so.
    pub async fn approve(&self, id: &str, approval: &Approval) -> Result<Promotion, StoreError> {
        let namespace = approval.pipeline.namespace.clone();
        self.act(id, &namespace, Action::Approve(approval.clone()))
            .await
    }

    /// Applies `action` to the promotion `id` of `namespace` durably, if it applies to
    /// the record as it stands; answers the record after it. Approving or releasing one
    /// a newer version superseded marks it superseded instead, and says so.
    pub async fn act(
        &self,
        id: &str,
        namespace: &str,
        action: Action,
    ) -> Result<Promotion, StoreError> {
        if matches!(action, Action::Approve(_) | Action::Release { .. })
            && let Some(p) = self.get(id)?
            && p.pipeline.namespace == namespace
            && let Some(by) = self.superseded_by(&p)
        {
            self.act_unchecked(id, namespace, Action::Supersede { by: by.clone() })
                .await?;
            return Err(StoreError::Superseded {
                id: id.to_string(),
                by,
            });
        }
        self.act_unchecked(id, namespace, action).await
    }

    async fn act_unchecked(
        &self,
        id: &str,
        namespace: &str,
        action: Action,
    ) -> Result<Promotion, StoreError> {
        match self {
            Store::Local(s) => {
                match s.get(id)? {
                    Some(p) if p.pipeline.namespace == namespace => {}
                    _ => return Err(StoreError::NotFound(id.to_string())),
                }
                s.act(id, action).await
            }
            Store::Resources(s) => s.act(id, namespace, action).await,
        }
    }

    /// The newer version (and its id) that supersedes `p`, when one succeeded into its
    /// environment after `p` was recorded and `p` has not run.
    pub fn superseded_by(&self, p: &Promotion) -> Option<String> {
        if !p.phase.is_open() {
            return None;
        }
        let current = self.with_history(&p.pipeline, |h| h.current(&p.target_environment))?;
        crate::decide::supersedes(&current, p)
            .then(|| format!("{} ({})", current.version, current.id))
    }

    /// After `done` succeeded: every promotion into its environment that has not run and
    /// that it supersedes is marked superseded (and never runs).
    pub async fn supersede_older(&self, done: &Promotion) -> Result<Vec<String>, StoreError> {
        let current = Current {
            id: done.id.clone(),
            version: done.version.clone(),
            finished_at: done.finished_at.unwrap_or(done.updated_at),
        };
        let by = format!("{} ({})", done.version, done.id);
        let mut superseded = Vec::new();
        for p in self.not_run()? {
            if p.pipeline == done.pipeline
                && p.target_environment == done.target_environment
                && crate::decide::supersedes(&current, &p)
            {
                match self
                    .act_unchecked(
                        &p.id,
                        &p.pipeline.namespace,
                        Action::Supersede { by: by.clone() },
                    )
                    .await
                {
                    Ok(_) => superseded.push(p.id),
                    // Moved on meanwhile (ran, approved and claimed, aborted).
                    Err(StoreError::WrongPhase { .. } | StoreError::Claimed { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(superseded)
    }

    /// Promotions held while their Pipeline is suspended.
    pub fn held(&self) -> Result<Vec<Promotion>, StoreError> {
        match self {
            Store::Local(s) => s.held(),
            Store::Resources(s) => Ok(s.held()),
        }
    }

    /// The promotions that have not run and may still: pending, waiting or held.
    pub fn not_run(&self) -> Result<Vec<Promotion>, StoreError> {
        match self {
            Store::Local(s) => s.not_run(),
            Store::Resources(s) => Ok(s.not_run()),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Promotion>, StoreError> {
        match self {
            Store::Local(s) => s.get(id),
            Store::Resources(s) => Ok(s.get(id)),
        }
    }

    /// A page of records newest first after `after`, of those matching `query` in a
    /// namespace `readable` says the caller may read.
    pub fn page(
        &self,
        query: &Query,
        limit: usize,
        after: Option<&Cursor>,
        readable: &dyn Fn(&str) -> bool,
    ) -> Result<Page, StoreError> {
        match self {
            Store::Local(s) => s.page(query, limit, after, readable),
            Store::Resources(s) => {
                let all = s.list();
                let records = all
                    .into_iter()
                    .filter(|p| after.is_none_or(|(at, id)| (p.created_at, &p.id) < (*at, id)))
                    .map(Ok);
                fill_page(records, query, limit, readable)
            }
        }
    }

    /// The namespaces that have promotions.
    pub fn namespaces(&self) -> std::collections::BTreeSet<String> {
        match self {
            Store::Local(s) => s.namespaces(),
            Store::Resources(s) => s.list().into_iter().map(|p| p.pipeline.namespace).collect(),
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
            ..Promotion::blank(env, version)
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

    /// Opens the store in `dir`, waiting for the previous handle's writer to let go.
    fn reopen(dir: &std::path::Path) -> LocalStore {
        for _ in 0..200 {
            match LocalStore::open(dir) {
                Ok(store) => return store,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        LocalStore::open(dir).unwrap()
    }

    #[tokio::test]
    async fn a_data_dir_from_before_the_derived_tables_is_indexed_once_at_open() {
        use crate::decide::promotion_id;
        let dir = temp_dir("derived");
        let (w, p, s) = (
            promotion_id("ns", "app", "prod", "1.0.0"),
            promotion_id("ns", "app", "test", "1.1.0"),
            promotion_id("ns", "app", "test", "1.0.0"),
        );
        {
            let store = LocalStore::open(&dir).unwrap();
            let mut waiting = promotion(&w, "prod", "1.0.0");
            waiting.phase = Phase::WaitingApproval;
            let mut done = promotion(&s, "test", "1.0.0");
            done.phase = Phase::Succeeded;
            done.finished_at = Some(done.created_at);
            let records = vec![waiting, promotion(&p, "test", "1.1.0"), done];
            store.accept(b"e", records).await.unwrap();
        }
        // The file as an older version left it: records only.
        {
            let db = loop {
                match open_database(&dir.join("promotions.redb")) {
                    Ok(db) => break db,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            };
            let txn = db.begin_write().unwrap();
            txn.delete_table(derived::OPEN).unwrap();
            txn.delete_table(derived::ENVS).unwrap();
            txn.delete_table(derived::VERSIONS).unwrap();
            txn.delete_table(derived::META).unwrap();
            txn.commit().unwrap();
        }
        let store = reopen(&dir);
        assert_eq!(store.waiting().count, 1);
        assert_eq!(store.pending().len(), 1);
        let pipeline = promotion(&w, "prod", "1.0.0").pipeline;
        let (latest, current) = store.with_history(&pipeline, |h| {
            (h.latest("test", "v1.0.0"), h.current("test"))
        });
        assert_eq!(
            latest.map(|l| (l.id, l.phase)),
            Some((s.clone(), Phase::Succeeded))
        );
        assert_eq!(current.map(|c| c.version), Some("1.0.0".to_string()));
        assert_eq!(store.namespaces().into_iter().collect::<Vec<_>>(), ["ns"]);
    }

    #[tokio::test]
    async fn pages_go_newest_first_through_every_record_once_and_filters_hold() {
        let dir = temp_dir("pages");
        let store = LocalStore::open(&dir).unwrap();
        let mut records = Vec::new();
        for n in 0..250u64 {
            let env = if n % 2 == 0 { "test" } else { "prod" };
            let mut p = promotion(&format!("p{n:03}"), env, &format!("1.0.{n}"));
            p.created_at = 1_000 + n / 3; // ties in time: the id orders them
            if n % 5 == 0 {
                p.pipeline.name = "other".into();
            }
            records.push(p);
        }
        store.accept(b"e", records).await.unwrap();
        let all = |query: &Query, limit: usize| {
            let mut seen = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store.page(query, limit, after.as_ref(), &|_| true).unwrap();
                pages += 1;
                seen.extend(page.items.into_iter().map(|p| (p.created_at, p.id)));
                match page.next {
                    Some(next) => after = Some(next),
                    None => return (seen, pages),
                }
            }
        };
        let (seen, pages) = all(&Query::default(), 100);
        assert_eq!(seen.len(), 250);
        assert_eq!(pages, 3);
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "newest first, each once");
        // Through one pipeline's index, with a filter on top.
        let query = Query {
            namespace: Some("ns".into()),
            pipeline: Some("app".into()),
            environment: Some("test".into()),
            ..Default::default()
        };
        let (seen, _) = all(&query, 7);
        let want = (0..250u64).filter(|n| n % 2 == 0 && n % 5 != 0).count();
        assert_eq!(seen.len(), want);
        // Only namespaces the caller may read.
        let page = store
            .page(&Query::default(), 100, None, &|ns| ns != "ns")
            .unwrap();
        assert!(page.items.is_empty());
    }

    #[test]
    fn an_event_retry_into_a_manual_environment_waits_for_approval_and_a_failed_one_can_be_aborted()
    {
        let failed = Promotion {
            phase: Phase::Failed,
            approved_by: Some("key ns/approvals".into()),
            attempts: 5,
            ..promotion("f", "prod", "1.0.0")
        };
        let again = Action::Retry {
            by: "event from test".into(),
            approve_again: true,
        };
        let p = again.apply(failed.clone(), 1).unwrap();
        assert_eq!(p.phase, Phase::WaitingApproval);
        assert_eq!(p.approved_by, None, "the old approval does not carry over");
        assert_eq!(p.attempts, 0);
        let abort = Action::Abort {
            by: "user alice".into(),
            reason: "known bad".into(),
        };
        assert_eq!(abort.apply(failed, 1).unwrap().phase, Phase::Aborted);
    }

    #[tokio::test]
    async fn a_page_that_runs_out_of_budget_names_no_record_the_caller_may_not_read() {
        let dir = temp_dir("page-budget");
        let store = LocalStore::open(&dir).unwrap();
        let mut records: Vec<Promotion> = (0..PAGE_SCAN + 50)
            .map(|n| Promotion {
                created_at: 1_000 + n as u64 / 4,
                ..promotion(&format!("b-{n:06}"), "test", &format!("1.0.{n}"))
            })
            .collect();
        for p in &mut records {
            p.pipeline.namespace = "team-b".into();
        }
        store.accept(b"e", records).await.unwrap();
        let only_a = |ns: &str| ns == "team-a";
        let page = store.page(&Query::default(), 100, None, &only_a).unwrap();
        assert!(page.items.is_empty());
        let (at, id) = page.next.expect("more to look at");
        assert_eq!(id, "", "the cursor names no team-b record");
        let rest = store
            .page(&Query::default(), 100, Some(&(at, id)), &only_a)
            .unwrap();
        assert!(rest.items.is_empty() && rest.next.is_none());
    }

    #[tokio::test]
    async fn pruning_keeps_what_is_not_finished_recent_or_in_its_environment_now() {
        use crate::decide::promotion_id;
        let dir = temp_dir("prune");
        let store = LocalStore::open(&dir).unwrap();
        let hours = |h: u64| now_ms() - h * 3_600_000;
        let record = |env: &str, version: &str, phase: Phase, finished: Option<u64>| Promotion {
            phase,
            created_at: hours(100),
            finished_at: finished,
            ..promotion(&promotion_id("ns", "app", env, version), env, version)
        };
        let mut there_now = record("test", "1.4.0", Phase::Succeeded, Some(hours(0)));
        there_now.created_at = hours(1);
        let records = vec![
            record("test", "1.0.0", Phase::Succeeded, Some(hours(99))),
            record("test", "1.1.0", Phase::Succeeded, Some(hours(98))),
            record("test", "1.2.0", Phase::Failed, Some(hours(97))),
            record("test", "1.3.0", Phase::WaitingApproval, None),
            there_now,
            // Old, but what prod runs: kept.
            record("prod", "1.0.0", Phase::Succeeded, Some(hours(96))),
        ];
        store.accept(b"e", records).await.unwrap();
        let deleted = store.prune(Duration::from_secs(3600 * 24)).await.unwrap();
        // 1.0.0, 1.1.0 and 1.2.0 finished long ago; 1.3.0 waits; 1.4.0 is recent (and
        // there now).
        assert_eq!(deleted, 3);
        let left: std::collections::BTreeSet<String> = store
            .page(&Query::default(), 100, None, &|_| true)
            .unwrap()
            .items
            .into_iter()
            .map(|p| format!("{} {}", p.target_environment, p.version))
            .collect();
        assert_eq!(
            left.into_iter().collect::<Vec<_>>(),
            ["prod 1.0.0", "test 1.3.0", "test 1.4.0"]
        );
        assert_eq!(store.waiting().count, 1);
        let pipeline = promotion("x", "test", "1.0.0").pipeline;
        let current = store.with_history(&pipeline, |h| h.current("test"));
        assert_eq!(current.map(|c| c.version), Some("1.4.0".to_string()));
        // What decisions ask of a version outlives its record: an event for 1.0.0 is
        // still "already promoted", and a rollback to it gets round 2.
        let gone = store.with_history(&pipeline, |h| h.latest("test", "1.0.0"));
        assert_eq!(
            gone.map(|l| (l.phase, l.round, l.succeeded)),
            Some((Phase::Succeeded, 1, true))
        );
        // The newest version recorded is remembered after its record went.
        assert_eq!(
            store.with_history(&pipeline, |h| h.newest("test")),
            Some("1.4.0".to_string())
        );
        assert_eq!(
            store.prune(Duration::from_secs(3600 * 24)).await.unwrap(),
            0
        );
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
