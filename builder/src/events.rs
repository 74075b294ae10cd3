//! What a build reports while it runs: one event stream that the CLI renders as bars,
//! plain lines or nothing. The builder never prints.

use std::time::Duration;

/// Identifies one step of the build for the lifetime of the build (stable across events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(pub usize);

/// Which output stream a line of RUN output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The step's stdout.
    Stdout,
    /// The step's stderr.
    Stderr,
}

/// Why a step was not taken from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMiss {
    /// `--no-cache` was given.
    NoCache,
    /// An earlier step of the stage missed, so everything after it runs.
    ParentMissed,
    /// No record for this key (first build of this instruction here).
    NotFound,
    /// A COPY/ADD source changed: e.g. `checksum of app.conf changed`.
    SourceChanged(String),
    /// No record for this key in the imported caches (nor here); `nearest` says how the
    /// nearest remote record (same step, other sources) differs.
    NotInRemote {
        /// The cache ref searched (the first `--cache-from`).
        cache: String,
        /// `checksum of app.conf`, when a record of the same step with other sources exists.
        nearest: Option<String>,
    },
}

impl std::fmt::Display for CacheMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheMiss::NoCache => f.write_str("--no-cache"),
            CacheMiss::ParentMissed => f.write_str("an earlier step changed"),
            CacheMiss::NotFound => f.write_str("not built before"),
            CacheMiss::SourceChanged(what) => f.write_str(what),
            CacheMiss::NotInRemote { cache, nearest } => {
                write!(f, "no record in cache ref {cache} for this key")?;
                match nearest {
                    Some(n) => write!(f, "; nearest record differs in {n}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// One thing that happened during a build.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    /// A step was scheduled: `[stage 2/5] RUN make`.
    StepStarted {
        /// The step.
        id: StepId,
        /// Stage name (or index) as docker prints it: `stage-1`, `builder`.
        stage: String,
        /// 1-based position of the step in its stage.
        index: usize,
        /// Number of steps in the stage.
        total: usize,
        /// The instruction as written (continuations joined).
        text: String,
    },
    /// The step's result came from the cache.
    StepCached {
        /// The step.
        id: StepId,
    },
    /// The step runs because the cache had no usable result.
    StepCacheMiss {
        /// The step.
        id: StepId,
        /// Why.
        reason: CacheMiss,
    },
    /// A line of output of a running step (without its trailing newline).
    StepOutput {
        /// The step.
        id: StepId,
        /// stdout or stderr.
        stream: OutputStream,
        /// The bytes of the line.
        line: Vec<u8>,
    },
    /// Bytes moved for a step (pulling a base image, downloading an ADD URL).
    StepTransfer {
        /// The step.
        id: StepId,
        /// Bytes done so far.
        done: u64,
        /// Total bytes, when known.
        total: Option<u64>,
    },
    /// The step finished successfully.
    StepDone {
        /// The step.
        id: StepId,
        /// Wall time of the step.
        elapsed: Duration,
    },
    /// The step failed; the build error that follows says why.
    StepFailed {
        /// The step.
        id: StepId,
        /// Wall time until the failure.
        elapsed: Duration,
    },
    /// Something the user should know that does not stop the build.
    Warning(String),
    /// A line about work outside the steps (importing and exporting the build cache).
    Progress(String),
}

/// Receives build events. Implementations must be cheap: they run on the build's threads.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn event(&self, event: BuildEvent);
}

/// Discards every event.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _event: BuildEvent) {}
}
