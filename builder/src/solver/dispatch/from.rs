//! FROM: start a stage from `scratch`, an earlier stage, or an image (local first, else
//! pulled), docker's default PATH when the base sets none; then run the base's ONBUILD
//! triggers, which the new image does not inherit.

use std::time::Instant;

use super::{step, Deps};
use crate::events::{BuildEvent, CacheMiss};
use crate::frontend::checks::{CheckWarning, INVALID_BASE_IMAGE_PLATFORM};
use crate::frontend::parse_instruction;
use crate::frontend::{Base, Copy, Instruction, Location, Source, Step};
use crate::solver::cachekey::KeyEncoder;
use crate::solver::ctx::BuildCtx;
use crate::solver::named_context::OpenedContext;
use crate::solver::plan::{PlannedStage, PlannedStep};
use crate::solver::state::{CacheUse, StageState};
use crate::Error;
use rbuild_store::ImageConfig;

/// Starts a stage: its base, then its base's ONBUILD triggers.
pub async fn from(ctx: &BuildCtx, stage: &PlannedStage, deps: &Deps) -> Result<StageState, Error> {
    let started = Instant::now();
    let id = stage.from_id;
    ctx.emit(BuildEvent::StepStarted {
        id,
        stage: stage.display.clone(),
        index: 1,
        total: stage.shown_total,
        text: stage.from_text.clone(),
    });
    let cache = if ctx.options.no_cache {
        CacheUse::Bypass(CacheMiss::NoCache)
    } else {
        CacheUse::Lookup
    };
    let platform = match &stage.platform {
        Some(p) => crate::solver::ctx::parse_platform(p)?,
        None => ctx.platform.clone(),
    };
    let scratch = || {
        let config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            ..ImageConfig::default()
        };
        let mut k = KeyEncoder::new("FROM", None);
        k.str("scratch", &platform.to_string());
        StageState::new(config, Vec::new(), k.finish(), cache.clone())
    };
    let mut dir_context = None;
    let result = match &stage.base {
        Base::Scratch => Ok(scratch()),
        Base::Context(name) => match ctx.named.get(&name.to_ascii_lowercase()) {
            // A directory: scratch and its files (the COPY below).
            Some(OpenedContext::Dir(_)) => {
                dir_context = Some(name.clone());
                Ok(scratch())
            }
            _ => ctx.context_image(name, &platform, id).await.map(|base| {
                let mut k = KeyEncoder::new("FROM", None);
                k.str("image", &base.manifest.to_string());
                StageState::new(base.config, base.layers, k.finish(), cache.clone())
            }),
        },
        Base::Stage(i) => match deps.get(i) {
            Some(dep) => {
                let mut k = KeyEncoder::new("FROM", None);
                k.str("stage", &dep.key.hex());
                Ok(StageState::new(
                    dep.config.clone(),
                    dep.layers.clone(),
                    k.finish(),
                    cache,
                ))
            }
            None => Err(Error::SourceNotFound {
                source_path: format!("stage {i}"),
            }),
        },
        Base::Image(reference) => match ctx.base_image(reference, &platform, id).await {
            Ok(base) => {
                check_base_platform(ctx, stage, reference, &base.config, &platform).map(|()| {
                    let mut k = KeyEncoder::new("FROM", None);
                    k.str("image", &base.manifest.to_string());
                    StageState::new(base.config, base.layers, k.finish(), cache)
                })
            }
            Err(e) => Err(e),
        },
    };
    let mut st = match result {
        Ok(st) => st,
        Err(e) => {
            ctx.emit(BuildEvent::StepFailed {
                id,
                elapsed: started.elapsed(),
            });
            return Err(Error::Step {
                file: ctx.dockerfile.clone(),
                line: stage.location.start_line,
                instruction: stage.from_text.clone(),
                source: Box::new(e),
            });
        }
    };
    if let Some(name) = dir_context {
        let planned = context_copy_step(ctx, stage, &name);
        step(ctx, stage, &planned, deps, &mut st).await?;
    }
    ctx.emit(BuildEvent::StepDone {
        id,
        elapsed: started.elapsed(),
    });
    // BuildKit's rule: every stage's config has a PATH (scratch and bases without one get
    // docker's default), except on Windows, which leaves it to the OS.
    if st.config.env_value("PATH").is_none() && st.config.os != "windows" {
        st.config.set_env("PATH", rbuild_runner::DEFAULT_PATH);
    }
    // A stage's own image config starts without the base's triggers.
    // A stage's own image config starts without the base's triggers, nor the base's inline
    // cache records (they describe the base's build, not this one).
    st.config
        .extra
        .remove(crate::solver::remote_cache::format::INLINE_KEY);
    let triggers = st.config.config.on_build.take().unwrap_or_default();
    for trigger in triggers {
        let planned = trigger_step(ctx, stage, &trigger)?;
        step(ctx, stage, &planned, deps, &mut st).await?;
    }
    Ok(st)
}

/// The InvalidBaseImagePlatform check: the base image's config names another platform
/// than the one the stage is built for (a warning; an error with `check=error=true`).
fn check_base_platform(
    ctx: &BuildCtx,
    stage: &PlannedStage,
    reference: &str,
    config: &ImageConfig,
    want: &rbuild_store::Platform,
) -> Result<(), Error> {
    let rule = INVALID_BASE_IMAGE_PLATFORM;
    let variant_differs = matches!((&config.variant, &want.variant), (Some(a), Some(b)) if a != b);
    let differs =
        config.os != want.os || config.architecture != want.architecture || variant_differs;
    if !differs || !ctx.checks.enabled(rule, false) {
        return Ok(());
    }
    let actual = rbuild_store::Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        variant: config.variant.clone(),
        ..want.clone()
    };
    let warning = CheckWarning {
        rule,
        file: ctx.dockerfile.clone(),
        line: stage.location.start_line,
        message: format!(
            "Base image {reference} was pulled with platform \"{actual}\", expected \"{want}\" for current build"
        ),
    };
    ctx.emit(BuildEvent::Warning(warning.to_string()));
    if ctx.checks.error {
        return Err(Error::ChecksFailed { count: 1 });
    }
    Ok(())
}

/// `FROM NAME` of a `--build-context` directory: `COPY . /` from it onto scratch, as a
/// hidden step of the FROM (cached by the files' contents like any COPY).
fn context_copy_step(ctx: &BuildCtx, stage: &PlannedStage, name: &str) -> PlannedStep {
    PlannedStep {
        id: ctx.new_step_id(),
        shown: None,
        step: Step {
            instruction: Instruction::Copy(Copy {
                sources: vec![Source::Path(".".into())],
                dest: "/".into(),
                from: Some(name.to_string()),
                chown: None,
                chmod: None,
                link: false,
                parents: false,
                exclude: Vec::new(),
                json: false,
            }),
            location: stage.location,
            original: format!("FROM {name}"),
            args: ctx.global_args.clone(),
            copy_from: Some(Base::Context(name.to_string())),
            mount_from: Vec::new(),
        },
    }
}

/// An ONBUILD trigger as a step of the stage whose FROM runs it.
fn trigger_step(ctx: &BuildCtx, stage: &PlannedStage, text: &str) -> Result<PlannedStep, Error> {
    let at = |kind| Error::Parse(onbuild_error(ctx, stage, text, kind));
    // The trigger is parsed as a one-line Dockerfile with the same escape character.
    let source = format!("# escape={}\n{text}\n", ctx.lexer.escape());
    let doc = crate::frontend::parse(&ctx.dockerfile, source.as_bytes())?;
    let Some(node) = doc.children.first() else {
        return Err(at(crate::frontend::ErrorKind::NoInstructions));
    };
    let instruction = parse_instruction(node).map_err(at)?;
    Ok(PlannedStep {
        id: ctx.new_step_id(),
        shown: None,
        step: Step {
            instruction,
            location: Location {
                start_line: stage.location.start_line,
                end_line: stage.location.end_line,
            },
            original: format!("ONBUILD {text}"),
            args: ctx.global_args.clone(),
            copy_from: None,
            mount_from: Vec::new(),
        },
    })
}

fn onbuild_error(
    ctx: &BuildCtx,
    stage: &PlannedStage,
    text: &str,
    kind: crate::frontend::ErrorKind,
) -> crate::frontend::ParseError {
    crate::frontend::ParseError {
        file: ctx.dockerfile.clone(),
        line: stage.location.start_line,
        column: 1,
        source_line: format!("ONBUILD {text}"),
        kind: Box::new(kind),
    }
}
