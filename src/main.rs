//! The `rbuild` binary: parses the command line, runs one command, prints errors in one place.

mod cli;
mod commands;
mod exit;
mod progress;
mod template;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::exit_code;

fn main() -> ExitCode {
    // The sandbox child is re-executed from this binary. It must stay single-threaded,
    // so it is dispatched before clap or tokio get a chance to start anything.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(rbuild_runner::INIT_ARG))
    {
        return ExitCode::from(rbuild_runner::sandbox_init_main());
    }

    let args = cli::insert_default_command(std::env::args().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = err.print();
            return ExitCode::from(err.exit_code() as u8);
        }
    };

    if let Some(code) = rootless_reexec(&cli) {
        return ExitCode::from(code);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if exit::is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Runs the whole command again in a user namespace where it is root (rootless: a
/// non-root user's /etc/subuid ranges through newuidmap; root without CAP_SYS_ADMIN, as in
/// a container: every id onto itself), so that layers keep their owners and the store
/// stays removable by the user; `None` when this process goes on itself.
fn rootless_reexec(cli: &Cli) -> Option<u8> {
    if rbuild_runner::in_rootless_namespace() {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match &cli.command {
        Command::Login(_)
        | Command::Logout(_)
        | Command::Completion(_)
        | Command::Man(_)
        | Command::Debug(_) => return None,
        // A mode named by the user other than rootless gets its own error or runs as is.
        Command::Build(args) => {
            let mode = args.isolation.as_deref().map(str::trim);
            if !matches!(mode, None | Some("" | "auto" | "rootless")) {
                return None;
            }
        }
        // Root owns every file of its store: only its builds need the namespace.
        _ if root => return None,
        _ => {}
    }
    let code = rbuild_runner::rootless_mapping().and_then(|mapping| match mapping {
        Some(m) => rbuild_runner::reexec_in_user_namespace(&m).map(Some),
        None => Ok(None),
    });
    match code {
        Ok(code) => code.map(|c| u8::try_from(c).unwrap_or(1)),
        Err(err) => {
            eprintln!("error: {:#}", anyhow::Error::from(err));
            Some(1)
        }
    }
}
