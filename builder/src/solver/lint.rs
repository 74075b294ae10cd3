//! Build checks in a build: the check config (`# check=` or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg) and the lint over the Dockerfile with the
//! context's `.dockerignore`.

use super::context_dir::ContextDir;
use crate::frontend::checks::{lint, CheckConfig, CheckWarning};
use crate::frontend::{find_directive, Document};
use crate::Error;

/// The build arg that overrides the `# check=` directive, as in BuildKit.
const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What the checks found, and the config they ran with.
pub struct CheckOutcome {
    /// The warnings, in line order.
    pub warnings: Vec<CheckWarning>,
    /// `# check=` as parsed.
    pub config: CheckConfig,
}

/// The check config of `text` (the Dockerfile), `--build-arg BUILDKIT_DOCKERFILE_CHECK`
/// winning over its `# check=` directive.
pub fn check_config(
    file: &str,
    text: &[u8],
    build_args: &[(String, String)],
) -> Result<CheckConfig, Error> {
    let text = String::from_utf8_lossy(text);
    let (value, line) = match build_args.iter().rev().find(|(k, _)| k == CHECK_BUILD_ARG) {
        Some((_, v)) => (v.clone(), 0),
        None => match find_directive("check", &text, false) {
            Some(d) => (d.cmdline, d.line),
            None => return Ok(CheckConfig::default()),
        },
    };
    CheckConfig::parse(&value).map_err(|source| Error::CheckDirective {
        file: file.to_string(),
        line,
        source,
    })
}

/// Runs the checks over `doc`.
pub fn run_checks(
    context: &ContextDir,
    doc: &Document,
    text: &[u8],
    build_args: &[(String, String)],
) -> Result<CheckOutcome, Error> {
    let config = check_config(&doc.file, text, build_args)?;
    let ignored = |path: &str| context.is_ignored(path);
    let warnings = lint(doc, &config, &ignored);
    Ok(CheckOutcome { warnings, config })
}
