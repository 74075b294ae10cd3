//! End-to-end tests: the real `rbuild` binary against a real registry, sandbox and store.

mod util;

mod cli;
mod fixtures;
mod frontend;
mod runner;
mod registry;
