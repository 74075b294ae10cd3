//! Build checks: BuildKit's Dockerfile lint rules, run over the parsed document, giving
//! warnings with the rule's name and line; `# check=` decides which run and whether any
//! fails the build.

mod casing;
mod config;
mod instructions;
mod stages;
#[cfg(test)]
mod tests;
mod vars;

use std::fmt;

pub use config::{CheckConfig, CheckConfigError};

use super::parser::{Document, Node};
use super::shell::Lexer;

/// One check's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckWarning {
    /// The rule (`FromAsCasing`...), as BuildKit names it.
    pub rule: &'static str,
    /// The Dockerfile's name.
    pub file: String,
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CheckWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.rule, self.message
        )
    }
}

/// A rule: its name, whether it is experimental (off unless `experimental=` names it), and
/// the function that runs it.
struct Rule {
    name: &'static str,
    experimental: bool,
    run: fn(&Lint<'_>, &mut Vec<Found>),
}

/// A finding before the file name is attached.
struct Found {
    rule: &'static str,
    line: usize,
    message: String,
}

/// Every rule, in BuildKit's order. `InvalidBaseImagePlatform` needs the pulled image and
/// runs in the build (FROM), not here.
const RULES: &[Rule] = &[
    rule("StageNameCasing", casing::stage_name_casing),
    rule("FromAsCasing", casing::from_as_casing),
    rule("NoEmptyContinuation", instructions::no_empty_continuation),
    rule(
        "ConsistentInstructionCasing",
        casing::consistent_instruction_casing,
    ),
    rule("DuplicateStageName", stages::duplicate_stage_name),
    rule("ReservedStageName", stages::reserved_stage_name),
    rule("JSONArgsRecommended", instructions::json_args_recommended),
    rule("MaintainerDeprecated", instructions::maintainer_deprecated),
    rule("UndefinedArgInFrom", stages::undefined_arg_in_from),
    rule("WorkdirRelativePath", instructions::workdir_relative_path),
    rule("UndefinedVar", vars::undefined_var),
    rule(
        "MultipleInstructionsDisallowed",
        instructions::multiple_instructions_disallowed,
    ),
    rule(
        "LegacyKeyValueFormat",
        instructions::legacy_key_value_format,
    ),
    rule("RedundantTargetPlatform", stages::redundant_target_platform),
    rule("SecretsUsedInArgOrEnv", vars::secrets_used_in_arg_or_env),
    rule(
        "InvalidDefaultArgInFrom",
        stages::invalid_default_arg_in_from,
    ),
    rule(
        "FromPlatformFlagConstDisallowed",
        stages::from_platform_flag_const_disallowed,
    ),
    rule("CopyIgnoredFile", instructions::copy_ignored_file),
    Rule {
        name: "InvalidDefinitionDescription",
        experimental: true,
        run: instructions::invalid_definition_description,
    },
    rule("ExposeProtoCasing", instructions::expose_proto_casing),
    rule("ExposeInvalidFormat", instructions::expose_invalid_format),
];

const fn rule(name: &'static str, run: fn(&Lint<'_>, &mut Vec<Found>)) -> Rule {
    Rule {
        name,
        experimental: false,
        run,
    }
}

/// The name of the check that runs in FROM once the base image is known.
pub const INVALID_BASE_IMAGE_PLATFORM: &str = "InvalidBaseImagePlatform";

/// Every rule name rbuild knows (for `skip=` and `experimental=`).
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    RULES
        .iter()
        .map(|r| r.name)
        .chain([INVALID_BASE_IMAGE_PLATFORM])
}

/// One stage of the document: its FROM line and the instructions after it.
struct StageNodes<'d> {
    from: &'d Node,
    nodes: Vec<&'d Node>,
}

/// What the rules read.
struct Lint<'d> {
    doc: &'d Document,
    lexer: Lexer,
    /// Instructions before the first FROM.
    global: Vec<&'d Node>,
    stages: Vec<StageNodes<'d>>,
    /// Whether a build-context path is excluded by `.dockerignore`.
    ignored: &'d dyn Fn(&str) -> bool,
}

/// Runs the checks `config` enables over `doc`; `ignored` says whether a context path is
/// excluded by `.dockerignore` (for CopyIgnoredFile). Findings are in line order.
pub fn lint(
    doc: &Document,
    config: &CheckConfig,
    ignored: &dyn Fn(&str) -> bool,
) -> Vec<CheckWarning> {
    let mut global = Vec::new();
    let mut stages: Vec<StageNodes<'_>> = Vec::new();
    for node in &doc.children {
        if node.name() == "FROM" {
            stages.push(StageNodes {
                from: node,
                nodes: Vec::new(),
            });
        } else if let Some(s) = stages.last_mut() {
            s.nodes.push(node);
        } else {
            global.push(node);
        }
    }
    let cx = Lint {
        doc,
        lexer: Lexer::new(doc.escape),
        global,
        stages,
        ignored,
    };
    let mut found = Vec::new();
    for r in RULES
        .iter()
        .filter(|r| config.enabled(r.name, r.experimental))
    {
        (r.run)(&cx, &mut found);
    }
    found.sort_by_key(|f| f.line);
    found
        .into_iter()
        .map(|f| CheckWarning {
            rule: f.rule,
            file: doc.file.clone(),
            line: f.line,
            message: f.message,
        })
        .collect()
}

/// A FROM line's parts as written: image, `AS` keyword and stage name.
fn from_parts(node: &Node) -> (&str, Option<&str>, Option<&str>) {
    let image = node.args.first().map(String::as_str).unwrap_or("");
    match node.args.as_slice() {
        [_, as_word, name, ..] => (image, Some(as_word.as_str()), Some(name.as_str())),
        _ => (image, None, None),
    }
}

/// The value of flag `--name=` as written.
fn flag_value<'n>(node: &'n Node, name: &str) -> Option<&'n str> {
    node.flags
        .iter()
        .find_map(|f| f.strip_prefix("--")?.strip_prefix(name)?.strip_prefix('='))
}
