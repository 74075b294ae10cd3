//! RUN: the command in the runner's sandbox over the stage's layers, with the stage's
//! USER, WORKDIR, ENV and in-scope ARGs, `--network`, and `--mount` (cache dirs that
//! persist in the store, binds, tmpfs, secrets that never reach the layer, ssh agents); the
//! upper dir becomes the step's layer (kept even when empty, as docker does). HOME defaults to the
//! user's home in the image's /etc/passwd, as runc sets it.

use std::collections::VecDeque;

use rbuild_runner::{ExtraMount, SandboxSpec, Stream};
use rbuild_store::ExternalFiles;

use super::meta::{current_lowers, make_layer, shell_of};
use super::ssh_mount::{ssh_keys, ssh_mounts, start_ssh};
use super::{commit, lookup, Lookup, StepCx};
use crate::context::pathclean::{clean_in_root, leaves_root};
use crate::context::{digest_sources, select_sources, ContextFiles, IgnoreRules, SelectedSource};
use crate::copy::{copy_into, CopySource, CopySpec, Layers};
use crate::error::RunFailure;
use crate::events::{BuildEvent, OutputStream};
use crate::frontend::Base;
use crate::frontend::{Mount, MountKind, Network, Run, ShellOrExec};
use crate::solver::cachekey::KeyEncoder;
use crate::solver::ctx::blocking;
use crate::solver::state::{LayerRef, StageState};
use crate::solver::{NetworkMode, SecretSource};
use crate::Error;

/// Lines of output kept for the error of a failed step.
const TAIL_LINES: usize = 10;

/// A mount prepared for the sandbox, with what keys it.
struct Prepared {
    mount: ExtraMount,
    key: String,
    /// A temporary directory to delete after the step.
    _scratch: Option<rbuild_store::TmpDir>,
    /// A bind from a stage or image, filled only when the step runs (its key does not need
    /// the files, so a cache hit fetches none of the origin's layers).
    pending: Option<PendingBind>,
}

/// What a bind mount from a stage or image copies out of it: `source` of `layers` into
/// `upper`/b.
struct PendingBind {
    layers: Vec<LayerRef>,
    source: String,
    upper: std::path::PathBuf,
}

impl PendingBind {
    async fn fill(self, cx: &StepCx<'_>) -> Result<(), Error> {
        let lowers = cx.ctx.lowers(&self.layers).await?;
        let (s, upper) = (self.source, self.upper);
        blocking(move || {
            let files = ContextFiles::walk_layers(&lowers)?;
            let selected = select_sources(&files, &[s])?;
            materialize(&files, &selected, &upper, true)
        })
        .await
    }
}

fn option<'a>(m: &'a Mount, name: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn scratch_dir(cx: &StepCx<'_>) -> Result<rbuild_store::TmpDir, Error> {
    cx.ctx
        .store
        .tmp_dir()
        .map_err(Error::store("create a scratch directory"))
}

/// Cache-mount ids become one directory name.
fn cache_dir_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(id.as_bytes())[..6]);
    format!("{}-{hash}", safe.trim_matches('_'))
}

async fn prepare_mount(
    cx: &StepCx<'_>,
    m: &Mount,
    from: Option<&Base>,
) -> Result<Option<Prepared>, Error> {
    let target = m.target.clone();
    match m.kind {
        MountKind::Cache => cache_mount(cx, m, target).await,
        MountKind::Tmpfs => tmpfs_mount(m, target),
        MountKind::Secret => secret_mount(cx, m, target).await,
        MountKind::Bind => bind_mount(cx, m, from, target).await,
        // Forwarded only when the step runs (`ssh_mount`).
        MountKind::Ssh => Ok(None),
    }
}

/// `type=cache`: a directory in the store's cache-mounts area, created with the asked owner and mode, kept between builds.
async fn cache_mount(
    cx: &StepCx<'_>,
    m: &Mount,
    target: Option<String>,
) -> Result<Option<Prepared>, Error> {
    let target = target.unwrap_or_default();
    let id = option(m, "id").unwrap_or(&target).to_string();
    let dir = cx
        .ctx
        .store
        .area(rbuild_store::Area::CacheMounts)
        .map_err(Error::store("open the cache mounts area"))?
        .path()
        .join(cache_dir_name(&id));
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let uid = option(m, "uid").and_then(|u| u.parse().ok()).unwrap_or(0);
        let gid = option(m, "gid").and_then(|g| g.parse().ok()).unwrap_or(0);
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(Error::io("chown", &dir))?;
        let mode = option(m, "mode")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(0o755);
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(Error::io("chmod", &dir))?;
    }
    Ok(Some(Prepared {
        key: format!("cache:{id}:{target}"),
        mount: ExtraMount::Bind {
            source: dir,
            target,
            readonly: m.readonly && option(m, "ro").is_some(),
        },
        _scratch: None,
        pending: None,
    }))
}

/// `type=tmpfs`: a fresh tmpfs of the asked size.
fn tmpfs_mount(m: &Mount, target: Option<String>) -> Result<Option<Prepared>, Error> {
    let target = target.unwrap_or_default();
    let size = option(m, "size").and_then(|s| s.parse().ok());
    Ok(Some(Prepared {
        key: format!(
            "tmpfs:{target}:{}",
            size.map_or_else(|| "-".to_string(), |s: u64| s.to_string())
        ),
        mount: ExtraMount::Tmpfs { target, size },
        _scratch: None,
        pending: None,
    }))
}

/// `type=secret`: the secret's bytes in a file only this step sees; never in a layer or a key.
async fn secret_mount(
    cx: &StepCx<'_>,
    m: &Mount,
    target: Option<String>,
) -> Result<Option<Prepared>, Error> {
    let id = option(m, "id")
        .map(str::to_string)
        .or_else(|| {
            target
                .as_deref()
                .and_then(|t| t.rsplit('/').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
    let required = option(m, "required").is_some_and(|v| v != "false");
    let source = cx
        .ctx
        .options
        .secrets
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, s)| s.clone());
    let Some(source) = source else {
        if required {
            return Err(Error::SecretMissing { id });
        }
        return Ok(None);
    };
    let (path, scratch) = match source {
        SecretSource::File(p) => (p, None),
        SecretSource::Env(var) => {
            let dir = scratch_dir(cx)?;
            let p = dir.path().join("secret");
            let value = std::env::var_os(&var).unwrap_or_default();
            std::fs::write(
                &p,
                std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()),
            )
            .map_err(Error::io("write", &p))?;
            (p, Some(dir))
        }
    };
    Ok(Some(Prepared {
        // The secret's value never enters the key: only that it is mounted.
        key: format!("secret:{id}:{target}"),
        mount: ExtraMount::Bind {
            source: path,
            target,
            readonly: true,
        },
        _scratch: scratch,
        pending: None,
    }))
}

/// `type=bind`: a directory of the context, a stage or an image, read-only unless `rw`.
async fn bind_mount(
    cx: &StepCx<'_>,
    m: &Mount,
    from: Option<&Base>,
    target: Option<String>,
) -> Result<Option<Prepared>, Error> {
    let target = target.unwrap_or_default();
    let source = m.source.clone().unwrap_or_else(|| ".".into());
    if leaves_root(&source) {
        return Err(Error::OutsideContext {
            source_path: source,
        });
    }
    match from {
        None => {
            // Select and hash what is bound (the context after `.dockerignore`,
            // through the stat cache), so a change of the files re-runs the step.
            let files = cx.ctx.context.files().await?;
            let stat_cache = cx.ctx.context.stat_cache.clone();
            let (files_b, s) = (files.clone(), source.clone());
            let (selected, digest) = blocking(move || {
                let selected = select_sources(&files_b, &[s])?;
                let mut cache = stat_cache.lock().unwrap_or_else(|e| e.into_inner());
                let content =
                    digest_sources(&files_b, &selected, &IgnoreRules::default(), &mut cache)?;
                Ok((selected, content.digest))
            })
            .await?;
            // A writable bind gets a copy, so the context is never written.
            let (source_path, scratch) = if m.readonly {
                (cx.ctx.context.root.join(clean_in_root(&source)), None)
            } else {
                let dir = scratch_dir(cx)?;
                let into = dir.path().join("b");
                let upper = dir.path().to_path_buf();
                blocking(move || materialize(&files, &selected, &upper, false)).await?;
                (into, Some(dir))
            };
            Ok(Some(Prepared {
                key: format!("bind:context:{source}:{target}:{}:{digest}", m.readonly),
                mount: ExtraMount::Bind {
                    source: source_path,
                    target,
                    readonly: m.readonly,
                },
                _scratch: scratch,
                pending: None,
            }))
        }
        Some(base) => {
            let (layers, ident) = match base {
                Base::Stage(i) => {
                    let dep = cx.deps.get(i).ok_or_else(|| Error::SourceNotFound {
                        source_path: format!("stage {i}"),
                    })?;
                    (dep.layers.clone(), format!("stage:{}", dep.key.hex()))
                }
                Base::Image(r) => {
                    let b = cx.ctx.base_image(r, &cx.ctx.platform, cx.id).await?;
                    (b.layers, format!("image:{}", b.manifest))
                }
                Base::Context(name) => {
                    let b = cx.ctx.context_image(name, &cx.ctx.platform, cx.id).await?;
                    (b.layers, format!("image:{}", b.manifest))
                }
                Base::Scratch => (Vec::new(), "scratch".into()),
            };
            let dir = scratch_dir(cx)?;
            let into = dir.path().join("b");
            let upper = dir.path().to_path_buf();
            Ok(Some(Prepared {
                key: format!("bind:{ident}:{source}:{target}:{}", m.readonly),
                mount: ExtraMount::Bind {
                    source: into,
                    target,
                    readonly: m.readonly,
                },
                _scratch: Some(dir),
                pending: Some(PendingBind {
                    layers,
                    source,
                    upper,
                }),
            }))
        }
    }
}

/// Copies the one `selected` source of `files` to `<upper>/b` (a directory's contents, or
/// the file itself), for a writable or stage bind mount.
fn materialize(
    files: &ContextFiles,
    selected: &[SelectedSource],
    upper: &std::path::Path,
    preserve_owner: bool,
) -> Result<(), Error> {
    let mut spec = CopySpec::new(CopySource::Tree { files, selected }, "/b");
    spec.preserve_owner = preserve_owner;
    copy_into(
        &spec,
        &Layers {
            upper,
            lowers: &[],
            deferred: None,
        },
    )?;
    Ok(())
}

/// The argv of a RUN, heredocs included.
fn command(st: &StageState, r: &Run) -> Vec<String> {
    match &r.command {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut argv = shell_of(st);
            let script = match r.heredocs.first() {
                // `RUN <<EOF`: the heredoc is the script.
                Some(h) if s.trim().starts_with("<<") && r.heredocs.len() == 1 => h.data.clone(),
                // `RUN cat <<EOF > f`: the shell reads the body from the script text.
                Some(_) => {
                    let mut text = s.clone();
                    for h in &r.heredocs {
                        text.push('\n');
                        text.push_str(&h.data);
                        if !h.data.ends_with('\n') {
                            text.push('\n');
                        }
                        text.push_str(&h.name);
                    }
                    text
                }
                None => s.clone(),
            };
            argv.push(script);
            argv
        }
    }
}

/// RUN.
pub async fn run(cx: &StepCx<'_>, st: &mut StageState, r: &Run) -> Result<Lookup, Error> {
    if r.insecure {
        return Err(Error::InvalidFlag {
            flag: "--security",
            value: "insecure".into(),
            reason: "the security.insecure entitlement is not supported (RUN steps get docker's default capabilities)",
        });
    }
    let argv = command(st, r);
    let mut env = step_env(cx, st);
    let network = match r.network {
        Network::Host => rbuild_runner::Network::Host,
        Network::None => rbuild_runner::Network::None,
        Network::Default => match cx.ctx.options.network {
            NetworkMode::Host => rbuild_runner::Network::Host,
            NetworkMode::None => rbuild_runner::Network::None,
        },
    };
    let user_spec = st.config.config.user.clone().unwrap_or_default();
    let cwd = st
        .config
        .config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let mut prepared = Vec::new();
    for (i, m) in r.mounts.iter().enumerate() {
        let from = cx.step.mount_from.get(i).and_then(|f| f.as_ref());
        if let Some(p) = prepare_mount(cx, m, from).await? {
            prepared.push(p);
        }
    }
    let ssh = ssh_mounts(cx, &r.mounts)?;
    let mut mount_keys: Vec<String> = prepared.iter().map(|p| p.key.clone()).collect();
    mount_keys.extend(ssh_keys(&ssh));
    let mut k = KeyEncoder::new("RUN", Some(&st.key));
    k.list("argv", &argv)
        .pairs("env", &env)
        .str("user", &user_spec)
        .str("cwd", &cwd)
        .str("network", network_key(&network))
        .list("mounts", &mount_keys);
    key_sandbox_options(&mut k, &cx.ctx.options);
    let key = k.finish();
    let created_by = created_by(&cx.step.args, &argv);
    if let Lookup::Hit = lookup(cx, st, key, None).await? {
        return Ok(Lookup::Hit);
    }
    // A foreign architecture's binaries run through binfmt_misc; without an emulator the
    // step fails here, before anything is mounted.
    if !st.config.os.is_empty() {
        crate::solver::emulation::execution(&st.config.platform())?;
    }

    for p in &mut prepared {
        if let Some(pending) = p.pending.take() {
            pending.fill(cx).await?;
        }
    }
    let lowers = current_lowers(cx, st).await?;
    let (l, u) = (lowers.clone(), user_spec.clone());
    let (user, home) = blocking(move || {
        let err = |source| Error::User {
            spec: u.clone(),
            source,
        };
        let user = if u.is_empty() {
            rbuild_runner::User::default()
        } else {
            rbuild_runner::resolve_user(&l, &u).map_err(err)?
        };
        let home = rbuild_runner::home_dir(&l, &u).map_err(err)?;
        Ok((user, home))
    })
    .await?;
    // docker (runc): HOME from the step user's passwd entry when neither the image nor an
    // arg sets it. It follows from the layers and USER, both in the key already.
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home));
    }
    // The agent sockets exist only while the step runs; SSH_AUTH_SOCK (a path in the
    // step, already keyed by the mount) is not in the key's env.
    let ssh = start_ssh(cx, &ssh)?;
    if let Some(sock) = &ssh.auth_sock {
        if !env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
            env.push(("SSH_AUTH_SOCK".into(), sock.clone()));
        }
    }
    let sandbox = cx.ctx.sandbox.clone();
    let events = cx.ctx.events.clone();
    let id = cx.id;
    let mut extra_mounts: Vec<ExtraMount> = prepared.iter().map(|p| p.mount.clone()).collect();
    extra_mounts.extend(ssh.mounts.iter().cloned());
    let env_strings: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let failure = RunFailure {
        file: cx.ctx.dockerfile.clone(),
        line: cx.step.location.start_line,
        instruction: cx.text(),
        command: argv.join(" "),
        status: String::new(),
        tail: Vec::new(),
    };
    let options = &cx.ctx.options;
    let (extra_hosts, shm_size) = (options.extra_hosts.clone(), options.shm_size);
    let (ulimits, limits) = (options.ulimits.clone(), options.limits.clone());
    let layer = make_layer(cx, st, lowers, move |mounts| {
        let mut spec = SandboxSpec::new(
            mounts.lowers.clone(),
            mounts.upper.clone(),
            mounts.work.clone(),
            argv,
        );
        if mounts.copied_root {
            spec.root = rbuild_runner::RootKind::Copied;
        }
        spec.env = env_strings;
        spec.cwd = cwd;
        spec.user = user;
        spec.network = network;
        spec.mounts = extra_mounts;
        if !extra_hosts.is_empty() {
            let mut hosts = rbuild_runner::default_hosts(&spec.hostname);
            for (name, address) in &extra_hosts {
                hosts.push_str(&format!("{address}\t{name}\n"));
            }
            spec.hosts = Some(hosts);
        }
        spec.shm_size = shm_size;
        spec.ulimits = ulimits;
        spec.limits = limits;
        let mut tail: VecDeque<String> = VecDeque::new();
        let status = sandbox
            .run(&spec, &mut |stream, line| {
                let text = String::from_utf8_lossy(line)
                    .trim_end_matches('\n')
                    .to_string();
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text.clone());
                events.event(BuildEvent::StepOutput {
                    id,
                    stream: match stream {
                        Stream::Stdout => OutputStream::Stdout,
                        Stream::Stderr => OutputStream::Stderr,
                    },
                    line: text.into_bytes(),
                });
            })
            .map_err(Error::Sandbox)?;
        if !status.success() {
            return Err(Error::RunFailed(Box::new(RunFailure {
                status: status.to_string(),
                tail: tail.into_iter().collect(),
                ..failure
            })));
        }
        Ok(ExternalFiles::new())
    })
    .await;
    drop(prepared);
    drop(ssh);
    let layer = layer?;
    commit(cx, st, key, Some(layer), created_by, None).await?;
    Ok(Lookup::Miss)
}

/// The step's environment: the image's ENV over the ARGs in scope (ENV wins), and docker's
/// PATH when neither sets one.
fn step_env(cx: &StepCx<'_>, st: &StageState) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let config_env = st.config.env_pairs();
    for (k, v) in &cx.step.args {
        if !config_env.iter().any(|(ek, _)| ek == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    env.extend(config_env);
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), rbuild_runner::DEFAULT_PATH.into()));
    }
    env
}

/// What the step sees of --add-host, --shm-size and --ulimit keys it, as in BuildKit's
/// exec op; only when given, so the keys of builds without them stay as they were. cgroup
/// limits change no output and key nothing.
fn key_sandbox_options(k: &mut KeyEncoder, options: &crate::solver::BuildOptions) {
    if !options.extra_hosts.is_empty() {
        k.pairs("hosts", &options.extra_hosts);
    }
    if let Some(bytes) = options.shm_size {
        k.str("shm", &bytes.to_string());
    }
    if !options.ulimits.is_empty() {
        let ulimits: Vec<String> = options
            .ulimits
            .iter()
            .map(|u| format!("{}={}:{}", u.name, u.soft, u.hard))
            .collect();
        k.list("ulimits", &ulimits);
    }
}

/// The history entry of a RUN, as BuildKit writes it (`RUN |N A=1 ... cmd` with args).
fn created_by(args: &[(String, String)], argv: &[String]) -> String {
    let shown: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if shown.is_empty() {
        format!("RUN {} # buildkit", argv.join(" "))
    } else {
        format!(
            "RUN |{} {} {} # buildkit",
            shown.len(),
            shown.join(" "),
            argv.join(" ")
        )
    }
}

/// The network mode as it enters a RUN key: a fixed name per mode, so renaming a variant
/// never changes a key.
fn network_key(network: &rbuild_runner::Network) -> &'static str {
    match network {
        rbuild_runner::Network::Host => "host",
        rbuild_runner::Network::None => "none",
    }
}
