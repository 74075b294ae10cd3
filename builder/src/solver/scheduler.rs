//! Runs the plan's stages: one tokio task per stage, started as soon as the stages it
//! depends on are built, so independent stages build in parallel. The first failure
//! stops the build (running stages are aborted at their next await).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::ctx::BuildCtx;
use super::dispatch::{self, Deps};
use super::plan::{Plan, PlannedStage};
use super::state::StageResult;
use crate::Error;

/// Builds one stage.
async fn stage(ctx: Arc<BuildCtx>, stage: PlannedStage, deps: Deps) -> Result<StageResult, Error> {
    let mut st = dispatch::from(&ctx, &stage, &deps).await?;
    for ps in &stage.steps {
        dispatch::step(&ctx, &stage, ps, &deps, &mut st).await?;
    }
    Ok(st.finish())
}

/// Builds every stage of `plan`; returns the target's result.
pub async fn run(ctx: Arc<BuildCtx>, plan: &Plan) -> Result<Arc<StageResult>, Error> {
    let mut done: Deps = BTreeMap::new();
    let mut pending: Vec<PlannedStage> = plan.stages.clone();
    let mut running: JoinSet<(usize, Result<StageResult, Error>)> = JoinSet::new();
    loop {
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|s| s.deps.iter().all(|d| done.contains_key(d)));
        pending = rest;
        for s in ready {
            let deps: Deps = s
                .deps
                .iter()
                .filter_map(|d| done.get(d).map(|r| (*d, r.clone())))
                .collect();
            let ctx = ctx.clone();
            running.spawn(async move { (s.index, stage(ctx, s, deps).await) });
        }
        match running.join_next().await {
            None => break,
            Some(Ok((index, Ok(result)))) => {
                done.insert(index, Arc::new(result));
            }
            Some(Ok((_, Err(e)))) => {
                running.abort_all();
                return Err(e);
            }
            Some(Err(join)) => {
                running.abort_all();
                return Err(Error::Task(join));
            }
        }
    }
    done.remove(&plan.target).ok_or(Error::SourceNotFound {
        source_path: format!("stage {}", plan.target),
    })
}
