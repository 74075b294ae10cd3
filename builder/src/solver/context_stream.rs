//! A build context read from a stream (`rbuild build -`): a tar archive (plain or
//! compressed) is extracted safely into a directory the caller owns; anything else is
//! taken as the Dockerfile itself with an otherwise empty context, as `docker build -`
//! does.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use crate::context::ContextError;
use crate::copy::{extract_archive, ExtractOptions};
use crate::Error;
use rbuild_store::Compression;

/// What a context stream turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamContext {
    /// A tar archive, extracted into the directory given.
    Archive,
    /// Not an archive: the bytes were written as `<dir>/Dockerfile`, which is returned.
    Dockerfile(PathBuf),
}

/// Reads a build context from `reader` into the empty directory `dir` (e.g. a temporary
/// directory under the store's `tmp/`). Archive entries never land outside `dir`; their
/// files are owned by the caller and the unpacked size is capped at `limit` bytes.
pub fn context_from_stream<R: Read>(
    mut reader: R,
    dir: &Path,
    limit: u64,
) -> Result<StreamContext, Error> {
    let mut head = Vec::with_capacity(512);
    (&mut reader)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|source| ContextError::Io {
            op: "read context from",
            path: PathBuf::from("-"),
            source,
        })?;
    let looks_like_tar = head.len() >= 262 && &head[257..262] == b"ustar";
    let stream = Cursor::new(head.clone()).chain(reader);
    if Compression::detect(&head).is_none() && !looks_like_tar {
        let dockerfile = dir.join("Dockerfile");
        let mut all = Vec::new();
        let mut stream = stream;
        stream
            .read_to_end(&mut all)
            .map_err(|source| ContextError::Io {
                op: "read context from",
                path: PathBuf::from("-"),
                source,
            })?;
        std::fs::write(&dockerfile, all).map_err(|source| ContextError::Io {
            op: "write",
            path: dockerfile.clone(),
            source,
        })?;
        return Ok(StreamContext::Dockerfile(dockerfile));
    }
    // Owners in a context do not matter (COPY makes files 0:0), and this works unprivileged.
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let options = ExtractOptions {
        chown: Some(me),
        limit,
    };
    extract_archive(stream, dir, &options, Path::new("-"))?;
    Ok(StreamContext::Archive)
}
