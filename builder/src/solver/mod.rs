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
pub mod emulation;
mod export;
mod flights;
pub mod lint;
pub mod named_context;
pub mod plan;
pub mod remote_cache;
pub mod roots;
mod scheduler;
mod ssh;
mod state;
mod time;

use std::path::PathBuf;
use std::sync::Arc;

pub use cachekey::{CacheKey, KeyEncoder};
pub use export::Built;
pub use ssh::{SshError, SshSource};

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
    /// A git repository (`rbuild build https://host/repo.git#ref:subdir`): the URL, which
    /// the caller checked with [`crate::git::parse_git_ref`].
    Git(String),
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
    /// `--platform`: the target platforms, normalised, each once (empty: the host's).
    pub platforms: Vec<rbuild_store::Platform>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--secret id=..`.
    pub secrets: Vec<(String, SecretSource)>,
    /// `--ssh ID=SOCKET|KEY[,KEY]`: the agents `RUN --mount=type=ssh` forwards.
    pub ssh: Vec<(String, SshSource)>,
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
    /// `--isolation`: how RUN steps are isolated; chroot also picks the copying snapshotter.
    pub isolation: rbuild_runner::Isolation,
    /// RUN steps run on roots the copying snapshotter materialised, not over overlayfs
    /// (rootless where [`roots::overlay_refused`]; chroot always does).
    pub copied_roots: bool,
    /// `--annotation KEY=VALUE` (and `manifest:`): annotations in the image manifest.
    pub manifest_annotations: std::collections::BTreeMap<String, String>,
    /// `--annotation manifest-descriptor:KEY=VALUE`: annotations on the manifest's
    /// descriptor (the store's `index.json` entry, the `index.json` of exported layouts).
    pub descriptor_annotations: std::collections::BTreeMap<String, String>,
    /// `--cache-from`, in order.
    pub cache_from: Vec<remote_cache::spec::CacheImport>,
    /// `--cache-to`.
    pub cache_to: Vec<remote_cache::spec::CacheExport>,
    /// `--build-context NAME=VALUE`, in order.
    pub build_contexts: Vec<(String, named_context::NamedContext)>,
}

/// One target platform's part of a build.
struct Target {
    platform: rbuild_store::Platform,
    plan: plan::Plan,
    ctx: Arc<ctx::BuildCtx>,
}

/// Runs one build: parse, plan, run the stages (for each target platform), export and tag
/// the image (an index over the platforms' images when there are several).
pub async fn build(
    store: rbuild_store::Store,
    registry: rbuild_registry::Client,
    options: BuildOptions,
    events: Arc<dyn EventSink>,
) -> Result<Built, Error> {
    let (context, name, text, doc) = open_dockerfile(&store, &options).await?;
    let context = Arc::new(context);
    let checks = lint::run_checks(&context, &doc, &text, &options.build_args)?;
    for w in &checks.warnings {
        events.event(crate::events::BuildEvent::Warning(w.to_string()));
    }
    let host = rbuild_store::Platform::host();
    let platforms = match options.platforms.is_empty() {
        true => vec![host.clone()],
        false => options.platforms.clone(),
    };
    let multi = platforms.len() > 1;
    let mut graphs = Vec::new();
    let mut plans = Vec::new();
    let mut next_id = 0;
    for p in &platforms {
        let graph = graph_of(&doc, &options, p)?;
        let mut plan = plan::Plan::new(&graph);
        if multi {
            plan.for_platform(p, next_id);
        }
        next_id = plan.next_id;
        graphs.push(graph);
        plans.push(plan);
    }
    if checks.config.error && !checks.warnings.is_empty() {
        return Err(Error::ChecksFailed {
            count: checks.warnings.len(),
        });
    }
    let named = Arc::new(named_context::open_all(&store, &options.build_contexts).await?);
    warn(events.as_ref(), &graphs[0], &options);
    // `--no-cache` uses no record, so it reads no `--cache-from` either (as BuildKit).
    let mut imports = match options.no_cache {
        true => Vec::new(),
        false => options.cache_from.clone(),
    };
    let flights = Arc::new(flights::Flights::default());
    let ssh = Arc::new(ssh::SshAgents::new(options.ssh.clone()));
    let built = loop {
        let imported =
            Arc::new(remote_cache::import(&store, &registry, &imports, events.as_ref()).await);
        let shared = ctx::Shared {
            store: store.clone(),
            registry: registry.clone(),
            options: options.clone(),
            events: events.clone(),
            context: context.clone(),
            dockerfile: name.clone(),
            imported,
            flights: flights.clone(),
            named: named.clone(),
            checks: checks.config.clone(),
            ssh: ssh.clone(),
            next_id: Arc::new(std::sync::atomic::AtomicUsize::new(next_id)),
        };
        let targets: Vec<Target> = platforms
            .iter()
            .zip(&plans)
            .zip(&graphs)
            .map(|((platform, plan), graph)| Target {
                platform: platform.clone(),
                plan: plan.clone(),
                ctx: Arc::new(ctx::BuildCtx::new(shared.clone(), graph, platform.clone())),
            })
            .collect();
        let result = if multi {
            build_platforms(&targets).await
        } else {
            build_one(&targets[0]).await
        };
        // A cache whose layer is not what its records say: warn and build again without it
        // (the steps that ran are in this store's cache now).
        let Err(err) = result else { break result };
        let Some(bad) = err.unusable_cache().map(str::to_string) else {
            break Err(err);
        };
        let before = imports.len();
        imports.retain(|i| i.location.name() != bad);
        if imports.len() == before {
            break Err(err);
        }
        events.event(crate::events::BuildEvent::Warning(format!(
            "cache {bad} not used: {}; building again without it",
            rbuild_store::error_chain(&err)
        )));
    };
    let c = context.clone();
    let _ = tokio::task::spawn_blocking(move || c.save_stat_cache()).await;
    built
}

/// The build args no stage used, the `--cache-to` fields ignored.
fn warn(events: &dyn EventSink, graph: &StepGraph, options: &BuildOptions) {
    for unused in &graph.unused_build_args {
        events.event(crate::events::BuildEvent::Warning(format!(
            "build argument {unused:?} was given but not used by any stage"
        )));
    }
    for e in &options.cache_to {
        for field in &e.ignored {
            events.event(crate::events::BuildEvent::Warning(format!(
                "--cache-to {}: {field} ignored: rbuild always exports one OCI image manifest",
                e.location.name()
            )));
        }
    }
}

/// One platform: its image, tagged, and the `--cache-to` exports.
async fn build_one(t: &Target) -> Result<Built, Error> {
    let target = scheduler::run(t.ctx.clone(), &t.plan).await?;
    let built = export::export(&t.ctx, &target).await?;
    remote_cache::export(&t.ctx, &target).await?;
    Ok(built)
}

/// Several platforms, as many at once as the machine has cores: each one's image, then
/// one index over them, tagged.
async fn build_platforms(targets: &[Target]) -> Result<Built, Error> {
    use futures::{StreamExt, TryStreamExt};
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let images: Vec<(rbuild_store::Platform, rbuild_store::Descriptor)> =
        futures::stream::iter(targets.iter().map(|t| async move {
            let target = scheduler::run(t.ctx.clone(), &t.plan).await?;
            let (_, manifest) = export::write_image(&t.ctx, &target).await?;
            Ok::<_, Error>((t.platform.clone(), manifest))
        }))
        .buffered(parallel)
        .try_collect()
        .await?;
    export::export_index(&targets[0].ctx, images).await
}

/// The Dockerfile resolved for these options and one target platform (`--target`, build
/// args, `--build-context` names).
fn graph_of(
    doc: &crate::frontend::Document,
    options: &BuildOptions,
    platform: &rbuild_store::Platform,
) -> Result<StepGraph, Error> {
    let host = rbuild_store::Platform::host();
    let context_names: Vec<String> = options
        .build_contexts
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    Ok(StepGraph::with_contexts(
        doc,
        &options.build_args,
        options.target.as_deref(),
        &host,
        platform,
        &context_names,
    )?)
}

/// The context, and the Dockerfile's name, text and parse.
async fn open_dockerfile(
    store: &rbuild_store::Store,
    options: &BuildOptions,
) -> Result<
    (
        context_dir::ContextDir,
        String,
        Vec<u8>,
        crate::frontend::Document,
    ),
    Error,
> {
    let context = context_dir::ContextDir::open(store, &options.context).await?;
    let (name, text) = context
        .read_dockerfile(
            options.dockerfile.as_deref(),
            options.dockerfile_text.as_deref(),
        )
        .await?;
    let doc = parse(&name, &text)?;
    Ok((context, name, text, doc))
}

/// `rbuild build --check`: parses and resolves the Dockerfile as a build would (errors
/// are errors) and runs the build checks, building nothing. Returns the warnings.
pub async fn check(
    store: &rbuild_store::Store,
    options: &BuildOptions,
) -> Result<Vec<crate::frontend::checks::CheckWarning>, Error> {
    let (context, _, text, doc) = open_dockerfile(store, options).await?;
    let host = rbuild_store::Platform::host();
    for p in options
        .platforms
        .iter()
        .chain(options.platforms.is_empty().then_some(&host))
    {
        graph_of(&doc, options, p)?;
    }
    Ok(lint::run_checks(&context, &doc, &text, &options.build_args)?.warnings)
}
