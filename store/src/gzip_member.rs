//! One gzip member of a pushed layer: deflate at the asked level, or Huffman coding only when
//! samples of the member show that searching for matches saves (almost) nothing.
//!
//! Text without repeats (base64, hex, random identifiers) is the case: every deflate level
//! of zlib-rs spends most of its time looking for matches that are not there (30 MiB/s per
//! core at level 2 on base64), while Huffman coding alone gives the same size at 135 MiB/s.
//! The choice depends only on the member's bytes, so the output stays deterministic.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use zlib_rs::{DeflateConfig, ReturnCode, Strategy};

/// Bytes per sample; two samples (the start and the middle of a member).
const SAMPLE: usize = 64 << 10;
/// Matching must save at least this share of the Huffman-only size to be worth its time.
const MATCH_GAIN: f64 = 0.03;

/// `data` as one gzip member (mtime 0, no name) at `level` (0..=9).
pub(crate) fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    if level >= 1 && !matching_pays(data, level)? {
        return huffman_member(data, level);
    }
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    GzEncoder::finish(enc)
}

/// Whether deflate at `level` makes the samples of `data` at least `MATCH_GAIN` smaller than
/// Huffman coding alone does. Small members are not sampled: they cost little either way.
fn matching_pays(data: &[u8], level: u32) -> io::Result<bool> {
    if data.len() < 4 * SAMPLE {
        return Ok(true);
    }
    let middle = data.len() / 2;
    let mut with_matches = 0;
    let mut huffman_only = 0;
    for sample in [&data[..SAMPLE], &data[middle..middle + SAMPLE]] {
        with_matches += raw_deflate_len(sample, level, Strategy::Default)?;
        huffman_only += raw_deflate_len(sample, level, Strategy::HuffmanOnly)?;
    }
    Ok((with_matches as f64) < (huffman_only as f64) * (1.0 - MATCH_GAIN))
}

fn raw_deflate_len(data: &[u8], level: u32, strategy: Strategy) -> io::Result<usize> {
    compress(data, level, strategy, -15).map(|c| c.len())
}

/// A gzip member whose deflate stream uses Huffman codes only (no match search). The header
/// is made like flate2's (OS byte 255, "unknown"), so it does not depend on the build host.
fn huffman_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut member = compress(data, level, Strategy::HuffmanOnly, 31)?;
    if let Some(os) = member.get_mut(9) {
        *os = 255;
    }
    Ok(member)
}

/// `data` compressed by zlib-rs; `window_bits` -15 is raw deflate, 31 a gzip member.
fn compress(data: &[u8], level: u32, strategy: Strategy, window_bits: i32) -> io::Result<Vec<u8>> {
    let config = DeflateConfig {
        window_bits,
        strategy,
        ..DeflateConfig::new(level as i32)
    };
    // The bound covers a zlib wrapper; a gzip wrapper is 12 bytes longer.
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 32];
    let (written, rc) = zlib_rs::compress_slice(&mut out, data, config);
    if rc != ReturnCode::Ok {
        return Err(io::Error::other(format!(
            "deflate failed ({rc:?}) on a {} byte member",
            data.len()
        )));
    }
    let len = written.len();
    out.truncate(len);
    // Members wait in a queue for the upload: keep only what they hold.
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Pseudo-random base64 text: no repeats for deflate to find.
    fn base64_text(len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                if i % 77 == 76 {
                    return b'\n';
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % 64) as usize]
            })
            .collect()
    }

    fn gunzip(member: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(member)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn text_without_repeats_is_huffman_coded_to_the_same_size() {
        let data = base64_text(1 << 20);
        assert!(!matching_pays(&data, 2).unwrap());
        let member = gzip_member(&data, 2).unwrap();
        assert_eq!(gunzip(&member), data);
        assert_eq!(member[9], 255, "OS byte as flate2 writes it");
        // As small as deflate with match search (6 bits per symbol of 64).
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&data).unwrap();
        let searched = enc.finish().unwrap();
        assert!(
            member.len() as f64 <= searched.len() as f64 * 1.01,
            "{} vs {}",
            member.len(),
            searched.len()
        );
    }

    #[test]
    fn repetitive_data_keeps_match_search() {
        let mut data = Vec::new();
        let mut i = 0u32;
        while data.len() < 1 << 20 {
            data.extend_from_slice(
                format!("/usr/lib/x86_64-linux-gnu/lib{}.so.6\n", i % 300).as_bytes(),
            );
            i += 1;
        }
        assert!(matching_pays(&data, 2).unwrap());
        let member = gzip_member(&data, 2).unwrap();
        assert_eq!(gunzip(&member), data);
        assert!(member.len() < data.len() / 10, "{}", member.len());
    }

    #[test]
    fn small_and_stored_members_are_plain_deflate() {
        let data = base64_text(1000);
        for level in [0, 1, 9] {
            assert_eq!(gunzip(&gzip_member(&data, level).unwrap()), data);
        }
        assert_eq!(gunzip(&gzip_member(&[], 2).unwrap()), b"");
    }
}
