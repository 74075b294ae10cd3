//! One module per command group; `run` dispatches a parsed command line to it.

mod build;
mod debug;
mod docs;
mod output;
mod registry;
mod resources;
mod store;

use std::path::PathBuf;

use crate::cli::{Cli, Command};

/// What every command needs from the global flags.
pub struct Globals {
    /// The store root.
    #[allow(dead_code)] // read by the store-backed commands as they land
    pub root: PathBuf,
}

impl Globals {
    fn from_cli(root: Option<PathBuf>) -> Self {
        Self {
            root: root.unwrap_or_else(default_root),
        }
    }
}

/// The store root when neither `--root` nor `RBUILD_ROOT` is given.
fn default_root() -> PathBuf {
    // Root inside a rootless user's namespace is still that user: their store.
    if !rbuild_runner::acts_for_non_root() {
        return PathBuf::from("/var/lib/rbuild");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("rbuild");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/rbuild")
}

/// Writes one line to stdout. A closed pipe comes back as an error (never a panic, as
/// `println!` would), which `main` treats as success.
pub fn print_line(text: impl std::fmt::Display) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}")
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = Globals::from_cli(cli.root);
    match cli.command {
        Command::Build(args) => build::build(&g, args).await,
        Command::Push(args) => registry::push(&g, args).await,
        Command::Pull(args) => registry::pull(&g, args).await,
        Command::Login(args) => registry::login(&g, args).await,
        Command::Logout(args) => registry::logout(&g, args).await,
        Command::Images(args) => store::images(&g, args),
        Command::Inspect(args) => store::inspect(&g, args),
        Command::History(args) => store::history(&g, args),
        Command::Tag(args) => store::tag(&g, args),
        Command::Rmi(args) => store::rmi(&g, args),
        Command::Prune(args) => store::prune(&g, args),
        Command::Fsck(args) => store::fsck(&g, args),
        Command::Du(args) => store::du(&g, args),
        Command::Save(args) => store::save(&g, args).await,
        Command::Load(args) => store::load(&g, args),
        Command::Unshare(args) => unshare(args),
        Command::Completion(args) => docs::completion(args),
        Command::Man(args) => docs::man(args),
        Command::Debug(cmd) => debug::run(cmd),
    }
}

/// `rbuild unshare CMD...`: runs the command (main has already re-executed rbuild in the
/// user namespace for a non-root user) and exits with its status.
fn unshare(args: crate::cli::UnshareArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let (program, rest) = args
        .command
        .split_first()
        .context("rbuild unshare: no command")?;
    let status = std::process::Command::new(program)
        .args(rest)
        .status()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    if status.success() {
        return Ok(());
    }
    std::process::exit(status.code().unwrap_or(1));
}
