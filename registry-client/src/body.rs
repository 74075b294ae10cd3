//! Response bodies read whole with a size cap, so a hostile registry or token server cannot
//! make us buffer more than we asked for. Below both auth and transport.

use futures::StreamExt;
use reqwest::Response;

use crate::{Error, Result};

/// Reads a response body of at most `limit` bytes.
pub(crate) async fn read_limited(resp: Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    let too_large = || Error::TooLarge {
        what: what.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let url = resp.url().to_string();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Connection {
            method: "GET".into(),
            url: url.clone(),
            source,
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
