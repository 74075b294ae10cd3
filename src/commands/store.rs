//! `rbuild images|inspect|tag|rmi|prune|fsck|save`: the commands that read and tidy the store.

use super::{not_implemented, Globals};
use crate::cli::{FsckArgs, ImagesArgs, InspectArgs, PruneArgs, RmiArgs, SaveArgs, TagArgs};

/// `rbuild images`.
pub fn images(_g: &Globals, _args: ImagesArgs) -> anyhow::Result<()> {
    Err(not_implemented("images"))
}

/// `rbuild inspect`.
pub fn inspect(_g: &Globals, _args: InspectArgs) -> anyhow::Result<()> {
    Err(not_implemented("inspect"))
}

/// `rbuild tag`.
pub fn tag(_g: &Globals, _args: TagArgs) -> anyhow::Result<()> {
    Err(not_implemented("tag"))
}

/// `rbuild rmi`.
pub fn rmi(_g: &Globals, _args: RmiArgs) -> anyhow::Result<()> {
    Err(not_implemented("rmi"))
}

/// `rbuild prune`.
pub fn prune(_g: &Globals, _args: PruneArgs) -> anyhow::Result<()> {
    Err(not_implemented("prune"))
}

/// `rbuild fsck`.
pub fn fsck(_g: &Globals, _args: FsckArgs) -> anyhow::Result<()> {
    Err(not_implemented("fsck"))
}

/// `rbuild save`.
pub fn save(_g: &Globals, _args: SaveArgs) -> anyhow::Result<()> {
    Err(not_implemented("save"))
}
