//! The Dockerfile frontend: text to AST (with spans) to typed stages and the step graph.
//!
//! Pipeline: [`parse`] (bytes to a [`Document`] of [`Node`]s, BuildKit-exact, see
//! [`dump()`]) then [`StepGraph::new`] (every node typed as an [`Instruction`], stages
//! resolved, build args scoped, `--target` pruned). Errors are [`ParseError`]s naming file,
//! line and column and showing the line.
//!
//! # Who expands which words
//!
//! Words are kept as written in [`Instruction`]; the build engine expands them at dispatch
//! time with [`StepGraph::lexer`] and a [`Scope`] (the stage's ENV so far, image config
//! included, over [`Step::args`]), as BuildKit does:
//!
//! | instruction | expanded words |
//! |---|---|
//! | `FROM` | image and `--platform`, here, with the global args only ([`Stage::base`], [`Stage::platform`]) |
//! | `ARG` | each default value (here, without image ENV: [`Step::args`] holds the results) |
//! | `ENV`, `LABEL` | each key and each value |
//! | `ADD`, `COPY` | each source path and the destination, `--chown`, `--chmod`, `--checksum`; `--from` here ([`Step::copy_from`]); a heredoc's content when [`InlineFile::expand`], with a lexer in `skip_process_quotes` mode |
//! | `RUN` | the value of each `--mount` option (`from=` is resolved here: [`Step::mount_from`]); never the command |
//! | `EXPOSE`, `VOLUME` | each word |
//! | `USER`, `WORKDIR`, `STOPSIGNAL` | the value |
//! | `CMD`, `ENTRYPOINT`, `RUN` command, `SHELL`, `HEALTHCHECK`, `ONBUILD`, `MAINTAINER` | nothing |

pub mod checks;
pub(crate) mod directives;
pub(crate) mod dump;
mod error;
mod flags;
pub(crate) mod heredoc;
pub(crate) mod instructions;
pub(crate) mod json;
pub(crate) mod parser;
pub(crate) mod shell;
pub(crate) mod stages;
#[cfg(test)]
mod tests;

pub use directives::{detect_syntax, find_directive, Directive, DirectiveParser, FoundDirective};
pub use dump::{dump, dump_node, quote};
pub use error::{ErrorKind, ParseError};
pub use heredoc::{chomp_heredoc, heredocs_from_line, parse_heredoc, Heredoc};
pub use instructions::{
    parse_duration, parse_instruction, parse_mount, suggest, Add, ArgDecl, Copy, Healthcheck,
    InlineFile, Instruction, KeyValue, Mount, MountKind, Network, Run, ShellOrExec, Source,
    INSTRUCTIONS,
};
pub use json::{parse_json_array, parse_words, JsonArray};
pub use parser::{parse, Document, Node};
pub use shell::{Env, ExpandError, Expansion, Lexer};
pub use stages::{expand_env_pairs, platform_args, Base, Location, Scope, Stage, Step, StepGraph};

/// Reads and parses the Dockerfile at `path`; errors name the path as given.
pub fn read_dockerfile(path: &std::path::Path) -> Result<Document, crate::Error> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| crate::Error::ReadDockerfile {
        path: name.clone(),
        source,
    })?;
    Ok(parse(&name, &bytes)?)
}
