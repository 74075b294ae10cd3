//! What a stage is while its steps run ([`StageState`]) and what it is once built
//! ([`StageResult`]): the image config so far, the layer stack, the last step's cache key
//! and whether the cache may still be used.

use std::path::PathBuf;
use std::sync::Arc;

use rbuild_store::{ChainId, Descriptor, DiffId};
use serde::{Deserialize, Serialize};

use super::cachekey::CacheKey;
use crate::events::CacheMiss;
use rbuild_store::ImageConfig;

/// One layer of a stage: its blob and its uncompressed digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRef {
    /// The blob (uncompressed for built layers, as pulled for base layers).
    pub descriptor: Descriptor,
    /// Its diffID.
    pub diff_id: DiffId,
}

/// Whether the next step may come from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// Look the step up.
    Lookup,
    /// Do not: every later step of the stage runs, for this reason.
    Bypass(CacheMiss),
}

/// A stage while it is being built.
#[derive(Debug, Clone)]
pub struct StageState {
    /// The image config so far (ENV, USER, WORKDIR, history...).
    pub config: ImageConfig,
    /// The layers so far, base first.
    pub layers: Vec<LayerRef>,
    /// The key of the last step.
    pub key: CacheKey,
    /// Cache use for the next step.
    pub cache: CacheUse,
    /// CMD was set by this stage (an ENTRYPOINT then keeps it).
    pub cmd_set_here: bool,
    /// Overlay lowers for `layers`, top-most first, once asked for.
    pub lowers: Option<Vec<PathBuf>>,
    /// The key this stage works on now, held until its next lookup (see `flights`).
    pub flight: Option<Arc<super::flights::FlightGuard>>,
}

/// A built stage.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// Its config.
    pub config: ImageConfig,
    /// Its layers, base first.
    pub layers: Vec<LayerRef>,
    /// Its last step's key (what `FROM <stage>` and `COPY --from` key on).
    pub key: CacheKey,
}

impl StageState {
    /// A stage starting from `config` and `layers` with key `key`.
    pub fn new(config: ImageConfig, layers: Vec<LayerRef>, key: CacheKey, cache: CacheUse) -> Self {
        StageState {
            config,
            layers,
            key,
            cache,
            cmd_set_here: false,
            lowers: None,
            flight: None,
        }
    }

    /// The chain id of the top layer.
    pub fn chain_id(&self) -> Option<ChainId> {
        chain_id(&self.layers)
    }

    /// Adds a layer.
    pub fn push_layer(&mut self, layer: LayerRef) {
        self.config.rootfs.diff_ids.push(layer.diff_id.to_string());
        self.layers.push(layer);
        self.lowers = None;
    }

    /// The finished stage.
    pub fn finish(self) -> StageResult {
        StageResult {
            config: self.config,
            layers: self.layers,
            key: self.key,
        }
    }
}

/// The chain id of a layer stack.
pub fn chain_id(layers: &[LayerRef]) -> Option<ChainId> {
    let mut chain: Option<ChainId> = None;
    for l in layers {
        chain = Some(ChainId::child(chain.as_ref(), &l.diff_id));
    }
    chain
}
