//! Tables the local store derives from its records, kept in the same transaction as each
//! change, so that nothing it needs at start or for a page of the admin API grows in
//! memory with the history:
//!
//! - `by-time` `(createdAt, id)` and `by-pipeline` `(ns/name, createdAt, id)`: the records
//!   newest first, for pages of `GET /promotions`;
//! - `open` `id -> phase`: the promotions that have not finished (pending, waiting, held,
//!   running), what the worker and the metrics follow;
//! - `envs` `(ns/name, environment) -> {newest, current}`: per environment, the newest
//!   version recorded and the one there now (what decisions compare with);
//! - `versions` `(ns/name, environment, version) -> (round, id, phase, succeeded)`: the
//!   last round recorded of a version, its id and phase, and whether any round of it
//!   succeeded — what a decision asks of a version, in one read, and still known after
//!   `--keep-finished` deleted its records (so a new round gets a new id, and an event for
//!   a version pruned long ago is still "already promoted").
//!
//! `meta` says which revision of these tables the file holds; a file from before them is
//! indexed once, at open.

use super::{Phase, Promotion, pipeline_key};
use crate::decide::{EnvLatest, version_key};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

pub(super) const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("by-time");
pub(super) const BY_PIPELINE: TableDefinition<(&str, u64, &str), ()> =
    TableDefinition::new("by-pipeline");
pub(super) const OPEN: TableDefinition<&str, &str> = TableDefinition::new("open");
pub(super) const ENVS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("envs");
/// Per (pipeline, environment, version key): the last round, its id and phase, and
/// whether any round succeeded.
type VersionKey<'a> = (&'a str, &'a str, &'a str);
type VersionRow<'a> = (u32, &'a str, &'a str, bool);
pub(super) const VERSIONS: TableDefinition<VersionKey, VersionRow> =
    TableDefinition::new("versions");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The revision of the derived tables; a file holding another is indexed again at open.
pub(super) const REVISION: u64 = 2;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The derived tables, open in one write transaction.
pub(super) struct Derived<'t> {
    by_time: Table<'t, (u64, &'static str), ()>,
    by_pipeline: Table<'t, (&'static str, u64, &'static str), ()>,
    open: Table<'t, &'static str, &'static str>,
    envs: Table<'t, (&'static str, &'static str), &'static [u8]>,
    versions: Table<'t, VersionKey<'static>, VersionRow<'static>>,
}

/// Whether a record in `phase` has not finished: the worker, approvals or a resume will
/// still look at it.
pub(super) fn is_open(phase: Phase) -> bool {
    phase.is_open() || phase == Phase::Running
}

impl<'t> Derived<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Derived<'t>, String> {
        Ok(Derived {
            by_time: txn.open_table(BY_TIME).map_err(err)?,
            by_pipeline: txn.open_table(BY_PIPELINE).map_err(err)?,
            open: txn.open_table(OPEN).map_err(err)?,
            envs: txn.open_table(ENVS).map_err(err)?,
            versions: txn.open_table(VERSIONS).map_err(err)?,
        })
    }

    /// Takes the record `p` (which was `old`, if it existed) into account.
    pub(super) fn note(&mut self, old: Option<&Promotion>, p: &Promotion) -> Result<(), String> {
        let pipeline = pipeline_key(&p.pipeline);
        // A record already listed under the same time stays where it is: writing the same
        // keys again would dirty their pages for nothing on every change of phase.
        let listed = old.is_some_and(|o| o.created_at == p.created_at);
        if let Some(old) = old.filter(|_| !listed) {
            self.unlist(old)?;
        }
        if !listed {
            self.by_time
                .insert((p.created_at, p.id.as_str()), ())
                .map_err(err)?;
            self.by_pipeline
                .insert((pipeline.as_str(), p.created_at, p.id.as_str()), ())
                .map_err(err)?;
        }
        if is_open(p.phase) {
            self.open
                .insert(p.id.as_str(), p.phase.as_str())
                .map_err(err)?;
        } else {
            self.open.remove(p.id.as_str()).map_err(err)?;
        }
        let env_key = (pipeline.as_str(), p.target_environment.as_str());
        let stored = self
            .envs
            .get(env_key)
            .map_err(err)?
            .map(|v| v.value().to_vec());
        let mut env: EnvLatest = match &stored {
            Some(bytes) => serde_json::from_slice(bytes).map_err(err)?,
            None => EnvLatest::default(),
        };
        env.note(p);
        let bytes = serde_json::to_vec(&env).map_err(err)?;
        if stored.as_deref() != Some(bytes.as_slice()) {
            self.envs.insert(env_key, bytes.as_slice()).map_err(err)?;
        }
        let key = version_key(&p.version);
        let round_key = (
            pipeline.as_str(),
            p.target_environment.as_str(),
            key.as_str(),
        );
        let succeeded = p.phase == Phase::Succeeded;
        let stored = self.versions.get(round_key).map_err(err)?.map(|v| {
            let (round, id, phase, ok) = v.value();
            (round, id.to_string(), phase.to_string(), ok)
        });
        let new = match stored {
            // An older round changed (it can only have finished): whether any succeeded.
            Some((round, id, phase, ok)) if round > p.round => (round, id, phase, ok || succeeded),
            Some((.., ok)) => (
                p.round,
                p.id.clone(),
                p.phase.as_str().to_string(),
                ok || succeeded,
            ),
            None => (
                p.round,
                p.id.clone(),
                p.phase.as_str().to_string(),
                succeeded,
            ),
        };
        self.versions
            .insert(round_key, (new.0, new.1.as_str(), new.2.as_str(), new.3))
            .map_err(err)?;
        Ok(())
    }

    /// At most `most` records finished before `before` (ms), oldest first, but never the
    /// promotion that put its environment's version there.
    pub(super) fn prunable(
        &self,
        promotions: &Table<'t, &'static str, &'static [u8]>,
        before: u64,
        most: usize,
    ) -> Result<Vec<Promotion>, String> {
        let mut doomed = Vec::new();
        for entry in self.by_time.range(..(before, "")).map_err(err)? {
            if doomed.len() >= most {
                break;
            }
            let (k, _) = entry.map_err(err)?;
            let Some(v) = promotions.get(k.value().1).map_err(err)? else {
                continue;
            };
            let p: Promotion = serde_json::from_slice(v.value()).map_err(err)?;
            if !p.phase.is_finished() || p.finished_at.is_none_or(|t| t >= before) {
                continue;
            }
            let pipeline = pipeline_key(&p.pipeline);
            let env: EnvLatest = match self
                .envs
                .get((pipeline.as_str(), p.target_environment.as_str()))
                .map_err(err)?
            {
                Some(v) => serde_json::from_slice(v.value()).map_err(err)?,
                None => EnvLatest::default(),
            };
            if env.current().is_some_and(|c| c.id == p.id) {
                continue;
            }
            doomed.push(p);
        }
        Ok(doomed)
    }

    /// Drops `p` from the lists (it is deleted); what decisions need of it stays.
    pub(super) fn unlist(&mut self, p: &Promotion) -> Result<(), String> {
        let pipeline = pipeline_key(&p.pipeline);
        self.by_time
            .remove((p.created_at, p.id.as_str()))
            .map_err(err)?;
        self.by_pipeline
            .remove((pipeline.as_str(), p.created_at, p.id.as_str()))
            .map_err(err)?;
        self.open.remove(p.id.as_str()).map_err(err)?;
        Ok(())
    }
}

/// Indexes every record of a file whose derived tables are missing or of another
/// revision (a file written before them): once, at open.
pub(super) fn rebuild_if_needed(db: &redb::Database) -> Result<bool, String> {
    use redb::ReadableDatabase;
    {
        let txn = db.begin_read().map_err(err)?;
        if let Ok(meta) = txn.open_table(META)
            && meta.get("derived").map_err(err)?.map(|v| v.value()) == Some(REVISION)
        {
            return Ok(false);
        }
    }
    let txn = db.begin_write().map_err(err)?;
    txn.delete_table(BY_TIME).map_err(err)?;
    txn.delete_table(BY_PIPELINE).map_err(err)?;
    txn.delete_table(OPEN).map_err(err)?;
    txn.delete_table(ENVS).map_err(err)?;
    txn.delete_table(VERSIONS).map_err(err)?;
    // Revision 1's table, replaced by `versions`.
    let _ = txn.delete_table(TableDefinition::<(&str, &str, &str), u32>::new("rounds"));
    {
        let promotions = txn.open_table(super::PROMOTIONS).map_err(err)?;
        let mut derived = Derived::open(&txn)?;
        for entry in promotions.iter().map_err(err)? {
            let (_, v) = entry.map_err(err)?;
            let p: Promotion = serde_json::from_slice(v.value()).map_err(err)?;
            derived.note(None, &p)?;
        }
        let mut meta = txn.open_table(META).map_err(err)?;
        meta.insert("derived", REVISION).map_err(err)?;
    }
    txn.commit().map_err(err)?;
    Ok(true)
}
