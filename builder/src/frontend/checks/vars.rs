//! The variable rules: undefined variables in what the frontend expands, and secrets
//! passed through ARG or ENV.

use std::collections::{BTreeMap, BTreeSet};

use super::{from_parts, Found, Lint, StageNodes};

// Build args every stage has without declaring them (BuildKit's proxy args).
use crate::frontend::stages::BUILTIN_ARGS as BUILTIN;

/// The instructions whose words the frontend expands (a RUN's are the shell's).
const EXPANDED: [&str; 10] = [
    "ENV",
    "ARG",
    "COPY",
    "ADD",
    "WORKDIR",
    "USER",
    "LABEL",
    "EXPOSE",
    "STOPSIGNAL",
    "VOLUME",
];

/// UndefinedVar: a variable no ARG or ENV of the stage defines. Stages whose environment
/// comes from an image are not checked: its ENV is not known without pulling it.
pub(super) fn undefined_var(cx: &Lint<'_>, out: &mut Vec<Found>) {
    // ENV names per stage name, for stages built on earlier stages.
    let mut stage_env: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for (i, s) in cx.stages.iter().enumerate() {
        let (image, _, name) = from_parts(s.from);
        let lower = image.to_ascii_lowercase();
        let inherited = if lower == "scratch" {
            Some(BTreeSet::new())
        } else {
            stage_env
                .get(&lower)
                .cloned()
                .or_else(|| {
                    lower
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| stage_env.get(&n.to_string()).cloned())
                })
                .flatten()
        };
        let env = inherited.map(|known| check_stage(cx, s, known, out));
        if let Some(n) = name {
            stage_env.insert(n.to_ascii_lowercase(), env.clone());
        }
        stage_env.insert(i.to_string(), env);
    }
}

/// Checks one stage's words against what is defined before each; returns its ENV names.
fn check_stage(
    cx: &Lint<'_>,
    s: &StageNodes<'_>,
    mut env: BTreeSet<String>,
    out: &mut Vec<Found>,
) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = env.clone();
    known.insert("PATH".into());
    known.extend(BUILTIN.iter().map(|b| b.to_string()));
    for node in &s.nodes {
        let name = node.name();
        if !EXPANDED.contains(&name.as_str()) {
            continue;
        }
        let scope: Vec<(String, String)> =
            known.iter().map(|k| (k.clone(), String::new())).collect();
        let mut missing = BTreeSet::new();
        for word in words(node, &name) {
            if let Ok(e) = cx.lexer.expand(word, &scope) {
                missing.extend(e.unmatched);
            }
        }
        for var in missing {
            out.push(Found {
                rule: "UndefinedVar",
                line: node.start_line,
                message: format!("Usage of undefined variable '${var}'"),
            });
        }
        match name.as_str() {
            "ARG" => known.extend(node.args.iter().map(|a| arg_name(a).to_string())),
            "ENV" => {
                for key in node.args.chunks(3).filter_map(|t| t.first()) {
                    known.insert(key.clone());
                    env.insert(key.clone());
                }
            }
            _ => {}
        }
    }
    env
}

/// The words of an instruction the frontend expands: ARG defaults, ENV/LABEL keys and
/// values, every argument of the others.
fn words<'n>(node: &'n crate::frontend::Node, name: &str) -> Vec<&'n str> {
    match name {
        "ARG" => node
            .args
            .iter()
            .filter_map(|a| a.split_once('=').map(|(_, v)| v))
            .collect(),
        "ENV" | "LABEL" => node
            .args
            .chunks(3)
            .flat_map(|t| t.iter().take(2))
            .map(String::as_str)
            .collect(),
        _ => node
            .args
            .iter()
            .map(String::as_str)
            .filter(|w| !w.starts_with("<<"))
            .collect(),
    }
}

fn arg_name(word: &str) -> &str {
    word.split('=').next().unwrap_or(word)
}

/// Words that make a variable name look like it holds a secret (`_`-separated, any case).
const SECRET_WORDS: [&str; 10] = [
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

/// Whether `name` looks like a secret's (`API_TOKEN`, `db_password`; not `PUBLIC_KEY`).
fn looks_secret(name: &str) -> bool {
    let parts: Vec<String> = name.split('_').map(str::to_ascii_lowercase).collect();
    parts.iter().any(|p| SECRET_WORDS.contains(&p.as_str())) && !parts.iter().any(|p| p == "public")
}

/// SecretsUsedInArgOrEnv: an ARG or ENV whose name looks like a secret's: its value ends
/// up in the image's config or history.
pub(super) fn secrets_used_in_arg_or_env(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for node in &cx.doc.children {
        let name = node.name();
        let keys: Vec<&str> = match name.as_str() {
            "ARG" => node.args.iter().map(|a| arg_name(a)).collect(),
            "ENV" => node
                .args
                .chunks(3)
                .filter_map(|t| t.first())
                .map(String::as_str)
                .collect(),
            _ => continue,
        };
        for key in keys.into_iter().filter(|k| looks_secret(k)) {
            out.push(Found {
                rule: "SecretsUsedInArgOrEnv",
                line: node.start_line,
                message: format!(
                    "Do not use ARG or ENV instructions for sensitive data ({name} {key:?})"
                ),
            });
        }
    }
}
