//! The build-cache index: `cache/<key hex>` holds a JSON record of a step's result,
//! written atomically.

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::model::oci::Descriptor;
use crate::{ChainId, Digest, Error, Result, Store};

/// The current [`CacheRecord::version`].
pub const CACHE_RECORD_VERSION: u32 = 1;

/// What a cached build step produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Format version ([`CACHE_RECORD_VERSION`]); records of another version are ignored.
    pub version: u32,
    /// The snapshot after the step (None for metadata-only steps on an empty base).
    pub chain_id: Option<ChainId>,
    /// The layer the step added (None for metadata-only steps).
    pub layer: Option<Descriptor>,
    /// The image config after the step.
    pub config_json: serde_json::Value,
    /// When the record was made (RFC 3339).
    pub created: String,
}

impl Store {
    /// The record under `key`, if any (a record of another version, or a record whose
    /// layer blob or snapshot is gone, reads as a miss).
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheRecord>> {
        let path = self.root().join("cache").join(key.hex());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        let record: CacheRecord = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "cache record",
            path,
            source,
        })?;
        if record.version != CACHE_RECORD_VERSION {
            return Ok(None);
        }
        if let Some(layer) = &record.layer {
            if !self.blobs().contains(&layer.digest) {
                return Ok(None);
            }
        }
        if let Some(chain) = &record.chain_id {
            if self.snapshot_path(chain).is_none() {
                return Ok(None);
            }
        }
        Ok(Some(record))
    }

    /// Stores `record` under `key` (atomically replacing any previous one).
    pub fn cache_put(&self, key: &Digest, record: &CacheRecord) -> Result<()> {
        let path = self.root().join("cache").join(key.hex());
        let bytes = crate::model::oci::canonical_json(record).map_err(|source| Error::Json {
            what: "cache record",
            path: path.clone(),
            source,
        })?;
        write_atomic(self.scratch(), &path, &bytes)
    }
}
