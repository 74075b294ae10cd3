//! `rbuild push|pull|login|logout`: the commands that talk to registries.

use std::io::Read;
use std::sync::Arc;

use anyhow::Context;
use rbuild_registry::{
    docker_config_path, normalize_registry, Client, ClientOptions, RetryLog, Secret,
};
use rbuild_store::{Platform, Reference, Store, DOCKER_HUB};

use super::Globals;
use crate::cli::{LoginArgs, LogoutArgs, PullArgs, PushArgs, RegistryFlags};
use crate::exit::UsageError;
use crate::progress::transfer::{Direction, TransferView};
use crate::progress::Style;

/// Client options from the shared registry flags.
pub fn client_options(flags: &RegistryFlags) -> ClientOptions {
    ClientOptions {
        tls_verify: flags.tls_verify,
        timeout: std::time::Duration::from_secs_f64(flags.registry_timeout),
        attempts: flags.registry_attempts,
        retry_log: RetryLog::new(|r| {
            eprintln!(
                "warning: retrying {} (attempt {} of {} in {:.1} s): {}",
                r.what,
                r.attempt,
                r.attempts,
                r.delay.as_secs_f64(),
                r.cause
            );
        }),
        ..ClientOptions::default()
    }
}

fn open_store(g: &Globals) -> anyhow::Result<Store> {
    Store::open(&g.root).with_context(|| format!("cannot open the store at {}", g.root.display()))
}

fn parse_reference(s: &str) -> anyhow::Result<Reference> {
    Reference::parse(s).map_err(|e| UsageError(e.to_string()).into())
}

/// `rbuild push`.
pub async fn push(g: &Globals, args: PushArgs) -> anyhow::Result<()> {
    let destination = parse_reference(args.destination.as_deref().unwrap_or(&args.image))?;
    let compression = crate::cli::layer_compression(args.compression, args.compression_level)?;
    let format = args.format.checked(args.compression)?;
    let store = open_store(g)?;
    let client = Client::new(client_options(&args.registry));
    let mode = Style::pick(args.progress, args.quiet);
    let view = Arc::new(TransferView::new(mode, Direction::Push));
    if mode == Style::Plain {
        eprintln!("The push refers to repository [{}]", destination.name());
    }
    let pushed = client
        .push(
            &store,
            &args.image,
            &destination,
            compression,
            format,
            view.clone(),
        )
        .await;
    view.finish();
    let pushed = pushed?;
    if args.quiet {
        super::print_line(&pushed.digest)?;
    } else {
        super::print_line(format!(
            "{}: digest: {} size: {}",
            destination.manifest_ref(),
            pushed.digest,
            pushed.size
        ))?;
    }
    Ok(())
}

/// `rbuild pull`.
pub async fn pull(g: &Globals, args: PullArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| UsageError(e.to_string()))?,
        ),
        None => None,
    };
    let store = open_store(g)?;
    let client = Client::new(client_options(&args.registry));
    let mode = Style::pick(args.progress, args.quiet);
    let view = Arc::new(TransferView::new(mode, Direction::Pull));
    if mode == Style::Plain {
        eprintln!(
            "{}: Pulling from {}",
            reference.manifest_ref(),
            reference.repository()
        );
    }
    let pulled = client
        .pull(&store, &reference, platform.as_ref(), view.clone())
        .await;
    view.finish();
    let pulled = pulled?;
    if args.quiet {
        super::print_line(&pulled.config.digest)?;
    } else {
        super::print_line(format!("Digest: {}", pulled.resolved))?;
        super::print_line(format!("Status: Downloaded image for {reference}"))?;
        super::print_line(&reference)?;
    }
    Ok(())
}

/// `rbuild login`.
pub async fn login(_g: &Globals, args: LoginArgs) -> anyhow::Result<()> {
    let registry = normalize_registry(args.server.as_deref().unwrap_or(DOCKER_HUB));
    let username = args
        .username
        .ok_or_else(|| UsageError("login needs --username".into()))?;
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => {
            return Err(UsageError("--password and --password-stdin are exclusive".into()).into())
        }
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            Secret::new(p)
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the password from stdin")?;
            let p = s.trim_end_matches(['\n', '\r']).to_string();
            if p.is_empty() {
                return Err(UsageError("empty password on stdin".into()).into());
            }
            Secret::new(p)
        }
        (None, false) => {
            return Err(UsageError("login needs --password-stdin (or --password)".into()).into())
        }
    };
    let client = Client::new(client_options(&args.registry));
    client
        .login(&registry, &username, &password)
        .await
        .with_context(|| format!("login to {registry} failed"))?;
    let path = docker_config_path();
    let (p, r, u) = (path.clone(), registry.clone(), username.clone());
    tokio::task::spawn_blocking(move || rbuild_registry::store_login(&p, &r, &u, &password))
        .await??;
    super::print_line("Login Succeeded")?;
    Ok(())
}

/// `rbuild logout`.
pub async fn logout(_g: &Globals, args: LogoutArgs) -> anyhow::Result<()> {
    let registry = normalize_registry(args.server.as_deref().unwrap_or(DOCKER_HUB));
    let path = docker_config_path();
    let r = registry.clone();
    let removed =
        tokio::task::spawn_blocking(move || rbuild_registry::remove_login(&path, &r)).await??;
    if removed {
        super::print_line(format!("Removing login credentials for {registry}"))?;
    } else {
        super::print_line(format!("Not logged in to {registry}"))?;
    }
    Ok(())
}
