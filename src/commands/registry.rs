//! `rbuild push|pull|login|logout`: the commands that talk to registries.

use super::{not_implemented, Globals};
use crate::cli::{LoginArgs, LogoutArgs, PullArgs, PushArgs};

/// `rbuild push`.
pub async fn push(_g: &Globals, _args: PushArgs) -> anyhow::Result<()> {
    Err(not_implemented("push"))
}

/// `rbuild pull`.
pub async fn pull(_g: &Globals, _args: PullArgs) -> anyhow::Result<()> {
    Err(not_implemented("pull"))
}

/// `rbuild login`.
pub async fn login(_g: &Globals, _args: LoginArgs) -> anyhow::Result<()> {
    Err(not_implemented("login"))
}

/// `rbuild logout`.
pub async fn logout(_g: &Globals, _args: LogoutArgs) -> anyhow::Result<()> {
    Err(not_implemented("logout"))
}
