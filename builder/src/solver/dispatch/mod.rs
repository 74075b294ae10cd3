//! One dispatch function per instruction, and what they share: expansion in the stage's
//! scope, the cache protocol of layer steps (look up → hit: apply the record; miss: run,
//! commit, record), history entries, and errors tagged with the Dockerfile line.

mod copy;
mod from;
mod meta;
mod run;
mod ssh_mount;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub use from::from;

use super::cachekey::CacheKey;
use super::ctx::{BuildCtx, StepRecord};
use super::plan::{PlannedStage, PlannedStep};
use super::state::{CacheUse, LayerRef, StageResult, StageState};
use crate::events::{BuildEvent, CacheMiss, StepId};
use crate::frontend::Instruction;
use crate::frontend::{Scope, Step};
use crate::Error;
use rbuild_store::model::config::History;

/// Results of the stages this one depends on, by Dockerfile index.
pub type Deps = BTreeMap<usize, Arc<StageResult>>;

/// Everything a dispatch function gets.
pub struct StepCx<'a> {
    /// The build.
    pub ctx: &'a BuildCtx,
    /// The step.
    pub step: &'a Step,
    /// Its id.
    pub id: StepId,
    /// Finished stages this one needs.
    pub deps: &'a Deps,
}

impl StepCx<'_> {
    /// Expands `word` with the stage's ENV over the step's build args.
    pub fn expand(&self, st: &StageState, word: &str) -> Result<String, Error> {
        let env = st.config.env_pairs();
        let scope = Scope {
            env: &env,
            args: &self.step.args,
        };
        Ok(self.ctx.lexer.expand_word(word, &scope)?)
    }

    /// Expands a heredoc body (quotes are plain characters there).
    pub fn expand_heredoc(&self, st: &StageState, data: &str) -> Result<String, Error> {
        let env = st.config.env_pairs();
        let scope = Scope {
            env: &env,
            args: &self.step.args,
        };
        Ok(self
            .ctx
            .lexer
            .skip_process_quotes(true)
            .expand_word(data, &scope)?)
    }

    /// The step's text for headers and errors: continuations joined, heredoc bodies cut.
    pub fn text(&self) -> String {
        let first = self.step.original.lines().next().unwrap_or_default().trim();
        let mut t = first.to_string();
        if t.chars().count() > 200 {
            t = t.chars().take(200).collect::<String>() + "...";
        }
        t
    }
}

/// Runs one step of a stage, tagging its errors with the Dockerfile line.
pub async fn step(
    ctx: &BuildCtx,
    stage: &PlannedStage,
    ps: &PlannedStep,
    deps: &Deps,
    st: &mut StageState,
) -> Result<(), Error> {
    let cx = StepCx {
        ctx,
        step: &ps.step,
        id: ps.id,
        deps,
    };
    let shown = ps.shown.is_some();
    let started = Instant::now();
    if let Some(i) = ps.shown {
        ctx.emit(BuildEvent::StepStarted {
            id: ps.id,
            stage: stage.display.clone(),
            index: i,
            total: stage.shown_total,
            text: cx.text(),
        });
    }
    let result = dispatch(&cx, st).await;
    match result {
        // A cached step says CACHED and nothing else.
        Ok(Lookup::Hit) => Ok(()),
        Ok(Lookup::Miss) => {
            if shown {
                ctx.emit(BuildEvent::StepDone {
                    id: ps.id,
                    elapsed: started.elapsed(),
                });
            }
            Ok(())
        }
        Err(e) => {
            ctx.emit(BuildEvent::StepFailed {
                id: ps.id,
                elapsed: started.elapsed(),
            });
            Err(match e {
                e @ Error::RunFailed(_) => e,
                e => Error::Step {
                    file: ctx.dockerfile.clone(),
                    line: ps.step.location.start_line,
                    instruction: cx.text(),
                    source: Box::new(e),
                },
            })
        }
    }
}

/// The one match over instructions: whether the step came from the cache (`Hit`) or ran.
async fn dispatch(cx: &StepCx<'_>, st: &mut StageState) -> Result<Lookup, Error> {
    let ran = |r: Result<(), Error>| r.map(|()| Lookup::Miss);
    match &cx.step.instruction {
        Instruction::Run(r) => run::run(cx, st, r).await,
        Instruction::Copy(c) => copy::copy(cx, st, c).await,
        Instruction::Add(a) => copy::add(cx, st, a).await,
        Instruction::Workdir(w) => meta::workdir(cx, st, w).await,
        Instruction::Env(kv) => ran(meta::env(cx, st, kv)),
        Instruction::Label(kv) => ran(meta::label(cx, st, kv)),
        Instruction::Expose(p) => ran(meta::expose(cx, st, p)),
        Instruction::Volume(v) => ran(meta::volume(cx, st, v)),
        Instruction::User(u) => ran(meta::user(cx, st, u)),
        Instruction::Entrypoint(c) => ran(meta::entrypoint(cx, st, c)),
        Instruction::Cmd(c) => ran(meta::cmd(cx, st, c)),
        Instruction::StopSignal(s) => ran(meta::stopsignal(cx, st, s)),
        Instruction::Healthcheck(h) => ran(meta::healthcheck(cx, st, h)),
        Instruction::Shell(s) => ran(meta::shell(cx, st, s)),
        Instruction::Arg(a) => ran(meta::arg(cx, st, a)),
        Instruction::Maintainer(m) => ran(meta::maintainer(cx, st, m)),
        Instruction::Onbuild(t) => ran(meta::onbuild(cx, st, t)),
        // The frontend turns FROM lines into stages; a FROM step cannot occur.
        Instruction::From { .. } => Ok(Lookup::Miss),
    }
}

/// The cache's answer for a step.
pub enum Lookup {
    /// Taken from the cache (already applied to the state).
    Hit,
    /// Must run (or ran).
    Miss,
}

/// Looks `key` up unless the stage already missed; on a hit applies the record. On a miss
/// explains it (comparing `lineage`'s sources with `sources` for COPY/ADD) and makes every
/// later step of the stage run.
pub async fn lookup(
    cx: &StepCx<'_>,
    st: &mut StageState,
    key: CacheKey,
    lineage: Option<(CacheKey, &BTreeMap<String, String>)>,
) -> Result<Lookup, Error> {
    // Another target platform working on the same key finishes it first (and this one
    // then finds its record).
    st.flight = None;
    st.flight = Some(Arc::new(cx.ctx.flights.hold(&key).await));
    let reason = match &st.cache {
        CacheUse::Bypass(reason) => reason.clone(),
        CacheUse::Lookup => match cx.ctx.cache_find(&key).await? {
            Some((record, from)) if from.is_some() || layer_present(cx.ctx, &record) => {
                copy_in_local_cache_blob(cx, from.is_some(), &record).await?;
                cx.ctx.note_used(&key, &record);
                if let Some((lkey, _)) = &lineage {
                    if let Some((previous, _)) = cx.ctx.cache_find(lkey).await? {
                        cx.ctx.note_used(lkey, &previous);
                    }
                }
                apply(st, key, record);
                cx.ctx.emit(BuildEvent::StepCached { id: cx.id });
                return Ok(Lookup::Hit);
            }
            _ => explain(cx, lineage).await?,
        },
    };
    Ok(missed(cx, st, reason))
}

/// Reports a miss; the steps after it in the stage then miss too (or bypass the cache).
fn missed(cx: &StepCx<'_>, st: &mut StageState, reason: CacheMiss) -> Lookup {
    cx.ctx.emit(BuildEvent::StepCacheMiss {
        id: cx.id,
        reason: reason.clone(),
    });
    st.cache = CacheUse::Bypass(match reason {
        CacheMiss::NoCache => CacheMiss::NoCache,
        _ => CacheMiss::ParentMissed,
    });
    Lookup::Miss
}

/// The cache protocol of a `--link` step, whose `key` leaves the parent out: the layer is
/// looked up even when an earlier step missed (the base changed), and a hit rebases it onto
/// the stage as it is (same blob and diffID, the history entry of the build that made it).
/// The stage's key moves to [`linked_state_key`], so the steps after it hit only when the
/// parent did too; a miss makes them run.
pub async fn lookup_linked(
    cx: &StepCx<'_>,
    st: &mut StageState,
    key: CacheKey,
    lineage: Option<(CacheKey, &BTreeMap<String, String>)>,
) -> Result<Lookup, Error> {
    let reason = match &st.cache {
        CacheUse::Bypass(CacheMiss::NoCache) => CacheMiss::NoCache,
        _ => match cx.ctx.cache_find(&key).await? {
            Some((record, from)) if from.is_some() || layer_present(cx.ctx, &record) => {
                if let Some(layer) = record.layer.clone() {
                    copy_in_local_cache_blob(cx, from.is_some(), &record).await?;
                    cx.ctx.note_used(&key, &record);
                    if let Some(entry) = record.config.history.last() {
                        st.config.history.push(entry.clone());
                    }
                    st.push_layer(layer);
                    st.key = linked_state_key(&st.key, &key);
                    cx.ctx.emit(BuildEvent::StepCached { id: cx.id });
                    return Ok(Lookup::Hit);
                }
                explain(cx, lineage).await?
            }
            _ => explain(cx, lineage).await?,
        },
    };
    Ok(missed(cx, st, reason))
}

/// The stage's key after a `--link` step: its parent's key and the step's own (which
/// leaves the parent out), so later steps depend on both.
pub fn linked_state_key(parent: &CacheKey, linked: &CacheKey) -> CacheKey {
    let mut k = super::cachekey::KeyEncoder::new("LINK", Some(parent));
    k.str("layer", &linked.hex());
    k.finish()
}

/// A layer of a `type=local` cache is copied in when its record is used (registry layers
/// stay where they are until a step needs their files).
async fn copy_in_local_cache_blob(
    cx: &StepCx<'_>,
    imported: bool,
    record: &StepRecord,
) -> Result<(), Error> {
    if let (true, Some(l)) = (imported, &record.layer) {
        if cx
            .ctx
            .imported
            .local_blobs
            .contains_key(&l.descriptor.digest)
        {
            cx.ctx.fetch_blob(&l.descriptor).await?;
        }
    }
    Ok(())
}

fn layer_present(ctx: &BuildCtx, record: &StepRecord) -> bool {
    match &record.layer {
        None => true,
        Some(l) => ctx.store.blobs().contains(&l.descriptor.digest),
    }
}

/// Why there is no record: nothing of this step anywhere, or (for COPY/ADD, through the
/// lineage record of the same step with any sources) which sources differ, here or in the
/// imported cache the nearest record came from.
async fn explain(
    cx: &StepCx<'_>,
    lineage: Option<(CacheKey, &BTreeMap<String, String>)>,
) -> Result<CacheMiss, Error> {
    let not_found = || match cx.ctx.imported.names.first() {
        Some(cache) => CacheMiss::NotInRemote {
            cache: cache.clone(),
            nearest: None,
        },
        None => CacheMiss::NotFound,
    };
    let Some((lkey, sources)) = lineage else {
        return Ok(not_found());
    };
    let Some((previous, from)) = cx.ctx.cache_find(&lkey).await? else {
        return Ok(not_found());
    };
    let changed: Vec<&String> = sources
        .iter()
        .filter(|(name, digest)| previous.sources.get(*name) != Some(digest))
        .map(|(name, _)| name)
        .collect();
    let names = |many: &[&String]| {
        many.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(match (from, changed.as_slice()) {
        (None, []) => not_found(),
        (None, [one]) => CacheMiss::SourceChanged(format!("checksum of {one} changed")),
        (None, many) => CacheMiss::SourceChanged(format!("checksums of {} changed", names(many))),
        (Some(cache), []) => CacheMiss::NotInRemote {
            cache: cache.to_string(),
            nearest: None,
        },
        (Some(cache), [one]) => CacheMiss::NotInRemote {
            cache: cache.to_string(),
            nearest: Some(format!("checksum of {one}")),
        },
        (Some(cache), many) => CacheMiss::NotInRemote {
            cache: cache.to_string(),
            nearest: Some(format!("checksums of {}", names(many))),
        },
    })
}

fn apply(st: &mut StageState, key: CacheKey, record: StepRecord) {
    st.config = record.config;
    if let Some(layer) = record.layer {
        st.layers.push(layer);
        st.lowers = None;
    }
    st.key = key;
}

/// Records a step that ran: adds its history entry and layer, moves the key, and writes
/// the cache record (and the lineage record naming its sources).
pub async fn commit(
    cx: &StepCx<'_>,
    st: &mut StageState,
    key: CacheKey,
    layer: Option<LayerRef>,
    created_by: String,
    lineage: Option<(CacheKey, BTreeMap<String, String>)>,
) -> Result<(), Error> {
    push_history(cx, st, created_by, layer.is_none());
    if let Some(l) = &layer {
        st.push_layer(l.clone());
    }
    st.key = key;
    let sources = lineage.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
    let record = StepRecord {
        config: st.config.clone(),
        layer,
        sources,
    };
    if let Some((lkey, _)) = &lineage {
        cx.ctx.cache_put(lkey, record.clone()).await?;
    }
    cx.ctx.cache_put(&key, record).await
}

/// Adds a history entry for this step. Steps that make no layer take the time of the
/// entry before them, so a rebuild from the cache gives the same image ID (as BuildKit).
pub fn push_history(cx: &StepCx<'_>, st: &mut StageState, created_by: String, empty: bool) {
    let created = match (empty, cx.ctx.options.source_date_epoch) {
        (_, Some(epoch)) => super::time::created(Some(epoch)),
        (true, None) => st
            .config
            .history
            .last()
            .and_then(|h| h.created.clone())
            .unwrap_or_else(|| super::time::created(None)),
        (false, None) => super::time::created(None),
    };
    st.config.history.push(History {
        created: Some(created),
        created_by: Some(created_by),
        author: None,
        comment: Some("buildkit.dockerfile.v0".to_string()),
        empty_layer: empty,
    });
}
