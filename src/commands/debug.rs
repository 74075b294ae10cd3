//! `rbuild debug`: developer views of rbuild's internals.

use rbuild_builder::frontend::{dump, read_dockerfile, StepGraph};

use crate::cli::DebugCommand;

/// Runs a debug subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Parse { file } => {
            let doc = read_dockerfile(&file)?;
            // Type-check every instruction and stage reference too, so that errors such as
            // an unknown instruction are reported here as a build would report them.
            StepGraph::new(&doc, &[], None)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), dump(&doc).as_bytes())?;
            Ok(())
        }
    }
}
