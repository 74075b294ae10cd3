//! Measures gzip (rbuild's members, and zlib-rs, libdeflate and ISA-L alone) and zstd speed
//! and size per level on one input file, one thread at a time, in CPU time:
//! `cargo run --release -p rbuild-store --example compress_levels -- FILE`.

use std::io::{self, Write};
use std::time::Duration;

/// CPU time of this process (gzip_parallel compresses on scoped threads).
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .expect("usage: compress_levels FILE");
    let data = std::fs::read(&path)?;
    let mib = data.len() as f64 / (1 << 20) as f64;
    println!("{path}: {mib:.0} MiB");
    println!("| format | level | CPU s | MiB/s per core | compressed MiB | ratio |");
    println!("|---|---|---|---|---|---|");
    for level in [1u32, 2, 3, 4, 5, 6] {
        let mut out = Counter(0);
        let start = process_cpu();
        rbuild_store::gzip_parallel(&mut data.as_slice(), &mut out, level, 1)?;
        report("gzip", level as i32, process_cpu() - start, mib, out.0);
    }
    {
        // Huffman-only (no match search), one gzip member per 4 MiB as gzip_parallel makes.
        let start = process_cpu();
        let mut out = 0u64;
        for chunk in data.chunks(4 << 20) {
            let mut buf = vec![0u8; chunk.len() + chunk.len() / 8 + 1024];
            let config = zlib_rs::DeflateConfig {
                window_bits: 31,
                strategy: zlib_rs::Strategy::HuffmanOnly,
                ..zlib_rs::DeflateConfig::new(6)
            };
            let (c, _) = zlib_rs::compress_slice(&mut buf, chunk, config);
            out += c.len() as u64;
        }
        report("gzip huffman-only", 6, process_cpu() - start, mib, out);
    }
    for level in [1i32, 2, 4, 6] {
        // libdeflate, whole-buffer, one gzip member per 4 MiB.
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
        let start = process_cpu();
        let mut out = 0u64;
        for chunk in data.chunks(4 << 20) {
            let mut buf = vec![0u8; c.gzip_compress_bound(chunk.len())];
            out += c.gzip_compress(chunk, &mut buf).unwrap() as u64;
        }
        report("gzip libdeflate", level, process_cpu() - start, mib, out);
    }
    for level in [isal::CompressionLevel::One, isal::CompressionLevel::Three] {
        // ISA-L (igzip), stateless whole-buffer, one gzip member per 4 MiB.
        let start = process_cpu();
        let mut out = 0u64;
        for chunk in data.chunks(4 << 20) {
            let mut buf = vec![0u8; chunk.len() + chunk.len() / 8 + 4096];
            out += isal::compress_into(chunk, &mut buf, level, isal::Codec::Gzip).unwrap() as u64;
        }
        report("gzip isa-l", level as i32, process_cpu() - start, mib, out);
    }
    {
        use sha2::Digest;
        let start = process_cpu();
        let d = sha2::Sha256::digest(&data);
        std::hint::black_box(d);
        report("sha256", 0, process_cpu() - start, mib, data.len() as u64);
    }
    for level in [1i32, 3] {
        let mut out = Counter(0);
        let start = process_cpu();
        rbuild_store::zstd_compress(&mut data.as_slice(), &mut out, level, 1)?;
        report("zstd", level, process_cpu() - start, mib, out.0);
    }
    Ok(())
}

fn report(format: &str, level: i32, cpu: Duration, mib: f64, out: u64) {
    let out_mib = out as f64 / (1 << 20) as f64;
    println!(
        "| {format} | {level} | {:.2} | {:.0} | {out_mib:.1} | {:.3} |",
        cpu.as_secs_f64(),
        mib / cpu.as_secs_f64(),
        out_mib / mib
    );
}
