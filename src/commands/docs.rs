//! `rbuild completion` and `rbuild man`: shell completions and man pages generated from the
//! one clap definition of the command line.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs, ManArgs};

/// `rbuild completion SHELL`: the script on stdout.
pub fn completion(args: CompletionArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rbuild", &mut out);
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}

/// `rbuild man`: rbuild(1) on stdout, or with `--dir` one page per visible command.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let cmd = Cli::command();
    let Some(dir) = args.dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        std::io::stdout().lock().write_all(&out)?;
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("rbuild".to_owned(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("rbuild-{}", sub.get_name());
        let bin = format!("rbuild {}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name).bin_name(bin)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.to_uppercase())
            .source(format!("rbuild {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
