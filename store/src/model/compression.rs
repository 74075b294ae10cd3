//! Compression formats: of layer blobs (gzip, zstd) and of archives `ADD` unpacks (also
//! bzip2, xz), recognised by their magic bytes.

use std::fmt;
use std::str::FromStr;

use super::ParseError;

/// A compression format. Uncompressed data is `Option::<Compression>::None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (`1f 8b`): the default for pushes, every registry and runtime reads it.
    Gzip,
    /// zstd (`28 b5 2f fd`): smaller and faster; older runtimes reject it.
    Zstd,
    /// bzip2 (`BZh`): archives only, never a layer.
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`): archives only, never a layer.
    Xz,
}

impl Compression {
    /// Recognises the compression of a stream from its first bytes; `None` when they are
    /// no known magic (uncompressed, or a format we do not read).
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if head.starts_with(b"BZh") {
            Some(Compression::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }

    /// The short name (`gzip`, `zstd`, `bzip2`, `xz`), also used in cache record file names.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }

    /// Whether layers may be compressed this way (OCI defines gzip and zstd layers only).
    pub fn is_layer_format(self) -> bool {
        matches!(self, Compression::Gzip | Compression::Zstd)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = ParseError;

    /// Parses a layer compression name (`gzip`, `zstd`), as flags give it.
    fn from_str(s: &str) -> Result<Compression, ParseError> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(ParseError::Compression { name: s.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_magic_and_parses_layer_names() {
        assert_eq!(
            Compression::detect(&[0x1f, 0x8b, 8]),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::detect(b"BZh9"), Some(Compression::Bzip2));
        assert_eq!(
            Compression::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1]),
            Some(Compression::Xz)
        );
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::detect(b"ustar"), None);
        assert_eq!("zstd".parse(), Ok(Compression::Zstd));
        assert!(
            "xz".parse::<Compression>().is_err(),
            "xz is not a layer format"
        );
        assert!(!Compression::Bzip2.is_layer_format());
    }
}
