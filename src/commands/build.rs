//! `rbuild build`: turns flags into build options, runs the build with its progress shown,
//! then prints the image ID, writes `--iidfile` and pushes the tags with `--push`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rbuild_builder::solver::remote_cache::spec::{CacheExport, CacheImport};
use rbuild_builder::{BuildOptions, ContextSource, NetworkMode, SecretSource};
use rbuild_registry::{Client, NoProgress};
use rbuild_store::Reference;
use rbuild_store::Store;

use super::registry::client_options;
use super::Globals;
use crate::cli::BuildArgs;
use crate::exit::UsageError;
use crate::progress::build::BuildView;
use crate::progress::Style;

fn key_value(flag: &str, s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        // `--build-arg NAME` takes the value from the environment, as docker does.
        None if flag == "--build-arg" && !s.is_empty() => {
            Ok((s.to_string(), std::env::var(s).unwrap_or_default()))
        }
        _ => Err(UsageError(format!("{flag} {s:?}: want KEY=VALUE")).into()),
    }
}

fn secret(s: &str) -> anyhow::Result<(String, SecretSource)> {
    let mut id = None;
    let mut source = None;
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => source = Some(SecretSource::File(PathBuf::from(v))),
            Some(("env", v)) => source = Some(SecretSource::Env(v.to_string())),
            Some(("type", "file" | "env")) => {}
            _ => return Err(UsageError(format!("--secret {s:?}: unknown field {field:?}")).into()),
        }
    }
    let id = id.ok_or_else(|| UsageError(format!("--secret {s:?}: id= is required")))?;
    // Like docker: without src/env, an env var named like the id.
    let source = source.unwrap_or_else(|| SecretSource::Env(id.clone()));
    if let SecretSource::File(p) = &source {
        if !p.is_file() {
            return Err(
                UsageError(format!("--secret {s:?}: {} is not a file", p.display())).into(),
            );
        }
    }
    Ok((id, source))
}

fn normalize_tag(t: &str) -> anyhow::Result<String> {
    Reference::parse(t)
        .map(|r| r.to_string())
        .map_err(|e| UsageError(format!("invalid tag {t:?}: {e}")).into())
}

/// Validates the flags into options, before any work starts.
fn options(args: &BuildArgs) -> anyhow::Result<BuildOptions> {
    let context = if args.context == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the context tar from stdin")?;
        ContextSource::Tar(bytes)
    } else {
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            return Err(UsageError(format!("context {}: not a directory", dir.display())).into());
        }
        ContextSource::Dir(dir)
    };
    let network = match args.network.as_deref() {
        None | Some("default") | Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        Some(other) => {
            return Err(
                UsageError(format!("--network {other:?}: want default, host or none")).into(),
            )
        }
    };
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().parse::<i64>().map_err(|_| {
            UsageError(format!("SOURCE_DATE_EPOCH={v:?}: want seconds since 1970"))
        })?),
        _ => None,
    };
    Ok(BuildOptions {
        context,
        dockerfile: args.file.clone(),
        build_args: args
            .build_args
            .iter()
            .map(|s| key_value("--build-arg", s))
            .collect::<anyhow::Result<_>>()?,
        target: args.target.clone(),
        tags: args
            .tags
            .iter()
            .map(|t| normalize_tag(t))
            .collect::<anyhow::Result<_>>()?,
        labels: args
            .labels
            .iter()
            .map(|s| key_value("--label", s))
            .collect::<anyhow::Result<_>>()?,
        no_cache: args.no_cache,
        pull: args.pull,
        platform: args.platform.clone(),
        network,
        secrets: args
            .secrets
            .iter()
            .map(|s| secret(s))
            .collect::<anyhow::Result<_>>()?,
        source_date_epoch,
        cache_from: args
            .cache_from
            .iter()
            .map(|s| CacheImport::parse(s).map_err(|e| UsageError(e.to_string()).into()))
            .collect::<anyhow::Result<_>>()?,
        cache_to: args
            .cache_to
            .iter()
            .map(|s| CacheExport::parse(s).map_err(|e| UsageError(e.to_string()).into()))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// Runs a build.
pub async fn build(g: &Globals, args: BuildArgs) -> anyhow::Result<()> {
    if args.push && args.tags.is_empty() {
        return Err(UsageError("--push needs at least one -t NAME".into()).into());
    }
    let compression = crate::cli::layer_compression(args.compression, args.compression_level)?;
    let opts = options(&args)?;
    let store = Store::open(&g.root)
        .with_context(|| format!("cannot open the store at {}", g.root.display()))?;
    let client = Client::new(client_options(&args.registry));
    let style = Style::pick(args.progress, args.quiet);
    let view = Arc::new(BuildView::new(style));
    let started = Instant::now();
    let tags = opts.tags.clone();
    let result = rbuild_builder::build(store.clone(), client.clone(), opts, view.clone()).await;
    let built = match result {
        Ok(b) => b,
        Err(e) => {
            if let Some(tail) = e.output_tail() {
                if !tail.is_empty() {
                    view.line("------");
                    for l in tail {
                        view.line(&format!(" > {l}"));
                    }
                    view.line("------");
                }
            }
            return Err(e.into());
        }
    };
    if let Some(path) = &args.iidfile {
        std::fs::write(path, built.image_id.to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    view.line(&format!(
        "#0 writing image {} done in {:.1}s",
        built.image_id,
        started.elapsed().as_secs_f64()
    ));
    for t in &tags {
        view.line(&format!("#0 naming to {t} done"));
    }
    if args.push {
        for t in &tags {
            let dest = Reference::parse(t).map_err(|e| UsageError(e.to_string()))?;
            let pushed = client
                .push(&store, t, &dest, compression, Arc::new(NoProgress))
                .await
                .with_context(|| format!("cannot push {t}"))?;
            view.line(&format!(
                "#0 pushed {}: digest: {} size: {}",
                dest, pushed.digest, pushed.size
            ));
        }
    }
    println!("{}", built.image_id);
    Ok(())
}
