//! End-to-end tests: the real `rbuild` binary against a real registry, sandbox and store.

mod util;

pub mod build;
mod cache;
mod cache_remote;
mod cli;
mod debian;
mod fixtures;
mod formats;
mod frontend;
mod frontier;
mod git;
mod habits;
pub mod isolation;
mod multiplatform;
mod registry;
mod reliability;
mod runner;
mod ssh;
mod store;
