//! ADD from `http(s)://` URLs: an async download into a temporary file, with the
//! `--checksum` check, before the blocking copy writes it into the layer (mode 0600).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::CopyError;

/// A file ADD downloaded, ready for [`super::CopySource::Fetched`].
#[derive(Debug, Clone)]
pub struct FetchedFile {
    /// The downloaded content, in the temporary directory given to [`fetch_url`].
    pub path: PathBuf,
    /// The URL it came from.
    pub url: String,
    /// The name it gets in a destination directory: the last element of the URL path
    /// (empty when the URL has none; then the destination must name the file).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the content (the cache key input for ADD of a URL).
    pub digest: String,
    /// The server's `Last-Modified` (the file's mtime, as Docker sets it), if it sent one.
    pub mtime: Option<SystemTime>,
}

/// Downloads `url` into a new file in `tmp_dir`, verifying `checksum`
/// (`sha256:<hex>`) when given.
pub async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
    tmp_dir: &Path,
    checksum: Option<&str>,
) -> Result<FetchedFile, CopyError> {
    let expected = match checksum {
        Some(c) => Some(parse_checksum(c)?),
        None => None,
    };
    let name = file_name(url).unwrap_or_default();
    let download = |source| CopyError::Download {
        url: url.to_string(),
        source,
    };
    let mut response = client.get(url).send().await.map_err(download)?;
    if !response.status().is_success() {
        return Err(CopyError::DownloadStatus {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let mut hex_name = Sha256::new();
    hex_name.update(url.as_bytes());
    let path = tmp_dir.join(format!("add-{}", &hex::encode(hex_name.finalize())[..24]));
    let io = |op| {
        let path = path.clone();
        move |source| CopyError::Io { op, path, source }
    };
    let mut file = tokio::fs::File::create(&path).await.map_err(io("create"))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(download)? {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io("write"))?;
    }
    file.flush().await.map_err(io("write"))?;
    drop(file);
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = expected {
        if expected != actual {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(CopyError::ChecksumMismatch {
                url: url.to_string(),
                expected,
                actual,
            });
        }
    }
    Ok(FetchedFile {
        path,
        url: url.to_string(),
        name,
        size,
        digest: actual,
        mtime,
    })
}

fn parse_checksum(checksum: &str) -> Result<String, CopyError> {
    let bad = || CopyError::BadChecksum {
        checksum: checksum.to_string(),
    };
    let hex_part = checksum.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

/// The last non-empty element of the URL's path (query and fragment removed).
fn file_name(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.split_once('/').map(|(_, p)| p)?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.rsplit('/')
        .find(|s| !s.is_empty() && *s != "." && *s != "..")
        .map(str::to_string)
}

/// Parses an HTTP date in its preferred form, `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        assert_eq!(
            file_name("https://h/a/b/tool.tar.gz?x=1").as_deref(),
            Some("tool.tar.gz")
        );
        assert_eq!(file_name("http://h/dir/").as_deref(), Some("dir"));
        assert_eq!(file_name("http://h"), None);
    }

    #[test]
    fn http_dates() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 784_111_777);
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
    }

    #[test]
    fn checksums() {
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum(&format!("md5:{}", "0".repeat(64))).is_err());
        assert!(parse_checksum(&format!("sha256:{}", "A".repeat(64))).is_ok());
    }
}
