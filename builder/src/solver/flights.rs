//! Steps in flight: one cache key is worked on by one stage at a time, so the target
//! platforms of a build that share a step (a `FROM --platform=$BUILDPLATFORM` stage that
//! uses no TARGET* arg) run it once and the others find its record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::cachekey::CacheKey;

/// The keys being looked up or run now.
#[derive(Default)]
pub struct Flights {
    keys: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a stage looks a key up and, on a miss, runs and records its step.
pub type FlightGuard = OwnedMutexGuard<()>;

impl Flights {
    /// Waits until no other stage holds `key`, then holds it.
    pub async fn hold(&self, key: &CacheKey) -> FlightGuard {
        let lock = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.entry(*key).or_default().clone()
        };
        lock.lock_owned().await
    }
}
