//! Instruction flags (`--from=x`, `--link`, `--mount=...`): checked against what each
//! instruction accepts, with BuildKit's rules for booleans, repeats and missing values.

use std::collections::BTreeMap;

use super::error::ErrorKind;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--name=value`, once.
    Str,
    /// `--name` or `--name=true|false`, once.
    Bool,
    /// `--name=value`, any number of times.
    List,
}

/// The flags given to one instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<String, Vec<Option<String>>>,
}

impl Flags {
    /// Parses `given` (as written, `--name[=value]`) against `allowed`.
    pub(crate) fn parse(
        instruction: &str,
        given: &[String],
        allowed: &[(&str, FlagKind)],
    ) -> Result<Self, ErrorKind> {
        let mut flags = Flags::default();
        for word in given {
            let Some(body) = word.strip_prefix("--") else {
                return Err(ErrorKind::BadFlag {
                    flag: word.clone(),
                    problem: "flags must start with --".into(),
                });
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                return Err(ErrorKind::UnknownFlag {
                    instruction: instruction.to_string(),
                    flag: name.to_string(),
                });
            };
            let bad = |problem: &str| ErrorKind::BadFlag {
                flag: name.to_string(),
                problem: problem.to_string(),
            };
            let seen = flags.values.entry(name.to_string()).or_default();
            if *kind != FlagKind::List && !seen.is_empty() {
                return Err(bad("specified more than once"));
            }
            match (kind, &value) {
                (FlagKind::Str | FlagKind::List, None) => return Err(bad("missing a value")),
                (FlagKind::Bool, Some(v))
                    if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") =>
                {
                    return Err(bad("expects true or false"));
                }
                _ => {}
            }
            seen.push(value);
        }
        Ok(flags)
    }

    /// A string flag's value.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name)?.first()?.clone()
    }

    /// A boolean flag: false when absent, true when bare.
    pub(crate) fn boolean(&self, name: &str) -> bool {
        match self.values.get(name).and_then(|v| v.first()) {
            None => false,
            Some(None) => true,
            Some(Some(v)) => v.eq_ignore_ascii_case("true"),
        }
    }

    /// Every value of a repeatable flag.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.values
            .get(name)
            .map(|v| v.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }
}
