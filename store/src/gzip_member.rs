//! One gzip member of a pushed layer: libdeflate at the asked level, or Huffman coding only
//! (zlib-rs) when samples of the member show that searching for matches saves (almost) nothing.
//!
//! libdeflate compresses a whole buffer at once, which is what an independent member is; on
//! layer tars its level 2 is 1.2-1.3x faster than zlib-rs level 2 and 5 % smaller (about
//! zlib-rs level 5's size, buildah's default). Text without repeats (base64, hex, random
//! identifiers) is the other case: every deflate spends most of its time looking for matches
//! that are not there (~100 MiB/s per core on base64 for libdeflate level 1 and zlib-rs
//! level 2 alike), while Huffman coding alone gives the same size faster. The choice depends
//! only on the member's bytes, so the output stays deterministic. Figures: `bench/README.md`.

use std::io;

use libdeflater::{CompressionLvl, Compressor};
use zlib_rs::{DeflateConfig, ReturnCode, Strategy};

/// Bytes per sample; two samples (the start and the middle of a member).
const SAMPLE: usize = 64 << 10;
/// Matching must save at least this share of the Huffman-only size to be worth its time.
const MATCH_GAIN: f64 = 0.03;

/// `data` as one gzip member (mtime 0, no name, OS byte 255) at `level` (0..=9).
pub(crate) fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut deflater = Compressor::new(deflate_level(level)?);
    if level >= 1 && !matching_pays(&mut deflater, data, level)? {
        return huffman_member(data, level);
    }
    let mut out = vec![0u8; deflater.gzip_compress_bound(data.len())];
    let len = deflater
        .gzip_compress(data, &mut out)
        .map_err(|e| member_error(format!("{e:?}"), data.len()))?;
    out.truncate(len);
    // Members wait in a queue for the upload: keep only what they hold.
    out.shrink_to_fit();
    Ok(out)
}

fn deflate_level(level: u32) -> io::Result<CompressionLvl> {
    CompressionLvl::new(level as i32)
        .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))
}

fn member_error(why: String, len: usize) -> io::Error {
    io::Error::other(format!("deflate failed ({why}) on a {len} byte member"))
}

/// Whether deflate (the compressor's level) makes the samples of `data` at least
/// `MATCH_GAIN` smaller than Huffman coding alone does. Small members are not sampled: they
/// cost little either way.
fn matching_pays(deflater: &mut Compressor, data: &[u8], level: u32) -> io::Result<bool> {
    if data.len() < 4 * SAMPLE {
        return Ok(true);
    }
    let middle = data.len() / 2;
    let mut with_matches = 0;
    let mut huffman_only = 0;
    let mut buf = vec![0u8; deflater.deflate_compress_bound(SAMPLE)];
    for sample in [&data[..SAMPLE], &data[middle..middle + SAMPLE]] {
        with_matches += deflater
            .deflate_compress(sample, &mut buf)
            .map_err(|e| member_error(format!("{e:?}"), sample.len()))?;
        huffman_only += zlib_compress(sample, level, Strategy::HuffmanOnly, -15)?.len();
    }
    Ok((with_matches as f64) < (huffman_only as f64) * (1.0 - MATCH_GAIN))
}

/// A gzip member whose deflate stream uses Huffman codes only (no match search). The header
/// is made like libdeflate's (OS byte 255, "unknown"), so it does not depend on the build host.
fn huffman_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut member = zlib_compress(data, level, Strategy::HuffmanOnly, 31)?;
    if let Some(os) = member.get_mut(9) {
        *os = 255;
    }
    member.shrink_to_fit();
    Ok(member)
}

/// `data` compressed by zlib-rs; `window_bits` -15 is raw deflate, 31 a gzip member.
fn zlib_compress(
    data: &[u8],
    level: u32,
    strategy: Strategy,
    window_bits: i32,
) -> io::Result<Vec<u8>> {
    let config = DeflateConfig {
        window_bits,
        strategy,
        ..DeflateConfig::new(level as i32)
    };
    // The bound covers a zlib wrapper; a gzip wrapper is 12 bytes longer.
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 32];
    let (written, rc) = zlib_rs::compress_slice(&mut out, data, config);
    if rc != ReturnCode::Ok {
        return Err(member_error(format!("{rc:?}"), data.len()));
    }
    let len = written.len();
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

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
        assert!(!matching_pays(&mut Compressor::new(deflate_level(2).unwrap()), &data, 2).unwrap());
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
        assert!(matching_pays(&mut Compressor::new(deflate_level(2).unwrap()), &data, 2).unwrap());
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
