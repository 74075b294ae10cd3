//! Transfer progress: the events pull and push report per blob, for the CLI to render.

use rbuild_store::Digest;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Already there (in the store on pull, in the registry on push).
    Skipped,
    /// Pushed by a cross-repository mount: no bytes sent.
    Mounted,
    /// Bytes were transferred.
    Transferred,
}

/// Per-blob transfer events. Methods may be called from several tasks at once.
///
/// `advanced` reports the absolute number of bytes done so far for that blob (it may go
/// back down when a transfer restarts after a dropped connection).
pub trait Progress: Send + Sync {
    /// A blob transfer begins; `size` is its full size.
    fn started(&self, digest: &Digest, size: u64) {
        let _ = (digest, size);
    }
    /// `done` of the blob's bytes are transferred.
    fn advanced(&self, digest: &Digest, done: u64) {
        let _ = (digest, done);
    }
    /// The blob is finished.
    fn finished(&self, digest: &Digest, outcome: Outcome) {
        let _ = (digest, outcome);
    }
    /// A transfer failed and is being retried (attempt number from 2).
    fn retrying(&self, digest: &Digest, attempt: u32) {
        let _ = (digest, attempt);
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
