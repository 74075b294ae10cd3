//! The FROM rules: stage names, build args in the base name, `--platform`.

use std::collections::BTreeSet;

use super::{flag_value, from_parts, Found, Lint};

/// Names BuildKit reserves: a stage may not be called so.
const RESERVED: [&str; 2] = ["scratch", "context"];

/// The platform args every FROM may use without declaring them.
const PLATFORM_ARGS: [&str; 8] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// DuplicateStageName: two stages of one name (names compare in lower case).
pub(super) fn duplicate_stage_name(cx: &Lint<'_>, out: &mut Vec<Found>) {
    let mut seen = BTreeSet::new();
    for s in &cx.stages {
        if let (_, _, Some(name)) = from_parts(s.from) {
            if !seen.insert(name.to_ascii_lowercase()) {
                out.push(Found {
                    rule: "DuplicateStageName",
                    line: s.from.start_line,
                    message: format!("Duplicate stage name {name:?}, stage names should be unique"),
                });
            }
        }
    }
}

/// ReservedStageName: `AS scratch`, `AS context`.
pub(super) fn reserved_stage_name(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        if let (_, _, Some(name)) = from_parts(s.from) {
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) {
                out.push(Found {
                    rule: "ReservedStageName",
                    line: s.from.start_line,
                    message: format!(
                        "Stage name should not use the same name as reserved stage {lower:?}"
                    ),
                });
            }
        }
    }
}

/// The global ARGs: name and default (as written), in order.
fn global_args(cx: &Lint<'_>) -> Vec<(String, Option<String>)> {
    let mut args = Vec::new();
    for node in cx.global.iter().filter(|n| n.name() == "ARG") {
        for word in &node.args {
            match word.split_once('=') {
                Some((k, v)) => args.push((k.to_string(), Some(v.to_string()))),
                None => args.push((word.clone(), None)),
            }
        }
    }
    args
}

/// The variables a FROM line's image and `--platform` use that are not declared.
fn undeclared_in_from(cx: &Lint<'_>, words: &[&str]) -> BTreeSet<String> {
    let declared: Vec<(String, String)> = global_args(cx)
        .into_iter()
        .map(|(k, _)| (k, String::new()))
        .chain(PLATFORM_ARGS.iter().map(|a| (a.to_string(), String::new())))
        .collect();
    let mut missing = BTreeSet::new();
    for word in words {
        if let Ok(e) = cx.lexer.expand(word, &declared) {
            missing.extend(e.unmatched);
        }
    }
    missing
}

/// UndefinedArgInFrom: `FROM $X` with no global `ARG X`.
pub(super) fn undefined_arg_in_from(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        let (image, _, _) = from_parts(s.from);
        let mut words = vec![image];
        words.extend(flag_value(s.from, "platform"));
        for name in undeclared_in_from(cx, &words) {
            out.push(Found {
                rule: "UndefinedArgInFrom",
                line: s.from.start_line,
                message: format!("FROM argument '{name}' is not declared"),
            });
        }
    }
}

/// InvalidDefaultArgInFrom: the global ARG defaults (no `--build-arg`) make the base name
/// empty or not a valid reference.
pub(super) fn invalid_default_arg_in_from(cx: &Lint<'_>, out: &mut Vec<Found>) {
    let defaults: Vec<(String, String)> = global_args(cx)
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let stage_names: BTreeSet<String> = cx
        .stages
        .iter()
        .filter_map(|s| from_parts(s.from).2.map(str::to_ascii_lowercase))
        .collect();
    for s in &cx.stages {
        let (image, _, _) = from_parts(s.from);
        if !image.contains('$') {
            continue;
        }
        let Ok(e) = cx.lexer.expand(image, &defaults) else {
            continue;
        };
        let lower = e.result.to_ascii_lowercase();
        let valid = !e.result.is_empty()
            && (lower == "scratch"
                || stage_names.contains(&lower)
                || rbuild_store::Reference::parse(&e.result).is_ok());
        if !valid {
            out.push(Found {
                rule: "InvalidDefaultArgInFrom",
                line: s.from.start_line,
                message: format!(
                    "Default value for ARG {image} results in empty or invalid base image name"
                ),
            });
        }
    }
}

/// RedundantTargetPlatform: `FROM --platform=$TARGETPLATFORM`, the default anyway.
pub(super) fn redundant_target_platform(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        let Some(p) = flag_value(s.from, "platform") else {
            continue;
        };
        let scope: Vec<(String, String)> = Vec::new();
        let only_target = cx
            .lexer
            .expand(p, &scope)
            .map(|e| {
                e.result.is_empty()
                    && e.unmatched.len() == 1
                    && e.unmatched.contains("TARGETPLATFORM")
            })
            .unwrap_or(false);
        if only_target {
            out.push(Found {
                rule: "RedundantTargetPlatform",
                line: s.from.start_line,
                message: format!(
                    "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
                ),
            });
        }
    }
}

/// FromPlatformFlagConstDisallowed: `FROM --platform=linux/amd64`, unless the stage's name
/// says which platform it is for (`AS build-amd64`).
pub(super) fn from_platform_flag_const_disallowed(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        let Some(p) = flag_value(s.from, "platform") else {
            continue;
        };
        if p.contains('$') {
            continue;
        }
        let name = from_parts(s.from).2.unwrap_or("").to_ascii_lowercase();
        let named_for_it = p
            .split('/')
            .skip(1)
            .any(|part| !part.is_empty() && name.contains(&part.to_ascii_lowercase()));
        if !named_for_it {
            out.push(Found {
                rule: "FromPlatformFlagConstDisallowed",
                line: s.from.start_line,
                message: format!("FROM --platform flag should not use constant value {p:?}"),
            });
        }
    }
}
