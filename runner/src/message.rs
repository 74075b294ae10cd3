//! The messages the sandbox's init processes send back to the runner over the report pipe.
//!
//! Channel design: one pipe, init → runner, inherited by the outer init, the namespace's
//! PID 1 and the command child (close-on-exec, so the command itself never sees it).
//! Each message is one JSON line, well under `PIPE_BUF`, so writes from the three processes
//! never interleave. The runner reads until EOF, which comes once every init process is gone.

use serde::{Deserialize, Serialize};

/// One report from inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// A setup step failed before the command could start.
    SetupFailed {
        /// What was being done, e.g. `mount overlay at /work/root`.
        step: String,
        /// The OS error number, 0 when the failure was not a syscall.
        errno: i32,
    },
    /// Everything is in place; the command is about to be executed.
    Started,
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
}

impl Message {
    /// Encodes the message as one line.
    pub(crate) fn to_line(&self) -> Vec<u8> {
        // Serialising a plain enum of strings and integers cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Decodes one line written by [`Message::to_line`].
    pub(crate) fn from_line(line: &[u8]) -> Option<Message> {
        serde_json::from_slice(line).ok()
    }
}
