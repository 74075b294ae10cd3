//! `RUN --mount=type=ssh[,id=,target=,required=,mode=,uid=,gid=]`: what enters the key (the
//! id, target, owner and mode; never a socket path or a key), and, when the step runs, the
//! forwarding socket bound at the target, with `SSH_AUTH_SOCK` pointing at the first one.

use std::path::PathBuf;

use rbuild_runner::ExtraMount;

use super::StepCx;
use crate::frontend::{Mount, MountKind};
use crate::solver::ssh::{SshError, SshForward};
use crate::Error;

/// One `type=ssh` mount of a RUN, as written.
pub(super) struct SshMount {
    id: String,
    target: String,
    uid: u32,
    gid: u32,
    mode: u32,
    /// A `--ssh` gives this id (otherwise the mount is skipped: `required=false`).
    provided: bool,
}

/// The forwarding sockets of a running step, their mounts, and its `SSH_AUTH_SOCK`.
pub(super) struct SshStep {
    pub mounts: Vec<ExtraMount>,
    pub auth_sock: Option<String>,
    _forwards: Vec<SshForward>,
    _scratch: Option<rbuild_store::TmpDir>,
}

fn number(m: &Mount, name: &str, radix: u32, default: u32) -> Result<u32, Error> {
    match m.options.iter().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => u32::from_str_radix(v, radix).map_err(|_| Error::InvalidFlag {
            flag: "--mount",
            value: format!("type=ssh,{name}={v}"),
            reason: "want a number (mode in octal)",
        }),
    }
}

/// The `type=ssh` mounts of `mounts`, checked: a `required` id no `--ssh` gives is an error.
pub(super) fn ssh_mounts(cx: &StepCx<'_>, mounts: &[Mount]) -> Result<Vec<SshMount>, Error> {
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| m.kind == MountKind::Ssh) {
        let id = m
            .options
            .iter()
            .find(|(k, _)| k == "id")
            .map_or_else(|| "default".to_string(), |(_, v)| v.clone());
        let required = m
            .options
            .iter()
            .any(|(k, v)| k == "required" && v != "false");
        let provided = cx.ctx.ssh.has(&id);
        if required && !provided {
            return Err(SshError::Missing { id }.into());
        }
        out.push(SshMount {
            target: m
                .target
                .clone()
                .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{}", out.len())),
            uid: number(m, "uid", 10, 0)?,
            gid: number(m, "gid", 10, 0)?,
            mode: number(m, "mode", 8, 0o600)? & 0o7777,
            id,
            provided,
        });
    }
    Ok(out)
}

/// The key entries of the ssh mounts: which agent id, where, owned and moded how.
pub(super) fn ssh_keys(mounts: &[SshMount]) -> Vec<String> {
    mounts
        .iter()
        .map(|s| format!("ssh:{}:{}:{}:{}:{:o}", s.id, s.target, s.uid, s.gid, s.mode))
        .collect()
}

/// Starts the forwarding sockets of the provided mounts (and the agents of key files).
pub(super) fn start_ssh(cx: &StepCx<'_>, mounts: &[SshMount]) -> Result<SshStep, Error> {
    let mut step = SshStep {
        mounts: Vec::new(),
        auth_sock: None,
        _forwards: Vec::new(),
        _scratch: None,
    };
    let provided: Vec<&SshMount> = mounts.iter().filter(|s| s.provided).collect();
    if provided.is_empty() {
        return Ok(step);
    }
    let store = &cx.ctx.store;
    let scratch = store
        .tmp_dir()
        .map_err(Error::store("create a directory for ssh sockets"))?;
    for (n, s) in provided.into_iter().enumerate() {
        let Some(agent) = cx.ctx.ssh.socket(&s.id, store)? else {
            continue;
        };
        let path: PathBuf = scratch.path().join(format!("ssh-{n}.sock"));
        let forward = SshForward::start(agent, path, s.uid, s.gid, s.mode)?;
        step.mounts.push(ExtraMount::Bind {
            source: forward.path().to_path_buf(),
            target: s.target.clone(),
            readonly: false,
        });
        step.auth_sock.get_or_insert_with(|| s.target.clone());
        step._forwards.push(forward);
    }
    step._scratch = Some(scratch);
    Ok(step)
}
