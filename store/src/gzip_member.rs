//! One gzip member of a pushed layer: ISA-L's fastest level, unless samples of the member
//! show that libdeflate at the asked level makes it at least 3 % smaller.
//!
//! Both compress a whole buffer at once, which is what an independent member is. ISA-L
//! (igzip) level 1 runs ~600 MiB/s per core on base64-like text and ~400 on layer tars, but
//! its match search is shallow: tars come out 8-10 % bigger than with libdeflate level 2
//! (~125 MiB/s per core, about zlib level 5's size, buildah's default). On text without
//! repeats (base64, hex, random identifiers) matching gains nothing and both give the
//! Huffman-coded size, so the fast one is kept. The choice depends only on the member's
//! bytes, so the output stays deterministic. Figures: `bench/README.md`.
//!
//! ISA-L is the store's `isal` feature (on by default; the rbuild binary turns it on).
//! Without it (the fuzz build: ISA-L's configure refuses the sanitizer's flags) every
//! member is libdeflate's.

use std::io;

use libdeflater::{CompressionLvl, Compressor};

/// Bytes per sample; two samples (the start and the middle of a member).
#[cfg(feature = "isal")]
const SAMPLE: usize = 32 << 10;
/// libdeflate must save at least this share of ISA-L's size to be worth its time.
#[cfg(feature = "isal")]
const DEFLATE_GAIN: f64 = 0.03;
/// Offset of the OS byte in a gzip header.
const GZIP_OS: usize = 9;

/// `data` as one gzip member (mtime 0, no name, OS byte 255) at `level` (0..=9).
pub(crate) fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut deflater = Compressor::new(deflate_level(level)?);
    let mut member = if let Some(fast) = fast_member(&mut deflater, data, level)? {
        fast
    } else {
        let mut out = vec![0u8; deflater.gzip_compress_bound(data.len())];
        let len = deflater
            .gzip_compress(data, &mut out)
            .map_err(|e| member_error(format!("{e:?}"), data.len()))?;
        out.truncate(len);
        out
    };
    // Both write mtime 0 and no name; the OS byte is set here so that it never depends on
    // the library's build.
    if let Some(os) = member.get_mut(GZIP_OS) {
        *os = 255;
    }
    // Members wait in a queue for the upload: keep only what they hold.
    member.shrink_to_fit();
    Ok(member)
}

/// ISA-L's member of `data` where libdeflate at `level` would not pay for its time;
/// `None`: libdeflate's.
#[cfg(feature = "isal")]
fn fast_member(deflater: &mut Compressor, data: &[u8], level: u32) -> io::Result<Option<Vec<u8>>> {
    if level >= 1 && !deflate_pays(deflater, data)? {
        return isal_compress(data, isal::Codec::Gzip).map(Some);
    }
    Ok(None)
}

/// Without ISA-L every member is libdeflate's.
#[cfg(not(feature = "isal"))]
fn fast_member(_: &mut Compressor, _: &[u8], _: u32) -> io::Result<Option<Vec<u8>>> {
    Ok(None)
}

fn deflate_level(level: u32) -> io::Result<CompressionLvl> {
    CompressionLvl::new(level as i32)
        .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))
}

fn member_error(why: String, len: usize) -> io::Error {
    io::Error::other(format!("deflate failed ({why}) on a {len} byte member"))
}

/// Whether libdeflate (the compressor's level) makes the samples of `data` at least
/// `DEFLATE_GAIN` smaller than ISA-L level 1 does. Small members are not sampled: they
/// cost little either way, and get the smaller form.
#[cfg(feature = "isal")]
fn deflate_pays(deflater: &mut Compressor, data: &[u8]) -> io::Result<bool> {
    if data.len() < 4 * SAMPLE {
        return Ok(true);
    }
    let middle = data.len() / 2;
    let mut thorough = 0;
    let mut fast = 0;
    let mut buf = vec![0u8; deflater.deflate_compress_bound(SAMPLE)];
    for sample in [&data[..SAMPLE], &data[middle..middle + SAMPLE]] {
        thorough += deflater
            .deflate_compress(sample, &mut buf)
            .map_err(|e| member_error(format!("{e:?}"), sample.len()))?;
        fast += isal_compress(sample, isal::Codec::Deflate)?.len();
    }
    Ok((thorough as f64) < (fast as f64) * (1.0 - DEFLATE_GAIN))
}

/// `data` compressed by ISA-L at level 1 in one stateless call (raw deflate or a gzip
/// member). The buffer has room for stored blocks, which ISA-L falls back to.
#[cfg(feature = "isal")]
fn isal_compress(data: &[u8], codec: isal::Codec) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; data.len() + data.len() / 8 + 4096];
    let len = isal::compress_into(data, &mut out, isal::CompressionLevel::One, codec)
        .map_err(|e| member_error(e.to_string(), data.len()))?;
    out.truncate(len);
    Ok(out)
}

#[cfg(all(test, feature = "isal"))]
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

    fn pays(data: &[u8]) -> bool {
        deflate_pays(&mut Compressor::new(deflate_level(2).unwrap()), data).unwrap()
    }

    fn flate2_gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::new(level));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn text_without_repeats_takes_the_fast_path_at_the_same_size() {
        let data = base64_text(1 << 20);
        assert!(!pays(&data));
        let member = gzip_member(&data, 2).unwrap();
        assert_eq!(gunzip(&member), data);
        assert_eq!(member, isal_member_with_os_255(&data));
        assert_eq!(&member[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(member[3], 0, "no name, no extra fields");
        assert_eq!(member[GZIP_OS], 255, "OS byte");
        // As small as deflate with match search (6 bits per symbol of 64).
        let searched = flate2_gzip(&data, 6);
        assert!(
            member.len() as f64 <= searched.len() as f64 * 1.01,
            "{} vs {}",
            member.len(),
            searched.len()
        );
    }

    fn isal_member_with_os_255(data: &[u8]) -> Vec<u8> {
        let mut m = isal_compress(data, isal::Codec::Gzip).unwrap();
        m[GZIP_OS] = 255;
        m
    }

    /// A real binary (this test's own executable) keeps libdeflate: its matches are worth more
    /// than 3 %, and the member is at least as small as zlib's level 2.
    #[test]
    fn binaries_keep_libdeflate() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let data = &exe[..exe.len().min(4 << 20)];
        assert!(data.len() >= 4 * SAMPLE, "{}", data.len());
        assert!(pays(data));
        let member = gzip_member(data, 2).unwrap();
        assert_eq!(gunzip(&member), data);
        assert_ne!(member, isal_member_with_os_255(data));
        assert_eq!(&member[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(member[GZIP_OS], 255, "OS byte");
        assert!(member.len() <= flate2_gzip(data, 2).len());
    }

    #[test]
    fn repetitive_data_round_trips_small() {
        let mut data = Vec::new();
        let mut i = 0u32;
        while data.len() < 1 << 20 {
            data.extend_from_slice(
                format!("/usr/lib/x86_64-linux-gnu/lib{}.so.6\n", i % 300).as_bytes(),
            );
            i += 1;
        }
        let member = gzip_member(&data, 2).unwrap();
        assert_eq!(gunzip(&member), data);
        assert!(member.len() < data.len() / 10, "{}", member.len());
    }

    /// Random bytes: neither compressor can shrink them; ISA-L falls back to stored blocks
    /// in the buffer we give it, so the member is barely bigger than its input.
    #[test]
    fn incompressible_data_round_trips_near_its_size() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let data: Vec<u8> = (0..(4 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        for level in [1, 2, 9] {
            let member = gzip_member(&data, level).unwrap();
            assert_eq!(gunzip(&member), data, "level {level}");
            assert!(
                member.len() <= data.len() + data.len() / 100,
                "level {level}: {} for {}",
                member.len(),
                data.len()
            );
        }
    }

    #[test]
    fn small_and_stored_members_are_plain_deflate() {
        let data = base64_text(1000);
        for level in [0, 1, 9] {
            assert_eq!(gunzip(&gzip_member(&data, level).unwrap()), data);
        }
        assert_eq!(gunzip(&gzip_member(&[], 2).unwrap()), b"");
        // Level 0 stores: a little bigger than the input, and no ISA-L.
        let big = base64_text(1 << 20);
        assert!(gzip_member(&big, 0).unwrap().len() > big.len());
    }
}
