//! `rbuild build`: turns flags into build options, runs the build with its progress shown,
//! then prints the image ID, writes `--iidfile` and pushes the tags with `--push`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rbuild_builder::solver::named_context::NamedContext;
use rbuild_builder::solver::remote_cache::spec::{CacheExport, CacheImport};
use rbuild_builder::{BuildOptions, ContextSource, NetworkMode, SecretSource, SshSource};
use rbuild_registry::{Client, NoProgress};
use rbuild_store::Reference;
use rbuild_store::Store;

use super::output::{self, Dest, Export};
use super::registry::client_options;
use super::resources;
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

/// `--ssh default|ID|ID=SOCKET|ID=KEY[,KEY]` (buildx's syntax): no path means
/// `$SSH_AUTH_SOCK`; one socket is forwarded as is; key files go to an agent of our own.
fn ssh(s: &str) -> anyhow::Result<(String, SshSource)> {
    let usage = |why: String| -> anyhow::Error { UsageError(format!("--ssh {s:?}: {why}")).into() };
    let (id, paths) = match s.split_once('=') {
        Some((id, paths)) => (id, paths.split(',').filter(|p| !p.is_empty()).collect()),
        None => (s, Vec::new()),
    };
    if id.is_empty() {
        return Err(usage("want default, ID=SOCKET or ID=KEY[,KEY]".into()));
    }
    if paths.is_empty() {
        let sock = std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty());
        let sock = sock.ok_or_else(|| {
            usage("SSH_AUTH_SOCK is not set (start an agent: eval $(ssh-agent) && ssh-add)".into())
        })?;
        return Ok((id.to_string(), SshSource::Socket(PathBuf::from(sock))));
    }
    let mut keys = Vec::new();
    for p in &paths {
        let meta = std::fs::metadata(p).map_err(|e| usage(format!("{p}: {e}")))?;
        if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            if paths.len() > 1 {
                return Err(usage(format!(
                    "{p} is a socket: give one socket or key files"
                )));
            }
            return Ok((id.to_string(), SshSource::Socket(PathBuf::from(p))));
        }
        if !meta.is_file() {
            return Err(usage(format!(
                "{p} is neither an agent socket nor a key file"
            )));
        }
        keys.push(PathBuf::from(p));
    }
    Ok((id.to_string(), SshSource::Keys(keys)))
}

fn normalize_tag(t: &str) -> anyhow::Result<String> {
    Reference::parse(t)
        .map(|r| r.to_string())
        .map_err(|e| UsageError(format!("invalid tag {t:?}: {e}")).into())
}

/// The URL `-f` names, when it is one (`-f https://host/path/Dockerfile`).
fn dockerfile_url(args: &BuildArgs) -> Option<&str> {
    let file = args.file.as_deref()?.to_str()?;
    (file.starts_with("http://") || file.starts_with("https://")).then_some(file)
}

/// The largest Dockerfile `-f URL` downloads.
const MAX_REMOTE_DOCKERFILE: usize = 4 << 20;

/// Downloads the Dockerfile `-f URL` names (at most [`MAX_REMOTE_DOCKERFILE`] bytes).
async fn fetch_dockerfile(url: &str) -> anyhow::Result<Vec<u8>> {
    let what = || format!("-f {url}: cannot fetch the Dockerfile");
    let mut resp = reqwest::get(url)
        .await
        .with_context(what)?
        .error_for_status()
        .with_context(what)?;
    let mut text = Vec::new();
    while let Some(chunk) = resp.chunk().await.with_context(what)? {
        text.extend_from_slice(&chunk);
        if text.len() > MAX_REMOTE_DOCKERFILE {
            anyhow::bail!("-f {url}: the Dockerfile is larger than {MAX_REMOTE_DOCKERFILE} bytes");
        }
    }
    Ok(text)
}

/// Validates the flags into options, before any work starts.
fn options(args: &BuildArgs, annotations: output::Annotations) -> anyhow::Result<BuildOptions> {
    let dockerfile_on_stdin = args.file.as_deref() == Some(std::path::Path::new("-"));
    if dockerfile_on_stdin && args.context == "-" {
        return Err(UsageError(
            "-f -: stdin cannot hold both the Dockerfile and the context (give a context directory)"
                .into(),
        )
        .into());
    }
    let mut git_context = None;
    let context_dir = if args.context == "-" {
        None
    } else {
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            match rbuild_builder::git::parse_git_ref(&args.context) {
                Ok(Some(_)) => git_context = Some(args.context.clone()),
                Ok(None) => {
                    let msg = format!("context {}: not a directory", dir.display());
                    return Err(UsageError(msg).into());
                }
                Err(e) => return Err(UsageError(format!("context: {e}")).into()),
            }
        }
        Some(dir)
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
    let mut options = BuildOptions {
        context: ContextSource::Dir(PathBuf::new()),
        dockerfile: args.file.clone().filter(|_| !dockerfile_on_stdin),
        dockerfile_text: None,
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
        platforms: platforms(&args.platforms)?,
        network,
        secrets: args
            .secrets
            .iter()
            .map(|s| secret(s))
            .collect::<anyhow::Result<_>>()?,
        ssh: args
            .ssh
            .iter()
            .map(|s| ssh(s))
            .collect::<anyhow::Result<_>>()?,
        source_date_epoch,
        extra_hosts: args
            .add_hosts
            .iter()
            .map(|h| resources::add_host(h))
            .collect::<Result<_, _>>()?,
        shm_size: args
            .shm_size
            .as_deref()
            .map(|s| resources::size("--shm-size", s))
            .transpose()?,
        ulimits: args
            .ulimits
            .iter()
            .map(|u| resources::ulimit(u))
            .collect::<Result<_, _>>()?,
        limits: resources::limits(args)?,
        isolation: rbuild_runner::Isolation::default(),
        copied_roots: false,
        manifest_annotations: annotations.manifest,
        descriptor_annotations: annotations.manifest_descriptor,
        cache_from: args
            .cache_from
            .iter()
            .map(|s| CacheImport::parse(s).map_err(|e| UsageError(e.to_string()).into()))
            .collect::<anyhow::Result<_>>()?,
        build_contexts: args
            .build_context
            .iter()
            .map(|s| build_context(s))
            .collect::<anyhow::Result<_>>()?,
        cache_to: args
            .cache_to
            .iter()
            .map(|s| CacheExport::parse(s).map_err(|e| UsageError(e.to_string()).into()))
            .collect::<anyhow::Result<_>>()?,
    };
    // stdin last, once every flag is known to be valid.
    let stdin = || -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    if dockerfile_on_stdin {
        options.dockerfile_text = Some(stdin().context("cannot read the Dockerfile from stdin")?);
    }
    options.context = match (git_context, context_dir) {
        (Some(url), _) => ContextSource::Git(url),
        (None, Some(dir)) => ContextSource::Dir(dir),
        (None, None) => {
            ContextSource::Tar(stdin().context("cannot read the context tar from stdin")?)
        }
    };
    Ok(options)
}

/// What a build for several platforms cannot do yet, refused before it starts.
fn multi_platform_supported(exports: &[Export], opts: &BuildOptions) -> anyhow::Result<()> {
    if let Some(e) = exports
        .iter()
        .find(|e| !matches!(e, Export::Local(_) | Export::Image { .. }))
    {
        let what = output::describe(e).unwrap_or_default();
        return Err(UsageError(format!(
            "--output ({what}): with several --platform values only type=local (a directory \
             per platform) and type=image|registry are supported"
        ))
        .into());
    }
    if !opts.cache_to.is_empty() {
        return Err(UsageError(
            "--cache-to with several --platform values is not supported".into(),
        )
        .into());
    }
    Ok(())
}

/// `--output type=local` of a build for several platforms: each platform's files in its own
/// directory under the destination (`linux_arm64/`, `linux_arm_v7/`), as BuildKit writes them.
async fn write_per_platform(
    store: &Store,
    built: &rbuild_builder::Built,
    exports: &[Export],
    tags: &[String],
    source_date_epoch: Option<i64>,
) -> anyhow::Result<()> {
    for entry in &built.platforms {
        let image = store
            .load_image(None, entry)
            .context("cannot read a built image back")?;
        super::store::fetch_lazy_layers(store, std::slice::from_ref(&image)).await?;
        let dir_name = entry
            .platform
            .as_ref()
            .map(|p| p.to_string().replace('/', "_"))
            .unwrap_or_default();
        for export in exports {
            let Export::Local(dir) = export else { continue };
            let ex = Export::Local(dir.join(&dir_name));
            let (st, img, t) = (store.clone(), image.clone(), tags.to_vec());
            tokio::task::spawn_blocking(move || {
                output::write(&st, &img, &t, &ex, source_date_epoch, &Default::default())
            })
            .await??;
        }
    }
    Ok(())
}

/// `--platform` values: comma lists, each normalised (containerd's rules), each once.
fn platforms(values: &[String]) -> anyhow::Result<Vec<rbuild_store::Platform>> {
    let mut out: Vec<rbuild_store::Platform> = Vec::new();
    for item in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        let p: rbuild_store::Platform = item
            .parse()
            .map_err(|e| UsageError(format!("--platform {item:?}: {e}")))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Runs a build.
pub async fn build(g: &Globals, args: BuildArgs) -> anyhow::Result<()> {
    // Every flag is checked before stdin (`-f -`, a context of `-`) is read.
    if args.push && args.tags.is_empty() {
        return Err(UsageError("--push needs at least one -t NAME".into()).into());
    }
    let (exports, to_stdout) = checked_outputs(&args)?;
    let annotations = output::annotations(&args.annotations)?;
    let index_annotations = annotations.index.clone();
    if !index_annotations.is_empty() && !exports.iter().any(|e| matches!(e, Export::Oci { .. })) {
        return Err(UsageError(
            "--annotation index:...: only a type=oci output has an index; add -o type=oci,dest=..."
                .into(),
        )
        .into());
    }
    let compression = crate::cli::layer_compression(args.compression, args.compression_level)?;
    let format = args.format.checked(args.compression)?;
    let mut opts = options(&args, annotations)?;
    if opts.platforms.len() > 1 {
        multi_platform_supported(&exports, &opts)?;
    }
    let (isolation, isolation_line) = resources::isolation(args.isolation.as_deref())?;
    opts.isolation = isolation;
    if let Some(url) = dockerfile_url(&args) {
        opts.dockerfile_text = Some(fetch_dockerfile(url).await?);
        opts.dockerfile = None;
    }
    let push = image_names(&mut opts, &exports, args.push);
    let store = Store::open(&g.root)
        .with_context(|| format!("cannot open the store at {}", g.root.display()))?;
    if args.check {
        return check_only(&store, &opts).await;
    }
    let client = Client::new(client_options(&args.registry));
    let style = Style::pick(args.progress, args.quiet);
    let view = Arc::new(BuildView::new(style));
    let isolation_line = copied_roots(&store, isolation, isolation_line, &mut opts);
    announce_isolation(&view, isolation, isolation_line, &mut opts);
    let started = Instant::now();
    let tags = opts.tags.clone();
    let source_date_epoch = opts.source_date_epoch;
    let result = rbuild_builder::build(store.clone(), client.clone(), opts, view.clone()).await;
    let built = result.inspect_err(|e| show_output_tail(&view, e))?;
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
    let written = Written {
        store: &store,
        built: &built,
        tags: &tags,
        source_date_epoch,
        view: &view,
    };
    written
        .write_outputs(&args, &exports, &index_annotations)
        .await?;
    for t in &push {
        push_one(&client, &store, t, compression, format, &view).await?;
    }
    // With the files on stdout, stdout is theirs alone.
    if to_stdout == 0 {
        super::print_line(&built.image_id)?;
    }
    Ok(())
}

/// The `-o` outputs, parsed and checked against each other and `-t`; with how many of
/// them write to stdout (at most one).
fn checked_outputs(args: &BuildArgs) -> anyhow::Result<(Vec<Export>, usize)> {
    let exports = args
        .outputs
        .iter()
        .map(|spec| output::parse(spec, normalize_tag))
        .collect::<anyhow::Result<Vec<Export>>>()?;
    let to_stdout = exports
        .iter()
        .filter(|e| {
            matches!(
                e,
                Export::Tar(Dest::Stdout)
                    | Export::Oci {
                        dest: Dest::Stdout,
                        ..
                    }
                    | Export::Docker {
                        dest: Dest::Stdout,
                        ..
                    }
            )
        })
        .count();
    if to_stdout > 1 {
        return Err(UsageError("--output: only one output can go to stdout".into()).into());
    }
    let unnamed = |e: &Export| matches!(e, Export::Image { names, .. } if names.is_empty());
    if args.tags.is_empty() && exports.iter().any(unnamed) {
        return Err(
            UsageError("--output type=image|registry: needs name= or -t NAME".into()).into(),
        );
    }
    Ok((exports, to_stdout))
}

/// Adds the names of `type=image` outputs to the tags (they are tagged like -t) and returns
/// the names to push: every tag with `--push`, and those of `push=true` outputs.
fn image_names(opts: &mut BuildOptions, exports: &[Export], push_flag: bool) -> Vec<String> {
    let mut push: Vec<String> = if push_flag {
        opts.tags.clone()
    } else {
        Vec::new()
    };
    for export in exports {
        if let Export::Image { names, push: p } = export {
            let names = if names.is_empty() {
                opts.tags.clone()
            } else {
                names.clone()
            };
            for n in names {
                if !opts.tags.contains(&n) {
                    opts.tags.push(n.clone());
                }
                if *p && !push.contains(&n) {
                    push.push(n);
                }
            }
        }
    }
    push
}

/// Probes (rootless only) whether overlayfs takes an upper dir on the store's filesystem;
/// where it does not, steps run on copied roots and the isolation line says so.
fn copied_roots(
    store: &Store,
    isolation: rbuild_runner::Isolation,
    line: Option<String>,
    opts: &mut BuildOptions,
) -> Option<String> {
    if rbuild_builder::solver::roots::overlay_refused(store, isolation).is_none() {
        return line;
    }
    opts.copied_roots = true;
    let why = "overlayfs refused on the store's filesystem: steps run on copied roots";
    Some(match line.as_deref().and_then(|l| l.strip_suffix(')')) {
        Some(open) => format!("{open}; {why})"),
        None => format!("isolation: {isolation} ({why})"),
    })
}

/// Says once which isolation `auto` picked and what it does not isolate; rootless applies
/// the cgroup limits in a delegated cgroup v2 subtree, chroot where it can make cgroups,
/// else they are dropped with a warning that says why.
fn announce_isolation(
    view: &BuildView,
    isolation: rbuild_runner::Isolation,
    isolation_line: Option<String>,
    opts: &mut BuildOptions,
) {
    if let Some(line) = isolation_line {
        view.line(&format!("#0 {line}"));
    }
    if let Some(shared) = isolation.not_isolated() {
        view.line(&format!("#0 WARNING: --isolation {isolation}: {shared}"));
    }
    if opts.limits.is_unlimited() {
        return;
    }
    // Rootless limits need a cgroup v2 subtree delegated to the build; chroot's need a
    // writable cgroupfs (not a container's). Without them the limits are dropped, and the
    // warning says which and why.
    let unavailable = match isolation {
        rbuild_runner::Isolation::Rootless => rbuild_runner::delegate_cgroups(&opts.limits)
            .err()
            .map(|why| format!("rootless isolation has no delegated cgroup v2 subtree ({why})")),
        rbuild_runner::Isolation::Chroot => rbuild_runner::trial_cgroup_limits(&opts.limits)
            .err()
            .map(|e| {
                format!(
                    "--isolation chroot cannot make the steps' cgroups here ({:#})",
                    anyhow::Error::from(e)
                )
            }),
        rbuild_runner::Isolation::Namespaces => None,
    };
    if let Some(why) = unavailable {
        let flags = resources::limit_flags(&opts.limits).join(", ");
        view.line(&format!("#0 WARNING: {flags} not applied: {why}"));
        opts.limits = rbuild_runner::Limits::default();
    }
}

/// The last lines a failed step printed, framed as `docker build` does.
fn show_output_tail(view: &BuildView, e: &rbuild_builder::Error) {
    if let Some(tail) = e.output_tail() {
        if !tail.is_empty() {
            view.line("------");
            for l in tail {
                view.line(&format!(" > {l}"));
            }
            view.line("------");
        }
    }
}

/// A finished build, for writing its outputs.
struct Written<'a> {
    store: &'a Store,
    built: &'a rbuild_builder::Built,
    tags: &'a [String],
    source_date_epoch: Option<i64>,
    view: &'a BuildView,
}

impl Written<'_> {
    /// Writes the `-o` outputs (a directory per platform for several), `--metadata-file`
    /// and the `--load` note.
    async fn write_outputs(
        &self,
        args: &BuildArgs,
        exports: &[Export],
        index_annotations: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let Written {
            store,
            built,
            tags,
            source_date_epoch,
            view,
        } = *self;
        // Several platforms: the exports write a directory per platform.
        let per_platform = !built.platforms.is_empty();
        if per_platform && !exports.is_empty() {
            write_per_platform(store, built, exports, tags, source_date_epoch).await?;
            for export in exports {
                if let Some(what) = output::describe(export) {
                    view.line(&format!("#0 exporting {what} done"));
                }
            }
        }
        let single_exports: &[Export] = if per_platform { &[] } else { exports };
        if !single_exports.is_empty() || args.metadata_file.is_some() || args.load {
            let image = store
                .load_image(tags.first().cloned(), &built.manifest)
                .context("cannot read the built image back")?;
            if !single_exports.is_empty() {
                super::store::fetch_lazy_layers(store, std::slice::from_ref(&image)).await?;
            }
            for export in single_exports {
                let (st, ex) = (store.clone(), export.clone());
                let (img, t) = (image.clone(), tags.to_vec());
                let index = index_annotations.clone();
                tokio::task::spawn_blocking(move || {
                    output::write(&st, &img, &t, &ex, source_date_epoch, &index)
                })
                .await??;
                if let Some(what) = output::describe(export) {
                    view.line(&format!("#0 exporting {what} done"));
                }
            }
            if args.load {
                view.line(&format!(
                    "#0 --load: rbuild has no daemon; the image is in the store at {} as {} \
                     (rbuild images, rbuild save)",
                    store.root().display(),
                    if tags.is_empty() {
                        built.image_id.to_string()
                    } else {
                        tags.join(", ")
                    }
                ));
            }
            if let Some(path) = &args.metadata_file {
                let doc = output::metadata(&image, tags);
                let mut bytes = serde_json::to_vec_pretty(&doc)?;
                bytes.push(b'\n');
                std::fs::write(path, bytes)
                    .with_context(|| format!("--metadata-file: cannot write {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Pushes the built image as `name`.
async fn push_one(
    client: &Client,
    store: &Store,
    name: &str,
    compression: rbuild_store::LayerCompression,
    format: rbuild_store::ImageFormat,
    view: &BuildView,
) -> anyhow::Result<()> {
    let dest = Reference::parse(name).map_err(|e| UsageError(e.to_string()))?;
    let pushed = client
        .push(
            store,
            name,
            &dest,
            compression,
            format,
            Arc::new(NoProgress),
        )
        .await
        .with_context(|| format!("cannot push {name}"))?;
    view.line(&format!(
        "#0 pushed {}: digest: {} size: {}",
        dest, pushed.digest, pushed.size
    ));
    Ok(())
}

/// `--build-context NAME=VALUE`: a usage error when it does not parse.
fn build_context(s: &str) -> anyhow::Result<(String, NamedContext)> {
    let (name, value) = s
        .split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| UsageError(format!("--build-context {s:?}: want NAME=VALUE")))?;
    let context = NamedContext::parse(value).map_err(|e| UsageError(e.to_string()))?;
    Ok((name.to_string(), context))
}

/// `rbuild build --check`: the build checks' warnings on stderr; an error (exit 1) when
/// there is any, as `docker build --check`.
async fn check_only(store: &Store, opts: &BuildOptions) -> anyhow::Result<()> {
    let warnings = rbuild_builder::solver::check(store, opts).await?;
    for w in &warnings {
        eprintln!("WARNING: {w}");
    }
    match warnings.len() {
        0 => {
            eprintln!("Check complete, no warnings found.");
            Ok(())
        }
        n => anyhow::bail!("check complete, {n} warning(s) found"),
    }
}
