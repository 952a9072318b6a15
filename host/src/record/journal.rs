//! The write path: a single writer thread that journals each batch with one fsync,
//! applies it to the database, answers, and checkpoints the database now and then.

use super::{
    Accepted, Action, Approval, Change, EVENTS, Op, PROMOTIONS, Promotion, Record, Reply,
    SharedIndex, Slot, StoreError, now_ms,
};
use redb::{Database, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// The journal makes a batch durable with one sequential append and fsync; the
/// database itself is committed durably (a checkpoint) at most this often, after
/// which the journal is emptied. On open, the journal is replayed onto the last
/// checkpoint: every change is idempotent, so replaying one twice is harmless.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
const CHECKPOINT_BYTES: u64 = 8 << 20;

pub(super) struct Journal {
    pub(super) file: std::fs::File,
    pub(super) path: PathBuf,
    /// Bytes acknowledged: everything past this is a write that failed.
    pub(super) len: u64,
    pub(super) checkpointed: std::time::Instant,
}

impl Journal {
    /// Appends the batch and makes it durable. On failure (a full disk writes part of it)
    /// the journal is cut back to what was acknowledged, so a failed batch neither
    /// survives a restart nor leaves a torn line before the next one.
    fn append(&mut self, changes: &[&Change]) -> std::io::Result<()> {
        use std::io::Write;
        let mut buf = Vec::new();
        for c in changes {
            serde_json::to_writer(&mut buf, c)?;
            buf.push(b'\n');
        }
        // A cut that failed earlier is retried first: nothing is appended after a torn write.
        self.truncate(self.len)?;
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.truncate(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Cuts the journal to `len` bytes (a no-op when it is that long).
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        if self.file.metadata()?.len() != len {
            self.file.set_len(len)?;
            self.file.sync_data()?;
        }
        self.len = len;
        Ok(())
    }

    /// Commits the database durably, then empties the journal. The commit saves redb's
    /// allocator state (quick repair), so opening the file after a crash takes no scan of
    /// the whole file (10 s at a million records) but a moment.
    pub(super) fn checkpoint(&mut self, db: &Database) -> Result<(), String> {
        let mut txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| e.to_string())?;
        txn.set_quick_repair(true);
        txn.commit().map_err(|e| e.to_string())?;
        self.file.set_len(0).map_err(|e| e.to_string())?;
        self.file.sync_data().map_err(|e| e.to_string())?;
        self.len = 0;
        self.checkpointed = std::time::Instant::now();
        Ok(())
    }

    fn due(&self) -> bool {
        self.len > 0
            && (self.checkpointed.elapsed() >= CHECKPOINT_EVERY || self.len >= CHECKPOINT_BYTES)
    }
}

/// Changes written to the journal by a process that did not reach its next checkpoint.
/// A torn last line (the write that was interrupted, never acknowledged) is dropped.
pub(super) fn read_journal(path: &Path) -> Result<Vec<Change>, StoreError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StoreError::Read(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut changes = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(change) => changes.push(change),
            Err(_) if n + 1 == lines.len() => {
                tracing::warn!("dropping the torn last entry of {}", path.display());
            }
            Err(e) => {
                return Err(StoreError::Read(format!(
                    "{} entry {} is corrupt: {e}",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    Ok(changes)
}

/// The single writer: takes one op, then whatever else is queued, journals them with
/// one fsync, applies them in one transaction, and only then answers.
pub(super) fn writer(
    slot: Arc<Slot>,
    rx: mpsc::Receiver<Op>,
    index: SharedIndex,
    mut journal: Journal,
    health: Arc<super::WriterHealth>,
) {
    use std::sync::atomic::Ordering;
    let failed = |yes: bool| health.failed.store(yes, Ordering::Relaxed);
    // The database, reopened (journal replayed) after a write failed.
    let database = |journal: &Journal| match slot.get() {
        Ok(db) => Ok(db),
        Err(_) => slot
            .reopen(&journal.path)
            .map_err(|e| format!("cannot reopen {}: {e}", slot.path.display()))
            .and_then(|()| slot.get().map_err(|e| e.to_string())),
    };
    let checkpoint = |journal: &mut Journal| {
        if !journal.due() {
            return;
        }
        let done = database(journal).and_then(|db| journal.checkpoint(&db));
        if let Err(e) = done {
            tracing::error!("promotion store checkpoint failed: {e}");
            health.failed.store(true, Ordering::Relaxed);
            slot.close();
        }
    };
    loop {
        health.beat.store(now_ms(), Ordering::Relaxed);
        let first = match rx.recv_timeout(CHECKPOINT_EVERY) {
            Ok(op) => op,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // After a failed write, probe when idle, so readiness comes back once the
                // disk has room again, without waiting for a write to try.
                if health.failed.load(Ordering::Relaxed) {
                    let probe = probe_write(&slot.path).and_then(|()| database(&journal).map(drop));
                    match probe {
                        Ok(()) => failed(false),
                        Err(e) => tracing::debug!("promotion store still unwritable: {e}"),
                    }
                }
                checkpoint(&mut journal);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let changes: Vec<&Change> = batch.iter().map(|op| &op.change).collect();
        let acknowledged = journal.len;
        let outcome = database(&journal).and_then(|db| {
            journal
                .append(&changes)
                .map_err(|e| format!("cannot write the journal {}: {e}", journal.path.display()))?;
            apply(&db, &changes, redb::Durability::None).inspect_err(|_| {
                // Journaled but not applied: not acknowledged, so not kept; and redb
                // takes no transaction after an I/O error until the file is reopened.
                let _ = journal.truncate(acknowledged);
                slot.close();
            })
        });
        match outcome {
            Ok(results) => {
                failed(false);
                let mut index = index.lock().unwrap();
                for (change, result) in changes.iter().zip(&results) {
                    match (change, result) {
                        (Change::Accept { promotions, .. }, Done::Accepted(a)) => {
                            for r in promotions {
                                if a.created.contains(&r.promotion.id) {
                                    index.note(&r.promotion);
                                }
                            }
                        }
                        (Change::Put { promotion }, Done::Put) => index.note(&promotion.promotion),
                        (Change::Suspend { pipeline, by }, _) => match by {
                            Some(by) => drop(index.suspended.insert(pipeline.clone(), by.clone())),
                            None => drop(index.suspended.remove(pipeline)),
                        },
                        (Change::Approve { .. } | Change::Act { .. }, Done::Approved(Ok(p))) => {
                            index.note(p)
                        }
                        _ => {}
                    }
                }
                drop(index);
                for (op, result) in batch.into_iter().zip(results) {
                    reply(op.reply, Ok(result));
                }
            }
            Err(e) => {
                failed(true);
                tracing::error!("promotion store write failed: {e}");
                for op in batch {
                    reply(op.reply, Err(StoreError::Write(e.clone())));
                }
            }
        }
        checkpoint(&mut journal);
    }
    if let Err(e) = database(&journal).and_then(|db| journal.checkpoint(&db)) {
        tracing::error!("promotion store checkpoint at shutdown failed: {e}");
    }
}

pub(super) enum Done {
    Accepted(Accepted),
    Put,
    Approved(Result<Box<Promotion>, StoreError>),
    /// How many records a prune deleted.
    Count(usize),
    /// An accept refused as a whole (nothing of it written).
    Refused(Box<StoreError>),
}

fn reply(reply: Reply, result: Result<Done, StoreError>) {
    match (reply, result) {
        (Reply::Accept(r), Ok(Done::Accepted(a))) => drop(r.send(Ok(a))),
        (Reply::Accept(r), Ok(Done::Refused(e))) => drop(r.send(Err(*e))),
        (Reply::Put(r), Ok(Done::Refused(e))) => drop(r.send(Err(*e))),
        (Reply::Put(r), Ok(_)) => drop(r.send(Ok(()))),
        (Reply::Act(r), Ok(Done::Approved(a))) => drop(r.send(a.map(|p| *p))),
        (Reply::Accept(r), Err(e)) => drop(r.send(Err(e))),
        (Reply::Put(r), Err(e)) => drop(r.send(Err(e))),
        (Reply::Act(r), Err(e)) => drop(r.send(Err(e))),
        (Reply::Count(r), Ok(Done::Count(n))) => drop(r.send(Ok(n))),
        (Reply::Count(r), Ok(_)) => drop(r.send(Err(StoreError::Closed))),
        (Reply::Count(r), Err(e)) => drop(r.send(Err(e))),
        (Reply::Accept(r), Ok(_)) => drop(r.send(Err(StoreError::Closed))),
        (Reply::Act(r), Ok(_)) => drop(r.send(Err(StoreError::Closed))),
    }
}

pub(super) fn apply(
    db: &Database,
    batch: &[&Change],
    durability: redb::Durability,
) -> Result<Vec<Done>, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut txn = db.begin_write().map_err(|x| e(&x))?;
    txn.set_durability(durability).map_err(|x| e(&x))?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut promotions = txn.open_table(PROMOTIONS).map_err(|x| e(&x))?;
        let mut events = txn.open_table(EVENTS).map_err(|x| e(&x))?;
        let mut derived = super::derived::Derived::open(&txn)?;
        for op in batch {
            match op {
                Change::Accept {
                    digest,
                    promotions: wanted,
                } => {
                    if events.get(digest.as_bytes()).map_err(|x| e(&x))?.is_some() {
                        results.push(Done::Accepted(Accepted {
                            replay: true,
                            created: Vec::new(),
                            existing: wanted.iter().map(|r| r.promotion.id.clone()).collect(),
                        }));
                        continue;
                    }
                    // The same id must be the same promotion: a record of another is never
                    // taken for this one, nor this one dropped as a duplicate of it. Checked
                    // before anything of the event is written.
                    let mut mismatch = None;
                    for Record { promotion: p, .. } in wanted {
                        let Some(found) = promotions.get(p.id.as_str()).map_err(|x| e(&x))? else {
                            continue;
                        };
                        let found: Promotion =
                            serde_json::from_slice(found.value()).map_err(|x| e(&x))?;
                        if !found.is(&p.pipeline, &p.target_environment, &p.version) {
                            mismatch = Some(StoreError::Mismatch {
                                id: p.id.clone(),
                                recorded: found.describe(),
                                requested: p.describe(),
                            });
                            break;
                        }
                    }
                    if let Some(refused) = mismatch {
                        results.push(Done::Refused(Box::new(refused)));
                        continue;
                    }
                    events
                        .insert(digest.as_bytes(), now_ms())
                        .map_err(|x| e(&x))?;
                    let mut accepted = Accepted {
                        replay: false,
                        created: Vec::new(),
                        existing: Vec::new(),
                    };
                    for Record { promotion: p, json } in wanted {
                        if promotions.get(p.id.as_str()).map_err(|x| e(&x))?.is_some() {
                            accepted.existing.push(p.id.clone());
                        } else {
                            promotions
                                .insert(p.id.as_str(), json.get().as_bytes())
                                .map_err(|x| e(&x))?;
                            derived.note(None, p)?;
                            accepted.created.push(p.id.clone());
                        }
                    }
                    results.push(Done::Accepted(accepted));
                }
                Change::Put { promotion } => {
                    let stored = promotions
                        .get(promotion.promotion.id.as_str())
                        .map_err(|x| e(&x))?
                        .map(|v| serde_json::from_slice::<Promotion>(v.value()))
                        .transpose()
                        .map_err(|x| e(&x))?;
                    // Claiming (marking running) takes only a promotion still pending: one
                    // aborted, superseded or rejected meanwhile stays as it is.
                    if promotion.promotion.phase == super::Phase::Running
                        && let Some(stored) = &stored
                        && !matches!(stored.phase, super::Phase::Pending | super::Phase::Running)
                    {
                        results.push(Done::Refused(Box::new(StoreError::WrongPhase {
                            id: stored.id.clone(),
                            phase: stored.phase.as_str(),
                            action: "run",
                            wanted: "pending",
                        })));
                        continue;
                    }
                    promotions
                        .insert(
                            promotion.promotion.id.as_str(),
                            promotion.json.get().as_bytes(),
                        )
                        .map_err(|x| e(&x))?;
                    derived.note(stored.as_ref(), &promotion.promotion)?;
                    results.push(Done::Put);
                }
                Change::Prune { before, most } => {
                    let doomed = derived.prunable(&promotions, *before, *most)?;
                    for p in &doomed {
                        promotions.remove(p.id.as_str()).map_err(|x| e(&x))?;
                        derived.unlist(p)?;
                    }
                    results.push(Done::Count(doomed.len()));
                }
                Change::Suspend { pipeline, by } => {
                    let mut table = txn.open_table(super::SUSPENDED).map_err(|x| e(&x))?;
                    match by {
                        Some(by) => table.insert(pipeline.as_str(), by.as_str()).map(drop),
                        None => table.remove(pipeline.as_str()).map(drop),
                    }
                    .map_err(|x| e(&x))?;
                    results.push(Done::Put);
                }
                Change::Forget { before } => {
                    let mut old = Vec::new();
                    for entry in events.iter().map_err(|x| e(&x))? {
                        let (digest, accepted) = entry.map_err(|x| e(&x))?;
                        if accepted.value() < *before {
                            old.push(digest.value().to_vec());
                        }
                    }
                    for digest in old {
                        events.remove(digest.as_slice()).map_err(|x| e(&x))?;
                    }
                    results.push(Done::Put);
                }
                Change::Approve { id, .. } | Change::Act { id, .. } => {
                    let current: Option<Promotion> = promotions
                        .get(id.as_str())
                        .map_err(|x| e(&x))?
                        .map(|v| serde_json::from_slice(v.value()))
                        .transpose()
                        .map_err(|x| e(&x))?;
                    let old = current.clone();
                    let result = match (current, op) {
                        (None, _) => Err(StoreError::NotFound(id.clone())),
                        (Some(p), Change::Act { action, .. }) => action.apply(p, now_ms()),
                        (
                            Some(p),
                            Change::Approve {
                                approval: Some(approval),
                                ..
                            },
                        ) => Action::Approve(approval.clone()).apply(p, now_ms()),
                        // An older version's journal: it checked before journaling.
                        (Some(p), _) => Action::Approve(Approval {
                            pipeline: p.pipeline.clone(),
                            environment: p.target_environment.clone(),
                            version: p.version.clone(),
                            by: "unrecorded".into(),
                        })
                        .apply(p, now_ms()),
                    };
                    if let Ok(p) = &result {
                        let bytes = serde_json::to_vec(p).map_err(|x| e(&x))?;
                        promotions
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(|x| e(&x))?;
                        derived.note(old.as_ref(), p)?;
                    }
                    results.push(Done::Approved(result.map(Box::new)));
                }
            }
        }
    }
    txn.commit().map_err(|x| e(&x))?;
    Ok(results)
}

/// Whether a block can be written and made durable beside the database (`db`'s folder).
fn probe_write(db: &Path) -> Result<(), String> {
    use std::io::Write;
    let probe = db.with_extension("probe");
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 4096])?;
        f.sync_data()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("cannot write {}: {e}", probe.display()))
}
