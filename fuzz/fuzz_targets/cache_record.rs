//! Fuzzes the remote cache's decoder (`remote_cache::format::decode`): none may panic, and
//! records it accepts must encode and decode again to as many records.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rbuild_builder::solver::remote_cache::format::{decode, encode, Decoded, CONFIG_MEDIA_TYPE};
use rbuild_store::{
    Descriptor, Digest, Manifest, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP,
};

/// A manifest of three gzip layers whose config has `config_type`.
fn default_manifest(config: &[u8], config_type: &str) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(rbuild_store::MEDIA_TYPE_OCI_MANIFEST.into()),
        config: Descriptor::new(config_type, Digest::of(config), config.len() as u64),
        layers: (0..3u8)
            .map(|i| Descriptor::new(MEDIA_TYPE_OCI_LAYER_GZIP, Digest::of(&[i]), 10 + i as u64))
            .collect(),
        annotations: BTreeMap::new(),
    }
}

fn check(manifest: &Manifest, config: &[u8]) {
    let Ok(Decoded::Records(records)) = decode(manifest, config) else {
        return;
    };
    let n = records.len();
    let records: BTreeMap<_, _> = records.into_iter().collect();
    let (config, layers) = encode(&records);
    let mut again = default_manifest(&config, CONFIG_MEDIA_TYPE);
    again.layers = layers;
    match decode(&again, &config) {
        Ok(Decoded::Records(back)) => assert_eq!(back.len(), n),
        other => panic!("an accepted document does not decode again: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // `manifest JSON \0 config bytes`, or the whole input as the config of fixed manifests.
    if let Some(cut) = data.iter().position(|&b| b == 0) {
        if let Ok(manifest) = serde_json::from_slice::<Manifest>(&data[..cut]) {
            check(&manifest, &data[cut + 1..]);
        }
    }
    for config_type in [CONFIG_MEDIA_TYPE, MEDIA_TYPE_OCI_CONFIG] {
        check(&default_manifest(data, config_type), data);
    }
});
