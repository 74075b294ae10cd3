//! The rules about single instructions: forms (JSON args, legacy `key value`), deprecated
//! or repeated instructions, WORKDIR, EXPOSE, COPY sources, comments.

use std::collections::BTreeMap;

use super::{from_parts, Found, Lint};
use crate::context::pathclean::clean_in_root;

/// NoEmptyContinuation: an empty line inside a `\` continuation.
pub(super) fn no_empty_continuation(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for line in &cx.doc.empty_continuations {
        out.push(Found {
            rule: "NoEmptyContinuation",
            line: *line,
            message: "Empty continuation line".to_string(),
        });
    }
}

/// JSONArgsRecommended: CMD or ENTRYPOINT in shell form.
pub(super) fn json_args_recommended(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for node in cx.stages.iter().flat_map(|s| &s.nodes) {
        let name = node.name();
        if (name == "CMD" || name == "ENTRYPOINT") && !node.json {
            out.push(Found {
                rule: "JSONArgsRecommended",
                line: node.start_line,
                message: format!(
                    "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
                ),
            });
        }
    }
}

/// MaintainerDeprecated: MAINTAINER instead of a label.
pub(super) fn maintainer_deprecated(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for node in cx.doc.children.iter().filter(|n| n.name() == "MAINTAINER") {
        out.push(Found {
            rule: "MaintainerDeprecated",
            line: node.start_line,
            message: "Maintainer instruction is deprecated in favor of using label".to_string(),
        });
    }
}

/// WorkdirRelativePath: a relative WORKDIR before any absolute one in the stage.
pub(super) fn workdir_relative_path(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        let mut absolute_seen = false;
        for node in s.nodes.iter().filter(|n| n.name() == "WORKDIR") {
            let dir = node.args.first().map(String::as_str).unwrap_or("");
            if dir.starts_with('/') || dir.starts_with('$') {
                absolute_seen = true;
            } else if !absolute_seen {
                out.push(Found {
                    rule: "WorkdirRelativePath",
                    line: node.start_line,
                    message: format!(
                        "Relative workdir {dir:?} can have unexpected results if the base image changes"
                    ),
                });
            }
        }
    }
}

/// MultipleInstructionsDisallowed: more than one CMD, ENTRYPOINT or HEALTHCHECK in a
/// stage (only the last counts); every earlier one is reported.
pub(super) fn multiple_instructions_disallowed(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        for node in &s.nodes {
            let name = node.name();
            if matches!(name.as_str(), "CMD" | "ENTRYPOINT" | "HEALTHCHECK") {
                if let Some(line) = last.insert(name.clone(), node.start_line) {
                    out.push(Found {
                        rule: "MultipleInstructionsDisallowed",
                        line,
                        message: format!(
                            "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
                        ),
                    });
                }
            }
        }
    }
}

/// LegacyKeyValueFormat: `ENV key value` / `LABEL key value`.
pub(super) fn legacy_key_value_format(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for node in &cx.doc.children {
        let name = node.name();
        let legacy = node.args.chunks(3).any(|t| t.len() == 3 && t[2].is_empty());
        if (name == "ENV" || name == "LABEL") && legacy {
            out.push(Found {
                rule: "LegacyKeyValueFormat",
                line: node.start_line,
                message: format!(
                    "\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"
                ),
            });
        }
    }
}

/// CopyIgnoredFile: a COPY/ADD source from the build context that `.dockerignore`
/// excludes (the copy would fail or copy less than it says).
pub(super) fn copy_ignored_file(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for node in cx.stages.iter().flat_map(|s| &s.nodes) {
        let name = node.name();
        if !(name == "COPY" || name == "ADD") || node.flags.iter().any(|f| f.starts_with("--from"))
        {
            continue;
        }
        let sources = node.args.len().saturating_sub(1);
        for src in &node.args[..sources] {
            let glob = src.contains(['*', '?', '[']);
            if glob || src.contains("://") || src.contains('$') || src.starts_with("<<") {
                continue;
            }
            let path = clean_in_root(src);
            if (cx.ignored)(&path) {
                out.push(Found {
                    rule: "CopyIgnoredFile",
                    line: node.start_line,
                    message: format!(
                        "Attempting to {name} file {src:?} that is excluded by .dockerignore"
                    ),
                });
            }
        }
    }
}

/// InvalidDefinitionDescription (experimental): a comment right above `ARG NAME` or
/// `FROM ... AS NAME` that does not start with the name.
pub(super) fn invalid_definition_description(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for node in &cx.doc.children {
        let name = node.name();
        let defined = match name.as_str() {
            "ARG" => node
                .args
                .first()
                .map(|a| a.split('=').next().unwrap_or("").to_string()),
            "FROM" => from_parts(node).2.map(str::to_string),
            _ => None,
        };
        let (Some(defined), Some(comment)) = (defined, node.comments.last()) else {
            continue;
        };
        let text = comment.trim_start_matches('#').trim_start();
        let first = text.split_whitespace().next().unwrap_or("");
        if first != defined {
            out.push(Found {
                rule: "InvalidDefinitionDescription",
                line: node.start_line,
                message: format!(
                    "Comment for {name} should follow the format: `# {defined} <description>`"
                ),
            });
        }
    }
}

/// The ports of an EXPOSE line, as written.
fn exposed<'n>(cx: &'n Lint<'_>) -> impl Iterator<Item = (usize, &'n str)> {
    cx.doc
        .children
        .iter()
        .filter(|n| n.name() == "EXPOSE")
        .flat_map(|n| n.args.iter().map(move |p| (n.start_line, p.as_str())))
}

/// ExposeProtoCasing: `EXPOSE 80/TCP`.
pub(super) fn expose_proto_casing(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for (line, port) in exposed(cx) {
        if let Some((_, proto)) = port.split_once('/') {
            if proto != proto.to_ascii_lowercase() {
                out.push(Found {
                    rule: "ExposeProtoCasing",
                    line,
                    message: format!(
                        "Defined protocol '{port}' in EXPOSE instruction should be lowercase"
                    ),
                });
            }
        }
    }
}

/// ExposeInvalidFormat: an IP address or a host-port mapping in EXPOSE.
pub(super) fn expose_invalid_format(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for (line, port) in exposed(cx) {
        if port.contains(':') {
            out.push(Found {
                rule: "ExposeInvalidFormat",
                line,
                message: format!(
                    "EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"
                ),
            });
        }
    }
}
