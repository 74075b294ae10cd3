//! The solver: a parsed Dockerfile ([`crate::frontend::StepGraph`]) becomes a
//! [`plan::Plan`], whose stages the [`scheduler`] runs in parallel, each step dispatched by
//! one function per instruction against the cache, the store, the runner and registries.
//!
//! Phases are types: `Vec<Stage>` → `StepGraph` (pruned to `--target`) → `Plan` (step ids,
//! display numbering) → per-stage [`state::StageResult`] → the exported image.

pub mod cachekey;
mod context_dir;
pub mod context_stream;
mod ctx;
mod dispatch;
mod export;
pub mod plan;
pub mod remote_cache;
mod scheduler;
mod state;
mod time;

use std::path::PathBuf;
use std::sync::Arc;

pub use cachekey::{CacheKey, KeyEncoder};
pub use export::Built;

use crate::events::EventSink;
use crate::frontend::{parse, StepGraph};
use crate::Error;

/// Where the build context comes from.
#[derive(Debug, Clone)]
pub enum ContextSource {
    /// A directory.
    Dir(PathBuf),
    /// A tar stream (`rbuild build -`): the bytes, already read from stdin.
    Tar(Vec<u8>),
}

/// Network for RUN steps without their own `--network`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network (docker's `default` for builds).
    #[default]
    Host,
    /// Loopback only.
    None,
}

/// Where a build secret's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the rbuild process.
    Env(String),
}

/// Everything one build needs to know, validated by the CLI before any work starts.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The context.
    pub context: ContextSource,
    /// The Dockerfile (default: `Dockerfile` in the context directory).
    pub dockerfile: Option<PathBuf>,
    /// The Dockerfile's text itself (`-f -`); wins over `dockerfile`.
    pub dockerfile_text: Option<Vec<u8>>,
    /// `--build-arg KEY=VALUE`, in order.
    pub build_args: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// Normalized names to tag the image as (`docker.io/cncamp/httpserver:v1`).
    pub tags: Vec<String>,
    /// `--label KEY=VALUE`.
    pub labels: Vec<(String, String)>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--secret id=..`.
    pub secrets: Vec<(String, SecretSource)>,
    /// `SOURCE_DATE_EPOCH`: timestamps in config, history and layers.
    pub source_date_epoch: Option<i64>,
    /// `--add-host NAME:IP`: (name, address) lines added to every RUN step's `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    /// `--shm-size`: bytes of every RUN step's `/dev/shm` (the runner's default if `None`).
    pub shm_size: Option<u64>,
    /// `--ulimit`: resource limits of every RUN step.
    pub ulimits: Vec<rbuild_runner::Ulimit>,
    /// `--memory`, `--cpu-quota`, `--resource`...: the cgroup limits of every RUN step.
    pub limits: rbuild_runner::Limits,
    /// `--annotation KEY=VALUE` (and `manifest:`): annotations in the image manifest.
    pub manifest_annotations: std::collections::BTreeMap<String, String>,
    /// `--annotation manifest-descriptor:KEY=VALUE`: annotations on the manifest's
    /// descriptor (the store's `index.json` entry, the `index.json` of exported layouts).
    pub descriptor_annotations: std::collections::BTreeMap<String, String>,
    /// `--cache-from`, in order.
    pub cache_from: Vec<remote_cache::spec::CacheImport>,
    /// `--cache-to`.
    pub cache_to: Vec<remote_cache::spec::CacheExport>,
}

/// Runs one build: parse, plan, run the stages, export and tag the image.
pub async fn build(
    store: rbuild_store::Store,
    registry: rbuild_registry::Client,
    options: BuildOptions,
    events: Arc<dyn EventSink>,
) -> Result<Built, Error> {
    let context = context_dir::ContextDir::open(&store, &options.context).await?;
    let (name, text) = context
        .read_dockerfile(
            options.dockerfile.as_deref(),
            options.dockerfile_text.as_deref(),
        )
        .await?;
    let doc = parse(&name, &text)?;
    let graph = match &options.platform {
        None => StepGraph::new(&doc, &options.build_args, options.target.as_deref())?,
        Some(p) => {
            let target = ctx::parse_platform(p)?;
            let host = rbuild_store::Platform::host();
            StepGraph::for_platform(
                &doc,
                &options.build_args,
                options.target.as_deref(),
                &host,
                &target,
            )?
        }
    };
    for w in &graph.warnings {
        events.event(crate::events::BuildEvent::Warning(w.clone()));
    }
    for unused in &graph.unused_build_args {
        events.event(crate::events::BuildEvent::Warning(format!(
            "build argument {unused:?} was given but not used by any stage"
        )));
    }
    let plan = plan::Plan::new(&graph);
    for e in &options.cache_to {
        for field in &e.ignored {
            events.event(crate::events::BuildEvent::Warning(format!(
                "--cache-to {}: {field} ignored: rbuild always exports one OCI image manifest",
                e.location.name()
            )));
        }
    }
    // `--no-cache` uses no record, so it reads no `--cache-from` either (as BuildKit).
    let imports = if options.no_cache {
        &[][..]
    } else {
        &options.cache_from[..]
    };
    let mut imports: Vec<_> = imports.to_vec();
    let mut context = context;
    loop {
        let imported = remote_cache::import(&store, &registry, &imports, events.as_ref()).await;
        let mut ctx = ctx::BuildCtx::new(
            store.clone(),
            registry.clone(),
            options.clone(),
            events.clone(),
            context,
            name.clone(),
            &graph,
            plan.next_id,
        );
        ctx.imported = imported;
        let ctx = Arc::new(ctx);
        let result = run_plan(&ctx, &plan).await;
        // A cache whose layer is not what its records say: warn and build without it (the
        // steps that ran are in this store's cache now).
        let Err(err) = result else { return result };
        let Some(bad) = err.unusable_cache().map(str::to_string) else {
            return Err(err);
        };
        let Ok(ctx) = Arc::try_unwrap(ctx) else {
            return Err(err);
        };
        events.event(crate::events::BuildEvent::Warning(format!(
            "cache {bad} not used: {}; building again without it",
            rbuild_store::error_chain(&err)
        )));
        let before = imports.len();
        imports.retain(|i| i.location.name() != bad);
        if imports.len() == before {
            return Err(err);
        }
        context = ctx.context;
    }
}

/// Runs the stages, then tags the image and writes the `--cache-to`s.
async fn run_plan(ctx: &Arc<ctx::BuildCtx>, plan: &plan::Plan) -> Result<Built, Error> {
    let target = scheduler::run(ctx.clone(), plan).await;
    let c = ctx.clone();
    let _ = tokio::task::spawn_blocking(move || c.context.save_stat_cache()).await;
    let target = target?;
    let built = export::export(ctx, &target).await?;
    remote_cache::export(ctx, &target).await?;
    Ok(built)
}
