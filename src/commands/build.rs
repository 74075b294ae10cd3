//! `rbuild build`: turns flags into build options and renders the build's progress.

use super::{not_implemented, Globals};
use crate::cli::BuildArgs;

/// Runs a build.
pub async fn build(_g: &Globals, _args: BuildArgs) -> anyhow::Result<()> {
    Err(not_implemented("build"))
}
