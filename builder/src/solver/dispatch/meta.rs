//! The instructions that only change the image config (ENV, LABEL, EXPOSE, VOLUME, USER,
//! ENTRYPOINT, CMD, STOPSIGNAL, HEALTHCHECK, SHELL, ARG, MAINTAINER, ONBUILD), and WORKDIR,
//! which also creates its directory (a layer when it does not exist yet, as BuildKit does).

use std::collections::BTreeMap;

use rbuild_store::{ExternalFiles, Mounts, TarOptions};

use super::{commit, lookup, push_history, Lookup, StepCx};
use crate::context::pathclean::clean_in_root;
use crate::copy::Layers;
use crate::frontend::{expand_env_pairs, ArgDecl, Healthcheck, KeyValue, Scope, ShellOrExec};
use crate::solver::cachekey::KeyEncoder;
use crate::solver::ctx::blocking;
use crate::solver::state::{CacheUse, LayerRef, StageState};
use crate::Error;
use rbuild_store::model::config::{Empty, HealthConfig};

/// Ends a metadata step: history entry (no layer) and the next key in the chain.
fn done(cx: &StepCx<'_>, st: &mut StageState, kind: &str, created_by: String) {
    let mut k = KeyEncoder::new(kind, Some(&st.key));
    k.str("instruction", &created_by);
    // Args in scope are part of what later RUN steps see.
    k.pairs("args", &cx.step.args);
    st.key = k.finish();
    push_history(cx, st, created_by, true);
}

/// The argv of a shell-or-exec form with the stage's SHELL.
pub fn argv(st: &StageState, c: &ShellOrExec) -> Vec<String> {
    match c {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut v = shell_of(st);
            v.push(s.clone());
            v
        }
    }
}

/// SHELL, default `/bin/sh -c`.
pub fn shell_of(st: &StageState) -> Vec<String> {
    st.config
        .config
        .shell
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// ENV k=v...: every pair is expanded against the environment before the instruction, as
/// docker does (`ENV A=y B=$A` gives B the earlier value of A), then set in order.
pub fn env(cx: &StepCx<'_>, st: &mut StageState, pairs: &[KeyValue]) -> Result<(), Error> {
    let before = st.config.env_pairs();
    let scope = Scope {
        env: &before,
        args: &cx.step.args,
    };
    let expanded = expand_env_pairs(&cx.ctx.lexer, pairs, &scope)?;
    let mut text = Vec::new();
    for (key, value) in expanded {
        st.config.set_env(&key, &value);
        text.push(format!("{key}={value}"));
    }
    done(cx, st, "ENV", format!("ENV {}", text.join(" ")));
    Ok(())
}

/// LABEL k=v...
pub fn label(cx: &StepCx<'_>, st: &mut StageState, pairs: &[KeyValue]) -> Result<(), Error> {
    let mut text = Vec::new();
    for kv in pairs {
        let key = cx.expand(st, &kv.key)?;
        let value = cx.expand(st, &kv.value)?;
        text.push(format!("{key}={value}"));
        st.config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key, value);
    }
    done(cx, st, "LABEL", format!("LABEL {}", text.join(" ")));
    Ok(())
}

/// EXPOSE 80 8080/udp...
pub fn expose(cx: &StepCx<'_>, st: &mut StageState, ports: &[String]) -> Result<(), Error> {
    let mut added = Vec::new();
    for p in ports {
        for word in cx.ctx.lexer.expand_words(p, &scope_env(cx, st))? {
            let port = if word.contains('/') {
                word.to_ascii_lowercase()
            } else {
                format!("{word}/tcp")
            };
            let (num, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
            let valid_num = !num.is_empty() && num.split('-').all(|n| n.parse::<u16>().is_ok());
            if !valid_num || !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(Error::InvalidFlag {
                    flag: "EXPOSE port",
                    value: word,
                    reason: "want PORT[/tcp|udp|sctp]",
                });
            }
            added.push(port.clone());
            st.config
                .config
                .exposed_ports
                .get_or_insert_with(BTreeMap::new)
                .insert(port, Empty {});
        }
    }
    done(cx, st, "EXPOSE", format!("EXPOSE {}", added.join(" ")));
    Ok(())
}

fn scope_env(cx: &StepCx<'_>, st: &StageState) -> Vec<(String, String)> {
    // ENV wins over ARG: args first, env after (later entries win in a lookup).
    let mut v = cx.step.args.clone();
    v.extend(st.config.env_pairs());
    v
}

/// VOLUME /a /b
pub fn volume(cx: &StepCx<'_>, st: &mut StageState, vols: &[String]) -> Result<(), Error> {
    let mut added = Vec::new();
    for v in vols {
        let path = cx.expand(st, v)?;
        added.push(path.clone());
        st.config
            .config
            .volumes
            .get_or_insert_with(BTreeMap::new)
            .insert(path, Empty {});
    }
    done(cx, st, "VOLUME", format!("VOLUME [{}]", added.join(" ")));
    Ok(())
}

/// USER name[:group]
pub fn user(cx: &StepCx<'_>, st: &mut StageState, u: &str) -> Result<(), Error> {
    let user = cx.expand(st, u)?;
    st.config.config.user = Some(user.clone());
    done(cx, st, "USER", format!("USER {user}"));
    Ok(())
}

/// ENTRYPOINT: also drops a CMD inherited from the base (docker's rule).
pub fn entrypoint(cx: &StepCx<'_>, st: &mut StageState, c: &ShellOrExec) -> Result<(), Error> {
    let v = argv(st, c);
    st.config.config.entrypoint = Some(v.clone());
    if !st.cmd_set_here {
        st.config.config.cmd = None;
    }
    done(cx, st, "ENTRYPOINT", format!("ENTRYPOINT {}", json(&v)));
    Ok(())
}

/// CMD
pub fn cmd(cx: &StepCx<'_>, st: &mut StageState, c: &ShellOrExec) -> Result<(), Error> {
    let v = argv(st, c);
    st.config.config.cmd = Some(v.clone());
    st.cmd_set_here = true;
    done(cx, st, "CMD", format!("CMD {}", json(&v)));
    Ok(())
}

/// STOPSIGNAL
pub fn stopsignal(cx: &StepCx<'_>, st: &mut StageState, s: &str) -> Result<(), Error> {
    let sig = cx.expand(st, s)?;
    st.config.config.stop_signal = Some(sig.clone());
    done(cx, st, "STOPSIGNAL", format!("STOPSIGNAL {sig}"));
    Ok(())
}

/// HEALTHCHECK NONE | [opts] CMD ...
pub fn healthcheck(cx: &StepCx<'_>, st: &mut StageState, h: &Healthcheck) -> Result<(), Error> {
    let nanos = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
    let hc = match h {
        Healthcheck::None => HealthConfig {
            test: vec!["NONE".to_string()],
            ..HealthConfig::default()
        },
        Healthcheck::Check {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => HealthConfig {
            test: match command {
                ShellOrExec::Exec(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                ShellOrExec::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
            },
            interval: nanos(interval),
            timeout: nanos(timeout),
            start_period: nanos(start_period),
            start_interval: nanos(start_interval),
            retries: *retries,
        },
    };
    let text = format!("HEALTHCHECK {}", json(&hc.test));
    st.config.config.healthcheck = Some(hc);
    done(cx, st, "HEALTHCHECK", text);
    Ok(())
}

/// SHELL ["/bin/bash", "-c"]
pub fn shell(cx: &StepCx<'_>, st: &mut StageState, s: &[String]) -> Result<(), Error> {
    st.config.config.shell = Some(s.to_vec());
    done(cx, st, "SHELL", format!("SHELL {}", json(s)));
    Ok(())
}

/// ARG: the frontend already resolved the values into each later step's args.
pub fn arg(cx: &StepCx<'_>, st: &mut StageState, decls: &[ArgDecl]) -> Result<(), Error> {
    let text: Vec<String> = decls
        .iter()
        .map(|d| match &d.default {
            Some(v) => format!("{}={v}", d.name),
            None => d.name.clone(),
        })
        .collect();
    done(cx, st, "ARG", format!("ARG {}", text.join(" ")));
    Ok(())
}

/// MAINTAINER
pub fn maintainer(cx: &StepCx<'_>, st: &mut StageState, m: &str) -> Result<(), Error> {
    st.config.author = Some(m.to_string());
    done(cx, st, "MAINTAINER", format!("MAINTAINER {m}"));
    Ok(())
}

/// ONBUILD: stored for the next build that uses this image as its base.
pub fn onbuild(cx: &StepCx<'_>, st: &mut StageState, trigger: &str) -> Result<(), Error> {
    st.config
        .config
        .on_build
        .get_or_insert_with(Vec::new)
        .push(trigger.to_string());
    done(cx, st, "ONBUILD", format!("ONBUILD {trigger}"));
    Ok(())
}

/// WORKDIR: resolved against the current one; the directory is created (owned by USER)
/// in a layer when the stage does not have it yet.
pub async fn workdir(cx: &StepCx<'_>, st: &mut StageState, w: &str) -> Result<Lookup, Error> {
    let dir = cx.expand(st, w)?;
    let current = st.config.config.working_dir.clone().unwrap_or_default();
    let joined = if dir.starts_with('/') {
        dir.clone()
    } else {
        format!("{}/{dir}", current.trim_end_matches('/'))
    };
    let path = match clean_in_root(&joined).as_str() {
        "." => "/".to_string(),
        rel => format!("/{rel}"),
    };
    st.config.config.working_dir = Some(path.clone());
    let created_by = format!("WORKDIR {path}");
    let mut k = KeyEncoder::new("WORKDIR", Some(&st.key));
    k.str("path", &path)
        .opt("user", st.config.config.user.as_deref());
    let key = k.finish();
    // A record means this step made the directory before: the lowers need not be looked at
    // (nor fetched, when they come from a remote cache).
    let recorded = st.cache == CacheUse::Lookup && cx.ctx.cache_find(&key).await?.is_some();
    if recorded {
        if let Lookup::Hit = lookup(cx, st, key, None).await? {
            return Ok(Lookup::Hit);
        }
    }
    let lowers = current_lowers(cx, st).await?;
    let rel = clean_in_root(&path);
    // Over an empty upper: the stage as it is before this step.
    let empty = cx
        .ctx
        .store
        .tmp_dir()
        .map_err(Error::store("create a scratch directory"))?;
    let exists = {
        let (rel, lowers) = (rel.clone(), lowers.clone());
        blocking(move || {
            let layers = Layers {
                upper: empty.path(),
                lowers: &lowers,
                deferred: None,
            };
            Ok(layers.is_dir(&rel)?)
        })
        .await?
    };
    if exists || rel == "." {
        st.key = key;
        push_history(cx, st, created_by, true);
        return Ok(Lookup::Miss);
    }
    if !recorded {
        if let Lookup::Hit = lookup(cx, st, key, None).await? {
            return Ok(Lookup::Hit);
        }
    }
    let owner = match st.config.config.user.as_deref() {
        Some(u) if !u.is_empty() => {
            let u = u.to_string();
            let l = lowers.clone();
            let user = blocking(move || {
                rbuild_runner::resolve_user(&l, &u)
                    .map_err(|source| Error::User { spec: u, source })
            })
            .await?;
            Some((user.uid, user.gid))
        }
        _ => None,
    };
    let layer = make_layer(cx, st, lowers.clone(), move |mounts| {
        let layers = Layers {
            upper: &mounts.upper,
            lowers: &lowers,
            deferred: None,
        };
        let resolved = layers.resolve(&rel, true)?;
        layers.ensure_dir(&resolved, owner.unwrap_or((0, 0)))?;
        Ok(ExternalFiles::new())
    })
    .await?;
    commit(cx, st, key, Some(layer), created_by, None).await?;
    Ok(Lookup::Miss)
}

/// The stage's lowers, computed once per layer stack.
pub async fn current_lowers(
    cx: &StepCx<'_>,
    st: &mut StageState,
) -> Result<Vec<std::path::PathBuf>, Error> {
    if let Some(l) = &st.lowers {
        return Ok(l.clone());
    }
    let l = cx.ctx.lowers(&st.layers).await?;
    st.lowers = Some(l.clone());
    Ok(l)
}

/// The one way a step makes a layer (COPY, ADD, WORKDIR, RUN): the snapshotter prepares a
/// writable snapshot over `lowers`, `fill` writes its upper dir (and names the files the
/// layer reads from elsewhere), and the snapshot is committed as a layer over the stage's
/// top layer, clamped to `SOURCE_DATE_EPOCH` when set. A failing `fill` removes the snapshot.
pub async fn make_layer(
    cx: &StepCx<'_>,
    st: &StageState,
    lowers: Vec<std::path::PathBuf>,
    fill: impl FnOnce(&Mounts) -> Result<ExternalFiles, Error> + Send + 'static,
) -> Result<LayerRef, Error> {
    let snapshotter = cx.ctx.snapshotter.clone();
    let parent = st.chain_id();
    let options = TarOptions {
        source_date_epoch: cx
            .ctx
            .options
            .source_date_epoch
            .and_then(|e| u64::try_from(e).ok()),
    };
    blocking(move || {
        let (active, mounts) = snapshotter
            .prepare(lowers)
            .map_err(Error::store("prepare a snapshot"))?;
        let external = match fill(&mounts) {
            Ok(external) => external,
            Err(e) => {
                let _ = snapshotter.remove(active);
                return Err(e);
            }
        };
        let layer = snapshotter
            .commit(active, parent.as_ref(), &options, &external)
            .map_err(Error::store("commit a layer"))?;
        Ok(LayerRef {
            descriptor: layer.descriptor,
            diff_id: layer.diff_id,
        })
    })
    .await
}
