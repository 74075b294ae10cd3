//! The plan: the step graph's stages with a stable [`StepId`] per step, the stage names
//! docker prints (`builder`, `stage-1`) and the `[stage i/n]` numbering of the steps that
//! show in the progress (FROM, RUN, COPY, ADD, WORKDIR; metadata steps do not).

use crate::events::StepId;
use crate::frontend::Instruction;
use crate::frontend::{Base, Location, Stage, Step, StepGraph};

/// One step, numbered.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// Its id in events.
    pub id: StepId,
    /// The frontend's step.
    pub step: Step,
    /// `i` of `[stage i/n]` when the step shows in the progress.
    pub shown: Option<usize>,
}

/// One stage, numbered.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// Dockerfile index of the stage.
    pub index: usize,
    /// The name docker prints: `AS` name, else `stage-N`; empty for a lone unnamed stage.
    pub display: String,
    /// What it starts from.
    pub base: Base,
    /// `FROM --platform`.
    pub platform: Option<String>,
    /// The FROM line.
    pub location: Location,
    /// The FROM step's id.
    pub from_id: StepId,
    /// The steps after FROM.
    pub steps: Vec<PlannedStep>,
    /// Number of shown steps, FROM included (`n` of `[stage i/n]`).
    pub shown_total: usize,
    /// Stages this one needs.
    pub deps: Vec<usize>,
    /// The FROM text as written.
    pub from_text: String,
}

/// The stages to build, in dependency order; the target is last.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stages.
    pub stages: Vec<PlannedStage>,
    /// Dockerfile index of the target stage.
    pub target: usize,
    /// The first id not used by the plan (for ONBUILD triggers found later).
    pub next_id: usize,
}

/// Whether a step shows in the progress as a numbered step.
pub fn is_shown(i: &Instruction) -> bool {
    matches!(
        i,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) | Instruction::Workdir(_)
    )
}

impl Plan {
    /// Numbers the graph's stages and steps.
    pub fn new(graph: &StepGraph) -> Plan {
        let mut next = 0usize;
        let mut id = || {
            next += 1;
            StepId(next - 1)
        };
        let lone = graph.stages.len() == 1 && graph.stages[0].name.is_none();
        let stages = graph
            .stages
            .iter()
            .map(|s: &Stage| {
                let from_id = id();
                let mut shown = 1;
                let steps = s
                    .steps
                    .iter()
                    .map(|step| {
                        let n = is_shown(&step.instruction).then(|| {
                            shown += 1;
                            shown
                        });
                        PlannedStep {
                            id: id(),
                            step: step.clone(),
                            shown: n,
                        }
                    })
                    .collect();
                let display = match (&s.name, lone) {
                    (Some(n), _) => n.clone(),
                    (None, true) => String::new(),
                    (None, false) => format!("stage-{}", s.index),
                };
                PlannedStage {
                    index: s.index,
                    display,
                    base: s.base.clone(),
                    platform: s.platform.clone(),
                    location: s.location,
                    from_id,
                    steps,
                    shown_total: shown,
                    deps: s.deps.clone(),
                    from_text: match &s.base {
                        Base::Scratch => "FROM scratch".to_string(),
                        Base::Image(r) | Base::Context(r) => format!("FROM {r}"),
                        Base::Stage(i) => format!(
                            "FROM {}",
                            graph
                                .stage(*i)
                                .and_then(|st| st.name.clone())
                                .unwrap_or_else(|| format!("stage-{i}"))
                        ),
                    },
                }
            })
            .collect();
        Plan {
            stages,
            target: graph.target,
            next_id: next,
        }
    }
}

impl Plan {
    /// For one platform of several: ids from `first` on, and the platform before each
    /// stage's name in the progress (`linux/arm64 builder`).
    pub fn for_platform(&mut self, platform: &rbuild_store::Platform, first: usize) {
        for s in &mut self.stages {
            s.display = format!("{platform} {}", s.display).trim_end().to_string();
            s.from_id = StepId(s.from_id.0 + first);
            for step in &mut s.steps {
                step.id = StepId(step.id.0 + first);
            }
        }
        self.next_id += first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::parse;

    #[test]
    fn numbers_shown_steps_and_names_stages() {
        let doc = parse(
            "Dockerfile",
            b"FROM scratch AS a\nCOPY x /x\nENV A=1\nRUN y\nFROM a\nFROM scratch\nCOPY --from=a /x /x\n",
        )
        .unwrap();
        let graph = StepGraph::new(&doc, &[], None).unwrap();
        let plan = Plan::new(&graph);
        // stage 1 (FROM a) is not needed by the target: pruned.
        assert_eq!(plan.stages.len(), 2);
        assert_eq!(plan.stages[0].display, "a");
        assert_eq!(plan.stages[0].shown_total, 3);
        let shown: Vec<_> = plan.stages[0].steps.iter().map(|s| s.shown).collect();
        assert_eq!(shown, vec![Some(2), None, Some(3)]);
        assert_eq!(plan.stages[1].display, "stage-2");
        assert_eq!(plan.next_id, 6);
    }
}
