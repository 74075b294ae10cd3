//! rbuild's sandbox: runs one process in fresh namespaces over an overlayfs root,
//! with limits, and reports its exit status. Knows nothing about images.
//!
//! The runner side is [`Sandbox::run`]; the sandbox side is [`sandbox_init_main`], reached
//! by re-executing a binary whose `main` dispatches [`INIT_ARG`] to it before starting
//! any thread. The entry sequence (namespaces → mount → pivot → drop → exec) lives in
//! `init` (process choreography), `rootfs` (mounts and pivot) and `process` (drop and exec).
#![deny(missing_docs)]

mod cgroup;
mod error;
mod init;
mod message;
mod net;
mod process;
mod rootfs;
mod sandbox;
mod spec;
mod user;

pub use error::Error;
pub use init::sandbox_init_main;
pub use message::Message;
pub use process::DEFAULT_CAPABILITIES;
pub use sandbox::{ExitStatus, Sandbox, Stream};
pub use spec::{
    default_hosts, host_resolv_conf, ExtraMount, Limits, Network, SandboxSpec, User, DEFAULT_PATH,
    MAX_LOWERS,
};
pub use user::resolve_user;

/// The hidden first argument that makes the `rbuild` binary act as the sandbox child.
pub const INIT_ARG: &str = "sandbox-init";
