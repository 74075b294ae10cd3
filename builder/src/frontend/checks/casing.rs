//! The casing rules: stage names, `FROM ... AS`, instruction keywords, EXPOSE protocols.

use super::{from_parts, Found, Lint};

/// StageNameCasing: `AS Build` (stage names are matched in lower case).
pub(super) fn stage_name_casing(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        if let (_, _, Some(name)) = from_parts(s.from) {
            if name != name.to_ascii_lowercase() {
                out.push(Found {
                    rule: "StageNameCasing",
                    line: s.from.start_line,
                    message: format!("Stage name '{name}' should be lowercase"),
                });
            }
        }
    }
}

/// FromAsCasing: `FROM x as y` or `from x AS y`.
pub(super) fn from_as_casing(cx: &Lint<'_>, out: &mut Vec<Found>) {
    for s in &cx.stages {
        let (_, Some(as_word), _) = from_parts(s.from) else {
            continue;
        };
        let from = s.from.keyword.as_str();
        let upper = |w: &str| w == w.to_ascii_uppercase();
        let lower = |w: &str| w == w.to_ascii_lowercase();
        let consistent = (upper(from) && upper(as_word)) || (lower(from) && lower(as_word));
        if !consistent {
            out.push(Found {
                rule: "FromAsCasing",
                line: s.from.start_line,
                message: format!("'{as_word}' and '{from}' keywords' casing do not match"),
            });
        }
    }
}

/// ConsistentInstructionCasing: a keyword not in the case most keywords use.
pub(super) fn consistent_instruction_casing(cx: &Lint<'_>, out: &mut Vec<Found>) {
    let keywords = cx.doc.children.iter().map(|n| n.keyword.as_str());
    let lower = keywords
        .clone()
        .filter(|k| *k == k.to_ascii_lowercase())
        .count();
    let upper = keywords.filter(|k| *k == k.to_ascii_uppercase()).count();
    let majority_lower = lower > upper;
    for node in &cx.doc.children {
        let k = node.keyword.as_str();
        let correct = if majority_lower {
            k.to_ascii_lowercase()
        } else {
            k.to_ascii_uppercase()
        };
        if k != correct {
            out.push(Found {
                rule: "ConsistentInstructionCasing",
                line: node.start_line,
                message: format!(
                    "Command '{k}' should match the case of the command majority ({})",
                    if majority_lower {
                        "lowercase"
                    } else {
                        "uppercase"
                    }
                ),
            });
        }
    }
}
