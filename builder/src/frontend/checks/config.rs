//! The `# check=skip=A,B;error=true;experimental=C` directive (or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg): which checks run and whether they fail a build.

use std::collections::BTreeSet;

/// A `# check=` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid check directive {value:?}: {reason}")]
pub struct CheckConfigError {
    /// The value as written.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// Which checks run, and whether a warning fails the build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `error=true`: a build with warnings fails.
    pub error: bool,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
}

impl CheckConfig {
    /// Parses the directive's value (`skip=...;error=...;experimental=...`).
    pub fn parse(value: &str) -> Result<CheckConfig, CheckConfigError> {
        let bad = |reason: String| CheckConfigError {
            value: value.to_string(),
            reason,
        };
        let mut config = CheckConfig::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, v)) = part.split_once('=') else {
                return Err(bad(format!("{part:?} is not key=value")));
            };
            let names = || -> BTreeSet<String> {
                v.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect()
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" if v.trim() == "all" => config.skip_all = true,
                "skip" => config.skip = names(),
                "experimental" if v.trim() == "all" => config.experimental_all = true,
                "experimental" => config.experimental = names(),
                "error" => {
                    config.error = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(bad(format!("error={other}: want true or false"))),
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown key {other:?} (want skip, error or experimental)"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// Whether the rule `name` runs.
    pub fn enabled(&self, name: &str, experimental: bool) -> bool {
        if self.skip_all || self.skip.contains(name) {
            return false;
        }
        !experimental || self.experimental_all || self.experimental.contains(name)
    }
}
