//! `--cache-to` and `--cache-from` in BuildKit's syntax (`type=registry,ref=R,mode=max`...),
//! parsed into what the build imports from and exports to.

use std::path::PathBuf;

use rbuild_store::{Compression, LayerCompression, Reference};

use crate::Error;

/// Which records an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The records whose layers are in the final image (BuildKit's default).
    #[default]
    Min,
    /// Every step of every stage.
    Max,
}

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// One OCI image manifest in a registry repository (`type=registry,ref=R`).
    Registry(Reference),
    /// An OCI image layout directory (`type=local,dest=DIR` / `src=DIR`).
    Local(PathBuf),
    /// Records in the config of the image the build pushes (`type=inline`).
    Inline,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    /// Where to.
    pub location: CacheLocation,
    /// Which records.
    pub mode: CacheMode,
    /// How layers are compressed.
    pub compression: LayerCompression,
    /// Recompress layers already compressed in another format.
    pub force_compression: bool,
    /// A failed export is a warning, not a failed build.
    pub ignore_error: bool,
    /// Fields given that rbuild does not follow (`oci-mediatypes=false`,
    /// `image-manifest=false`: it always writes one OCI image manifest), for a warning.
    pub ignored: Vec<String>,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    /// Where from.
    pub location: CacheLocation,
}

impl CacheLocation {
    /// How the location is named in messages: the reference, the directory or `inline`.
    pub fn name(&self) -> String {
        match self {
            CacheLocation::Registry(r) => r.to_string(),
            CacheLocation::Local(d) => d.display().to_string(),
            CacheLocation::Inline => "inline".to_string(),
        }
    }
}

fn invalid(flag: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidFlag {
        flag,
        value: value.to_string(),
        reason,
    }
}

fn fields<'a>(flag: &'static str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>, Error> {
    value
        .split(',')
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| invalid(flag, value, "want comma-separated KEY=VALUE fields"))
        })
        .collect()
}

fn reference(flag: &'static str, value: &str, r: &str) -> Result<Reference, Error> {
    Reference::parse(r).map_err(|_| invalid(flag, value, "ref= is not a valid image reference"))
}

/// `type=registry`'s location: `ref=` is required.
fn registry(flag: &'static str, value: &str, r: Option<&str>) -> Result<CacheLocation, Error> {
    let r = r.ok_or_else(|| invalid(flag, value, "type=registry needs ref="))?;
    Ok(CacheLocation::Registry(reference(flag, value, r)?))
}

/// `type=local`'s location: the directory field (`src=` to import, `dest=` to export).
fn local(
    flag: &'static str,
    value: &str,
    dir: Option<&str>,
    missing: &'static str,
) -> Result<CacheLocation, Error> {
    let dir = dir.ok_or_else(|| invalid(flag, value, missing))?;
    Ok(CacheLocation::Local(PathBuf::from(dir)))
}

fn boolean(flag: &'static str, value: &str, v: &str) -> Result<bool, Error> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(flag, value, "a boolean field wants true or false")),
    }
}

impl CacheImport {
    /// Parses a `--cache-from` value: `type=registry,ref=R`, `type=local,src=DIR`, or a bare
    /// reference (the same as `type=registry,ref=R`).
    pub fn parse(value: &str) -> Result<CacheImport, Error> {
        const FLAG: &str = "--cache-from";
        if !value.contains('=') {
            return Ok(CacheImport {
                location: CacheLocation::Registry(reference(FLAG, value, value)?),
            });
        }
        let fields = fields(FLAG, value)?;
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        for (k, _) in &fields {
            if !matches!(*k, "type" | "ref" | "src" | "digest" | "tag") {
                return Err(invalid(
                    FLAG,
                    value,
                    "unknown field (want type, ref or src)",
                ));
            }
        }
        let location = match get("type").unwrap_or("registry") {
            "local" => local(FLAG, value, get("src"), "type=local needs src=DIR")?,
            "registry" => registry(FLAG, value, get("ref"))?,
            _ => return Err(invalid(FLAG, value, "type must be registry or local")),
        };
        Ok(CacheImport { location })
    }
}

impl CacheExport {
    /// Parses a `--cache-to` value: `type=registry,ref=R[,mode=min|max][,compression=gzip|zstd]
    /// [,compression-level=N][,force-compression=true][,image-manifest=true]
    /// [,oci-mediatypes=true][,ignore-error=true]`, `type=local,dest=DIR[,...]` or
    /// `type=inline`.
    pub fn parse(value: &str) -> Result<CacheExport, Error> {
        const FLAG: &str = "--cache-to";
        let fields = fields(FLAG, value)?;
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let mut mode = CacheMode::Min;
        let mut format = Compression::Gzip;
        let mut level = None;
        let mut force_compression = false;
        let mut ignore_error = false;
        let mut ignored = Vec::new();
        for (k, v) in &fields {
            match *k {
                "type" | "ref" | "dest" => {}
                "mode" => {
                    mode = match *v {
                        "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        _ => return Err(invalid(FLAG, value, "mode must be min or max")),
                    }
                }
                "compression" => {
                    format = v
                        .parse()
                        .map_err(|_| invalid(FLAG, value, "compression must be gzip or zstd"))?
                }
                "compression-level" => {
                    level =
                        Some(v.parse::<i32>().map_err(|_| {
                            invalid(FLAG, value, "compression-level must be a number")
                        })?)
                }
                "force-compression" => force_compression = boolean(FLAG, value, v)?,
                "ignore-error" => ignore_error = boolean(FLAG, value, v)?,
                // rbuild always writes one OCI image manifest: `true` only says so, and
                // `false` is noted (a warning), so BuildKit scripts keep working.
                "image-manifest" | "oci-mediatypes" => {
                    if !boolean(FLAG, value, v)? {
                        ignored.push(format!("{k}={v}"));
                    }
                }
                _ => return Err(invalid(FLAG, value, "unknown field")),
            }
        }
        let compression = LayerCompression::new(format, level).map_err(|_| {
            invalid(
                FLAG,
                value,
                "compression-level out of range (gzip 0-9, zstd 1-19)",
            )
        })?;
        let location = match get("type").unwrap_or("registry") {
            "registry" => registry(FLAG, value, get("ref"))?,
            "local" => local(FLAG, value, get("dest"), "type=local needs dest=DIR")?,
            "inline" => {
                if mode == CacheMode::Max {
                    return Err(invalid(FLAG, value, "type=inline supports mode=min only"));
                }
                CacheLocation::Inline
            }
            _ => {
                return Err(invalid(
                    FLAG,
                    value,
                    "type must be registry, local or inline",
                ))
            }
        };
        Ok(CacheExport {
            location,
            mode,
            compression,
            force_compression,
            ignore_error,
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_syntax_parses() {
        let e = CacheExport::parse(
            "type=registry,ref=127.0.0.1:5000/cache/app:ci,mode=max,compression=zstd,\
             compression-level=5,force-compression=true,image-manifest=true,\
             oci-mediatypes=true,ignore-error=true",
        )
        .unwrap();
        assert_eq!(
            e.location,
            CacheLocation::Registry(Reference::parse("127.0.0.1:5000/cache/app:ci").unwrap())
        );
        assert_eq!(e.mode, CacheMode::Max);
        assert_eq!(e.compression.compression(), Compression::Zstd);
        assert_eq!(e.compression.level(), 5);
        assert!(e.force_compression && e.ignore_error);
        let d = CacheExport::parse("type=local,dest=/tmp/c").unwrap();
        assert_eq!(d.location, CacheLocation::Local("/tmp/c".into()));
        assert_eq!(d.mode, CacheMode::Min);
        assert_eq!(
            CacheExport::parse("type=inline").unwrap().location,
            CacheLocation::Inline
        );
        let bare = CacheImport::parse("127.0.0.1:5000/cache/app:ci").unwrap();
        let full = CacheImport::parse("type=registry,ref=127.0.0.1:5000/cache/app:ci").unwrap();
        assert_eq!(bare, full);
        assert_eq!(
            CacheImport::parse("type=local,src=/c").unwrap().location,
            CacheLocation::Local("/c".into())
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (v, reason) in [
            ("type=registry", "needs ref="),
            ("type=registry,ref=r/a,mode=all", "mode must be"),
            ("type=inline,mode=max", "mode=min only"),
            ("type=registry,ref=r/a,compression=xz", "gzip or zstd"),
            ("type=registry,ref=r/a,compression-level=42", "out of range"),
            ("type=s3,ref=r/a", "type must be"),
            ("type=registry,ref=r/a,colour=blue", "unknown field"),
        ] {
            let e = CacheExport::parse(v).unwrap_err().to_string();
            assert!(e.contains(reason), "{v}: {e}");
        }
        assert!(CacheImport::parse("type=local").is_err());
        let e = CacheExport::parse("type=registry,ref=r/a,oci-mediatypes=false").unwrap();
        assert_eq!(e.ignored, vec!["oci-mediatypes=false".to_string()]);
    }
}
