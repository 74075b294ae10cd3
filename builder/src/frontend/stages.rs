//! Stages and the step graph: build args and their scopes, platform args, stage references
//! (`FROM <stage>`, `COPY --from`, `RUN --mount=from=`), and `--target` pruning.

use std::collections::BTreeSet;

use rbuild_store::Platform;

use super::error::{ErrorKind, ParseError};
use super::instructions::{parse_instruction, Instruction, KeyValue};
use super::parser::{Document, Node};
use super::shell::{Env, ExpandError, Lexer};

/// The automatic platform args (`TARGETPLATFORM`... `BUILDVARIANT`), for building on and
/// for `target` on `build`.
pub fn platform_args(build: &Platform, target: &Platform) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((format!("{prefix}VARIANT"), p.variant_str().to_owned()));
    }
    out
}

/// Build args every builder accepts without an `ARG` line; never reported as unused.
pub(crate) const BUILTIN_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a stage starts from, or what `COPY --from` / `RUN --mount=from=` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference, build args expanded.
    Image(String),
    /// An earlier stage, by its index in the Dockerfile.
    Stage(usize),
    /// A `--build-context` of this name (as given): it wins over a stage or an image
    /// the word would otherwise name.
    Context(String),
}

/// Where a step is in the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, heredoc bodies included.
    pub end_line: usize,
}

/// One instruction of a stage, ready for the build engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The typed instruction, words unexpanded.
    pub instruction: Instruction,
    /// Where it is.
    pub location: Location,
    /// The instruction text (continuations joined).
    pub original: String,
    /// Build args in scope for this step, resolved, in declaration order: expand words
    /// with a [`Scope`] over these and the stage's current ENV. RUN gets them as env vars.
    pub args: Vec<(String, String)>,
    /// `COPY --from` resolved.
    pub copy_from: Option<Base>,
    /// For RUN, one entry per `--mount`: its `from=` resolved.
    pub mount_from: Vec<Option<Base>>,
}

/// One `FROM` and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS name`, lower case.
    pub name: Option<String>,
    /// Position among all stages in the Dockerfile (what `--from=0` refers to).
    pub index: usize,
    /// What it starts from.
    pub base: Base,
    /// `FROM --platform=`, expanded with the global args.
    pub platform: Option<String>,
    /// The `FROM` line.
    pub location: Location,
    /// The instructions after FROM.
    pub steps: Vec<Step>,
    /// Indices of the stages this one needs (base, `--from`, mounts), ascending.
    pub deps: Vec<usize>,
}

/// A Dockerfile resolved for one build: the stages the target needs, in dependency order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepGraph {
    /// The stages to build, each after the stages it depends on; the target is last.
    pub stages: Vec<Stage>,
    /// Index of the target stage.
    pub target: usize,
    /// The escape character (for a [`Lexer`]).
    pub escape: char,
    /// Global args (before the first FROM, plus the platform args), resolved.
    pub global_args: Vec<(String, String)>,
    /// `--build-arg` names that no ARG of a built stage (or global ARG) declares.
    pub unused_build_args: Vec<String>,
}

/// The variables one expansion sees: the stage's ENV (image config plus ENV lines applied
/// so far) over the build args in scope, as docker orders them (ENV wins over ARG).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// ENV of the stage so far, later entries winning.
    pub env: &'a [(String, String)],
    /// The step's build args ([`Step::args`]).
    pub args: &'a [(String, String)],
}

impl Env for Scope<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.env.lookup(name).or_else(|| self.args.lookup(name))
    }
}

/// The pairs of one ENV instruction, keys and values expanded in `scope`: the environment
/// *before* the instruction, as docker expands them (`ENV A=y B=$A` gives B the earlier A).
pub fn expand_env_pairs(
    lexer: &Lexer,
    pairs: &[KeyValue],
    scope: &Scope<'_>,
) -> Result<Vec<(String, String)>, ExpandError> {
    pairs
        .iter()
        .map(|kv| {
            Ok((
                lexer.expand_word(&kv.key, scope)?,
                lexer.expand_word(&kv.value, scope)?,
            ))
        })
        .collect()
}

fn set(vars: &mut Vec<(String, String)>, name: &str, value: String) {
    vars.retain(|(k, _)| k != name);
    vars.push((name.to_string(), value));
}

impl StepGraph {
    /// Resolves `doc` for a build on this machine for this machine.
    pub fn new(
        doc: &Document,
        build_args: &[(String, String)],
        target: Option<&str>,
    ) -> Result<StepGraph, ParseError> {
        let host = Platform::host();
        Self::for_platform(doc, build_args, target, &host, &host)
    }

    /// Resolves `doc` with explicit build and target platforms.
    pub fn for_platform(
        doc: &Document,
        build_args: &[(String, String)],
        target: Option<&str>,
        build: &Platform,
        target_platform: &Platform,
    ) -> Result<StepGraph, ParseError> {
        Self::with_contexts(doc, build_args, target, build, target_platform, &[])
    }

    /// [`StepGraph::for_platform`] with the names of `--build-context`s: `FROM NAME`,
    /// `COPY --from=NAME` and `RUN --mount=from=NAME` read the context, and a stage of
    /// that name is built only if something else needs it.
    pub fn with_contexts(
        doc: &Document,
        build_args: &[(String, String)],
        target: Option<&str>,
        build: &Platform,
        target_platform: &Platform,
        contexts: &[String],
    ) -> Result<StepGraph, ParseError> {
        let lexer = Lexer::new(doc.escape);
        let build_arg = |name: &str| build_args.lookup(name);
        let at = |node: &Node, kind: ErrorKind| node_error(doc, node, kind);
        let mut declared: BTreeSet<String> = BTreeSet::new();
        let mut global: Vec<(String, String)> = platform_args(build, target_platform);
        let mut stages: Vec<Stage> = Vec::new();
        // Per stage: the build args declared in it, for unused-arg accounting.
        let mut stage_declared: Vec<BTreeSet<String>> = Vec::new();
        let mut args: Vec<(String, String)> = Vec::new();
        let mut env: Vec<(String, String)> = Vec::new();
        for node in &doc.children {
            let instruction = parse_instruction(node).map_err(|k| at(node, k))?;
            let location = Location {
                start_line: node.start_line,
                end_line: node.end_line,
            };
            let expand = |word: &str, vars: &dyn Env| {
                lexer
                    .expand_word(word, vars)
                    .map_err(|e| at(node, ErrorKind::Expand(e)))
            };
            if let Instruction::From {
                image,
                name,
                platform,
            } = &instruction
            {
                let stage = new_stage(
                    doc,
                    node,
                    FromLine {
                        image,
                        name,
                        platform,
                    },
                    &stages,
                    &global,
                )?;
                stages.push(stage);
                stage_declared.push(BTreeSet::new());
                args.clear();
                env.clear();
                continue;
            }
            if stages.is_empty() {
                let Instruction::Arg(decls) = &instruction else {
                    return Err(at(
                        node,
                        ErrorKind::BeforeFrom {
                            instruction: node.name(),
                        },
                    ));
                };
                for d in decls {
                    declared.insert(d.name.clone());
                    let value = match (build_arg(&d.name), &d.default) {
                        (Some(v), _) => Some(v),
                        (None, Some(default)) => Some(expand(default, &global)?),
                        (None, None) => None,
                    };
                    match value {
                        Some(v) => set(&mut global, &d.name, v),
                        None => global.retain(|(k, _)| k != &d.name),
                    }
                }
                continue;
            };
            let step_args = args.clone();
            let scope = Scope {
                env: &env,
                args: &step_args,
            };
            let mut copy_from = None;
            let mut mount_from = Vec::new();
            let resolve = |word: &str, stages: &[Stage]| -> Result<Base, ParseError> {
                let word = expand(word, &scope)?;
                stage_ref(doc, stages, word).map_err(|k| at(node, k))
            };
            match &instruction {
                Instruction::Copy(c) => {
                    if let Some(from) = &c.from {
                        copy_from = Some(resolve(from, &stages)?);
                    }
                }
                Instruction::Run(r) => {
                    for m in &r.mounts {
                        mount_from
                            .push(m.from.as_deref().map(|f| resolve(f, &stages)).transpose()?);
                    }
                }
                Instruction::Arg(decls) => {
                    for d in decls {
                        stage_declared[stage_index(&stages)].insert(d.name.clone());
                        let value = match (build_arg(&d.name), &d.default) {
                            (Some(v), _) => Some(v),
                            (None, Some(default)) => Some(expand(default, &scope)?),
                            (None, None) => global.lookup(&d.name),
                        };
                        if let Some(v) = value {
                            set(&mut args, &d.name, v);
                        }
                    }
                }
                Instruction::Env(pairs) => {
                    let scope = Scope {
                        env: &env,
                        args: &step_args,
                    };
                    let expanded = expand_env_pairs(&lexer, pairs, &scope)
                        .map_err(|e| at(node, ErrorKind::Expand(e)))?;
                    for (key, value) in expanded {
                        set(&mut env, &key, value);
                    }
                }
                _ => {}
            }
            let Some(stage) = stages.last_mut() else {
                continue;
            };
            for base in copy_from.iter().chain(mount_from.iter().flatten()) {
                if let Base::Stage(i) = base {
                    if !stage.deps.contains(i) {
                        stage.deps.push(*i);
                    }
                }
            }
            stage.deps.sort_unstable();
            stage.steps.push(Step {
                instruction,
                location,
                original: node.original.clone(),
                args: step_args,
                copy_from,
                mount_from,
            });
        }
        if stages.is_empty() {
            let last = doc.children.last().map(|n| n.start_line).unwrap_or(1);
            return Err(doc.error(last, 1, ErrorKind::NoStage));
        }
        use_contexts(&mut stages, contexts);
        let (stages, target, unused) =
            prune_to_target(doc, stages, &stage_declared, declared, build_args, target)?;
        Ok(StepGraph {
            stages,
            target,
            escape: doc.escape,
            global_args: global,
            unused_build_args: unused,
        })
    }

    /// A lexer with this Dockerfile's escape character.
    pub fn lexer(&self) -> Lexer {
        Lexer::new(self.escape)
    }

    /// The stage with Dockerfile index `index`, if it is built.
    pub fn stage(&self, index: usize) -> Option<&Stage> {
        self.stages.iter().find(|s| s.index == index)
    }
}

/// Points every base, `--from` and `--mount=from` that names one of `contexts` (a stage
/// of that name, or an image written so) at the context, and recomputes the stages' deps.
fn use_contexts(stages: &mut [Stage], contexts: &[String]) {
    if contexts.is_empty() {
        return;
    }
    let names: Vec<Option<String>> = stages.iter().map(|s| s.name.clone()).collect();
    let rewrite = |base: &mut Base| {
        let word = match base {
            Base::Image(w) => Some(w.clone()),
            Base::Stage(i) => names.get(*i).cloned().flatten(),
            _ => None,
        };
        if let Some(c) = word.and_then(|w| contexts.iter().find(|c| c.eq_ignore_ascii_case(&w))) {
            *base = Base::Context(c.clone());
        }
    };
    for stage in stages.iter_mut() {
        rewrite(&mut stage.base);
        let mut deps = Vec::new();
        if let Base::Stage(i) = stage.base {
            deps.push(i);
        }
        for step in &mut stage.steps {
            let mounts = step.mount_from.iter_mut().flatten();
            for base in step.copy_from.iter_mut().chain(mounts) {
                rewrite(base);
                if let Base::Stage(i) = base {
                    deps.push(*i);
                }
            }
        }
        deps.sort_unstable();
        deps.dedup();
        stage.deps = deps;
    }
}

fn stage_index(stages: &[Stage]) -> usize {
    stages.len() - 1
}

/// `--target` pruning: the stages the target needs (itself and what it depends on), the
/// target's index, and the build args given that no needed stage (nor the global scope)
/// declares, for the "was given but not used" warning.
fn prune_to_target(
    doc: &Document,
    stages: Vec<Stage>,
    stage_declared: &[BTreeSet<String>],
    mut declared: BTreeSet<String>,
    build_args: &[(String, String)],
    target: Option<&str>,
) -> Result<(Vec<Stage>, usize, Vec<String>), ParseError> {
    let target = match target {
        None => stages.len() - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    let mut e = doc.error(1, 1, ErrorKind::UnknownTarget(t.to_string()));
                    e.source_line.clear();
                    e
                })?
        }
    };
    let mut needed = BTreeSet::from([target]);
    for i in (0..=target).rev() {
        if needed.contains(&i) {
            needed.extend(stages[i].deps.iter().copied());
        }
    }
    for i in &needed {
        declared.extend(stage_declared[*i].iter().cloned());
    }
    let mut unused: Vec<String> = build_args
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !declared.contains(k) && !BUILTIN_ARGS.contains(&k.as_str()))
        .filter(|k| !k.starts_with("BUILDKIT_"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    unused.dedup();
    let stages = stages
        .into_iter()
        .filter(|s| needed.contains(&s.index))
        .collect();
    Ok((stages, target, unused))
}

/// What `COPY --from=WORD` or `RUN --mount=from=WORD` (already expanded) in the last of
/// `stages` names: an earlier stage by index or name, else an image. A reference to the
/// current or a later stage is an error.
fn stage_ref(doc: &Document, stages: &[Stage], word: String) -> Result<Base, ErrorKind> {
    let current = stages.len() - 1;
    if let Ok(i) = word.parse::<usize>() {
        if i >= current {
            return Err(ErrorKind::ForwardStage { name: word });
        }
        return Ok(Base::Stage(i));
    }
    let lower = word.to_ascii_lowercase();
    if let Some(s) = stages[..current]
        .iter()
        .find(|s| s.name.as_deref() == Some(&lower))
    {
        return Ok(Base::Stage(s.index));
    }
    if stages[current].name.as_deref() == Some(&lower) || later_stage(doc, stages.len(), &lower) {
        return Err(ErrorKind::ForwardStage { name: word });
    }
    Ok(Base::Image(word))
}

/// The parts of a `FROM` line.
struct FromLine<'a> {
    image: &'a str,
    name: &'a Option<String>,
    platform: &'a Option<String>,
}

/// A `FROM` line's stage, after `stages`: its base (an earlier stage, `scratch` or an
/// image, expanded with the global args) and platform; warns about undefined build args in
/// the image name.
#[allow(clippy::too_many_arguments)] // the parse state a FROM line reads, each once
#[allow(clippy::ptr_arg)] // a `&Vec` becomes a `&dyn Env`; a slice (unsized) cannot
fn new_stage(
    doc: &Document,
    node: &Node,
    FromLine {
        image,
        name,
        platform,
    }: FromLine<'_>,
    stages: &[Stage],
    global: &Vec<(String, String)>,
) -> Result<Stage, ParseError> {
    let lexer = Lexer::new(doc.escape);
    let at = |node: &Node, kind: ErrorKind| node_error(doc, node, kind);
    let expand = |word: &str, vars: &dyn Env| {
        lexer
            .expand_word(word, vars)
            .map_err(|e| at(node, ErrorKind::Expand(e)))
    };
    let image = expand(image, global)?;
    let platform = platform.as_deref().map(|p| expand(p, global)).transpose()?;
    if let Some(n) = name {
        if stages.iter().any(|s| s.name.as_deref() == Some(n.as_str())) {
            return Err(at(node, ErrorKind::DuplicateStage(n.clone())));
        }
    }
    let lower = image.to_ascii_lowercase();
    let base = if let Some(s) = stages.iter().find(|s| s.name.as_deref() == Some(&lower)) {
        Base::Stage(s.index)
    } else if name.as_deref() == Some(lower.as_str()) || later_stage(doc, stages.len(), &lower) {
        return Err(at(node, ErrorKind::ForwardStage { name: image }));
    } else if lower == "scratch" {
        Base::Scratch
    } else {
        Base::Image(image)
    };
    let deps = match base {
        Base::Stage(i) => vec![i],
        _ => Vec::new(),
    };
    Ok(Stage {
        name: name.clone(),
        index: stages.len(),
        base,
        platform,
        location: Location {
            start_line: node.start_line,
            end_line: node.end_line,
        },
        steps: Vec::new(),
        deps,
    })
}

/// An error at `node`'s line, in the column where its text starts.
fn node_error(doc: &Document, node: &Node, kind: ErrorKind) -> ParseError {
    let col = doc
        .lines
        .get(node.start_line.saturating_sub(1))
        .map(|l| l.len() - l.trim_start().len() + 1)
        .unwrap_or(1);
    doc.error(node.start_line, col, kind)
}

/// Whether a FROM at or after stage position `from` is named `name`.
fn later_stage(doc: &Document, from: usize, name: &str) -> bool {
    let mut seen = 0;
    for node in &doc.children {
        if !node.keyword.eq_ignore_ascii_case("from") {
            continue;
        }
        if seen >= from {
            if let [_, as_, n] = node.args.as_slice() {
                if as_.eq_ignore_ascii_case("as") && n.eq_ignore_ascii_case(name) {
                    return true;
                }
            }
        }
        seen += 1;
    }
    false
}
