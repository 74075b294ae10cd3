//! Rendering of long-running work (builds, transfers) as bars, plain lines or nothing.

pub mod build;
pub mod transfer;

use std::io::IsTerminal;

use crate::cli::ProgressMode;

/// The concrete way to render, once `auto` has been decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// indicatif bars on a terminal.
    Tty,
    /// One line per event, as `docker build --progress=plain` prints.
    Plain,
    /// Nothing.
    Quiet,
}

impl Style {
    /// Decides the style: `auto` means bars when stderr is a terminal and CI is not set.
    pub fn pick(mode: ProgressMode, quiet: bool) -> Style {
        if quiet {
            return Style::Quiet;
        }
        match mode {
            ProgressMode::Tty => Style::Tty,
            ProgressMode::Plain => Style::Plain,
            ProgressMode::Quiet => Style::Quiet,
            ProgressMode::Auto => {
                let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
                if std::io::stderr().is_terminal() && !ci {
                    Style::Tty
                } else {
                    Style::Plain
                }
            }
        }
    }
}
