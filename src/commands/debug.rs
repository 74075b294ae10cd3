//! `rbuild debug`: developer views of rbuild's internals.

use anyhow::Context;
use rbuild_builder::frontend::{dump::dump, parse, StepGraph};

use crate::cli::DebugCommand;

/// Runs a debug subcommand.
pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Parse { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let doc = parse(&file.display().to_string(), &bytes)?;
            // Type-check every instruction and stage reference too, so that errors such as
            // an unknown instruction are reported here as a build would report them.
            StepGraph::new(&doc, &[], None)?;
            print!("{}", dump(&doc));
            for warning in &doc.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
    }
}
