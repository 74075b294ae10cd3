//! The image config as docker writes it (`application/vnd.oci.image.config.v1+json`):
//! the runtime `config` block, `rootfs.diff_ids` and `history`, serialized in a fixed
//! field order with ordered maps so the same image always gives the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An image config. Unknown top-level fields of a base image are kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// MAINTAINER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The runtime defaults.
    #[serde(default)]
    pub config: RuntimeConfig,
    /// The layers' uncompressed digests.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per instruction, layers or not.
    #[serde(default)]
    pub history: Vec<History>,
    /// Fields of a base image's config this model does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `config` block: what a container of the image starts with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// USER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// EXPOSE: `"8080/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// ENV as `KEY=value`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// VOLUME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// LABEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// STOPSIGNAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// HEALTHCHECK (docker's extension to the OCI config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// SHELL (docker's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers (docker's extension), run by the next build that uses the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// docker's `ArgsEscaped` (Windows only; kept when a base has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Other fields a base image had.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `{}` in the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// HEALTHCHECK as docker stores it: durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    /// Nanoseconds between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// Nanoseconds before a check times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Nanoseconds of start-up grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u64>,
    /// Nanoseconds between checks during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<u64>,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// `rootfs`: the layer stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, as docker words it (`RUN /bin/sh -c make # buildkit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// MAINTAINER at that point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free text (`buildkit.dockerfile.v0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for steps that made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// The platform the config says the image is for (normalised).
    pub fn platform(&self) -> super::Platform {
        super::Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// Parses a config blob.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The canonical bytes: fields in declaration order, maps sorted.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs and BTreeMaps cannot fail.
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        serde_json::to_vec(&sort_value(value)).unwrap_or_default()
    }

    /// The value of ENV `name`, if set.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.config.env.as_ref()?.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }

    /// ENV as ordered pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    }

    /// Sets ENV `name` (replacing an earlier value in place, as docker does).
    pub fn set_env(&mut self, name: &str, value: &str) {
        let env = self.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{name}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
}

/// Sorts every object's keys (serde_json's map is ordered by insertion unless
/// `preserve_order` is off; being explicit keeps the bytes stable whatever the features).
fn sort_value(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sort_value(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_value).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_docker_fields_and_keeps_unknown_ones() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"Domainname":""},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x","empty_layer":true}],"container":"abc"}"#;
        let c = ImageConfig::parse(json).unwrap();
        assert_eq!(
            c.config.on_build.as_deref(),
            Some(&["RUN x".to_string()][..])
        );
        assert_eq!(
            c.config.healthcheck.as_ref().unwrap().interval,
            Some(1_000_000_000)
        );
        assert!(c.history[0].empty_layer);
        let out = String::from_utf8(c.to_json()).unwrap();
        assert!(out.contains(r#""Domainname":"""#), "{out}");
        assert!(out.contains(r#""container":"abc""#), "{out}");
        assert_eq!(ImageConfig::parse(out.as_bytes()).unwrap(), c);
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(c.config.env.unwrap(), vec!["A=3", "B=2"]);
    }

    #[test]
    fn bytes_are_sorted_and_stable() {
        let mut c = ImageConfig::default();
        c.config.labels = Some(BTreeMap::from([
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
        ]));
        let a = c.to_json();
        assert_eq!(a, c.clone().to_json());
        let s = String::from_utf8(a).unwrap();
        assert!(s.find("architecture").unwrap() < s.find("config").unwrap());
    }
}
