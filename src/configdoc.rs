//! Cluster config versions: the document proxies pull, its digest, and its chunks.
//!
//! Every cluster has a current config version. Its bytes are a postcard-encoded
//! [`ConfigDocument`]: the operator's config file as pushed, and the cluster's datasource
//! choices (one per hostgroup, changed by "switch datasource"). Both a push and a switch
//! make a new version. Proxies pull a version in chunks of [`CHUNK_SIZE`] bytes and check
//! the SHA-256 digest of the reassembled bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::wire::ConfigId;

/// Bytes of config per chunk (the last chunk may be shorter). A chunk datagram with this
/// payload is at most 1127 bytes, inside the 1200-byte limit.
pub const CHUNK_SIZE: usize = 1024;
/// Largest config version, in bytes (4096 chunks).
pub const MAX_CONFIG_BYTES: usize = 4 << 20;
/// Longest hostgroup or datasource name, in bytes.
pub const MAX_DATASOURCE_NAME: usize = 255;

/// The content of a config version, as proxies receive it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct ConfigDocument<'a> {
    /// The version this document is.
    pub version: u64,
    /// The operator's config file, byte for byte as pushed (empty until the first push).
    pub base: &'a [u8],
    /// The active datasource of each hostgroup, sorted by hostgroup.
    pub datasources: Vec<(&'a str, &'a str)>,
}

impl<'a> ConfigDocument<'a> {
    /// Decodes a document from a complete, digest-checked config version.
    pub fn decode(bytes: &'a [u8]) -> Result<ConfigDocument<'a>, ConfigError> {
        match postcard::take_from_bytes(bytes) {
            Ok((doc, [])) => Ok(doc),
            _ => Err(ConfigError::Malformed),
        }
    }
}

/// Why a config could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Larger than [`MAX_CONFIG_BYTES`] once rendered.
    #[error("config of {0} bytes is larger than the limit of {MAX_CONFIG_BYTES} bytes")]
    TooLarge(usize),
    /// A hostgroup or datasource name is empty, too long, or holds a control character.
    #[error(
        "hostgroup and datasource names must be 1 to {MAX_DATASOURCE_NAME} bytes without control characters"
    )]
    InvalidName,
    /// The bytes are not a config document.
    #[error("malformed config document")]
    Malformed,
    /// An operator pushed an empty config file (almost always a mistake: a truncated
    /// file, a wrong path to a new file).
    #[error("the config file is empty; a push must carry the cluster's whole config")]
    Empty,
    /// The file is not in the format its cluster declares.
    #[error("the config file is not valid {format}, as its cluster declares: {detail}")]
    NotFormat {
        /// `TOML` or `JSON`.
        format: &'static str,
        /// What the parser said, with the place.
        detail: String,
    },
}

/// A format a cluster may declare its config files are in (`config_format` in the keeper's
/// config file), checked before a push or rollback stores anything. Configs stay opaque
/// bytes otherwise: the keeper parses only to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    /// TOML 1.0.
    Toml,
    /// JSON (RFC 8259).
    Json,
}

impl ConfigFormat {
    /// Checks that `bytes` are a document of this format.
    pub fn check(self, bytes: &[u8]) -> Result<(), ConfigError> {
        let not = |detail: String| ConfigError::NotFormat {
            format: self.name(),
            detail,
        };
        match self {
            ConfigFormat::Toml => {
                let text =
                    std::str::from_utf8(bytes).map_err(|e| not(format!("not UTF-8 ({e})")))?;
                toml::from_str::<toml::Table>(text)
                    .map(|_| ())
                    .map_err(|e| not(e.to_string().trim().replace('\n', " ")))
            }
            ConfigFormat::Json => serde_json::from_slice::<serde_json::Value>(bytes)
                .map(|_| ())
                .map_err(|e| not(e.to_string())),
        }
    }

    /// `TOML` or `JSON`.
    pub fn name(self) -> &'static str {
        match self {
            ConfigFormat::Toml => "TOML",
            ConfigFormat::Json => "JSON",
        }
    }
}

/// One config version of a cluster, rendered and ready to serve in chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigVersion {
    /// The version number, from 1.
    pub version: u64,
    /// The operator's config file as pushed.
    pub base: Arc<[u8]>,
    /// The active datasource of each hostgroup.
    pub datasources: BTreeMap<String, String>,
    /// The rendered [`ConfigDocument`].
    pub bytes: Arc<[u8]>,
    /// SHA-256 of `bytes`.
    pub digest: [u8; 32],
    /// Its identity on the wire: [`ConfigId::of`] its version and digest.
    pub id: ConfigId,
}

impl ConfigVersion {
    /// Renders a version from its parts.
    pub fn render(
        version: u64,
        base: Arc<[u8]>,
        datasources: BTreeMap<String, String>,
    ) -> Result<ConfigVersion, ConfigError> {
        for (hostgroup, datasource) in &datasources {
            validate_datasource_name(hostgroup)?;
            validate_datasource_name(datasource)?;
        }
        if base.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(base.len()));
        }
        let doc = ConfigDocument {
            version,
            base: &base,
            datasources: datasources
                .iter()
                .map(|(h, d)| (h.as_str(), d.as_str()))
                .collect(),
        };
        let bytes: Arc<[u8]> = postcard::to_allocvec(&doc)
            .map_err(|_| ConfigError::Malformed)?
            .into();
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        let digest = digest(&bytes);
        Ok(ConfigVersion {
            version,
            base,
            datasources,
            bytes,
            digest,
            id: ConfigId::of(version, &digest),
        })
    }

    /// The first version of every cluster: an empty config and no datasource choices.
    pub fn initial() -> ConfigVersion {
        // An empty document always renders.
        ConfigVersion::render(1, Arc::from(&[][..]), BTreeMap::new())
            .expect("the empty config document renders")
    }

    /// The next version with `base` as the operator's config.
    pub fn with_base(&self, base: Arc<[u8]>) -> Result<ConfigVersion, ConfigError> {
        ConfigVersion::render(self.version + 1, base, self.datasources.clone())
    }

    /// The next version with `hostgroup` served by `datasource`.
    pub fn with_datasource(
        &self,
        hostgroup: &str,
        datasource: &str,
    ) -> Result<ConfigVersion, ConfigError> {
        let mut datasources = self.datasources.clone();
        datasources.insert(hostgroup.to_owned(), datasource.to_owned());
        ConfigVersion::render(self.version + 1, self.base.clone(), datasources)
    }

    /// How many chunks the version is served in (at least one, even when empty).
    pub fn total_chunks(&self) -> u32 {
        total_chunks(self.bytes.len())
    }

    /// The bytes of chunk `index`, if the version has that chunk.
    pub fn chunk(&self, index: u32) -> Option<&[u8]> {
        chunk_range(self.bytes.len(), index).map(|r| &self.bytes[r])
    }
}

/// SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// How many chunks a config of `size` bytes is served in.
pub fn total_chunks(size: usize) -> u32 {
    u32::try_from(size.div_ceil(CHUNK_SIZE).max(1)).unwrap_or(u32::MAX)
}

/// The byte range of chunk `index` in a config of `size` bytes.
pub fn chunk_range(size: usize, index: u32) -> Option<std::ops::Range<usize>> {
    if index >= total_chunks(size) {
        return None;
    }
    let start = index as usize * CHUNK_SIZE;
    Some(start..(start + CHUNK_SIZE).min(size))
}

/// Checks a hostgroup or datasource name: 1 to 255 bytes, no control characters.
pub fn validate_datasource_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_DATASOURCE_NAME || name.chars().any(char::is_control) {
        return Err(ConfigError::InvalidName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_config_exactly() {
        for size in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            5 * CHUNK_SIZE + 17,
        ] {
            let total = total_chunks(size);
            let mut covered = 0;
            for i in 0..total {
                let r = chunk_range(size, i).expect("in range");
                assert_eq!(r.start, covered);
                covered = r.end;
            }
            assert_eq!(covered, size);
            assert_eq!(chunk_range(size, total), None);
        }
    }

    #[test]
    fn a_document_round_trips_through_its_rendered_bytes() {
        let v = ConfigVersion::initial()
            .with_base(Arc::from(&b"pool = 10\n"[..]))
            .and_then(|v| v.with_datasource("hg1", "10.0.0.1:3306"))
            .expect("valid");
        assert_eq!(v.version, 3);
        let doc = ConfigDocument::decode(&v.bytes).expect("decodes");
        assert_eq!(doc.version, 3);
        assert_eq!(doc.base, b"pool = 10\n");
        assert_eq!(doc.datasources, vec![("hg1", "10.0.0.1:3306")]);
        assert_eq!(v.digest, digest(&v.bytes));
    }

    #[test]
    fn an_oversized_config_is_refused() {
        let big: Arc<[u8]> = vec![0u8; MAX_CONFIG_BYTES + 1].into();
        assert!(matches!(
            ConfigVersion::initial().with_base(big),
            Err(ConfigError::TooLarge(_))
        ));
    }
}
