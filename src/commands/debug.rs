//! `rbuild debug`: developer views of rbuild's internals.

use super::not_implemented;
use crate::cli::DebugCommand;

/// Runs a debug subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Parse { .. } => Err(not_implemented("debug parse")),
    }
}
