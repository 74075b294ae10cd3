//! Measures layer tar + diffID throughput and gzip/zstd compression speed on a directory:
//! `cargo run --release -p rbuild-store --example layer_bench -- <tree> <store root>`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use rbuild_store::{
    write_layer_tar, Compression, Descriptor, Store, TarOptions, MEDIA_TYPE_OCI_LAYER,
};

struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn mbs(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(tree), Some(root)) = (args.next(), args.next()) else {
        return Err("usage: layer_bench <tree> <store root>".into());
    };
    let store = Store::open(&root)?;

    let t = Instant::now();
    let mut sink = Sink(0);
    let stats = write_layer_tar(&tree, &mut sink, &TarOptions::default())?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "tar only (to /dev/null): {} entries, {} MB in {s:.2}s = {:.0} MB/s",
        stats.entries,
        sink.0 / 1_000_000,
        mbs(sink.0, s)
    );

    let t = Instant::now();
    let mut w = store.blobs().writer()?;
    write_layer_tar(&tree, &mut w, &TarOptions::default())?;
    let size = w.written();
    let digest = w.commit(None)?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "tar + sha256 + blob write + fsync: {size} bytes in {s:.2}s = {:.0} MB/s (diffID {digest})",
        mbs(size, s)
    );

    let layer = Descriptor::new(MEDIA_TYPE_OCI_LAYER, digest, size);
    for c in [Compression::Gzip, Compression::Zstd] {
        let t = Instant::now();
        let d = store.compressed_layer(&layer, rbuild_store::LayerCompression::new(c, None)?)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{c:?}: {} -> {} bytes (ratio {:.3}) in {s:.2}s = {:.0} MB/s of input",
            size,
            d.size,
            d.size as f64 / size as f64,
            mbs(size, s)
        );
        let t = Instant::now();
        store.compressed_layer(&layer, rbuild_store::LayerCompression::new(c, None)?)?;
        println!(
            "{c:?} again (remembered): {:.3}s",
            t.elapsed().as_secs_f64()
        );
    }
    let data = std::fs::read(store.blobs().path(&layer.digest))?;
    for threads in [1, 2] {
        let t = Instant::now();
        let mut out = Sink(0);
        rbuild_store::gzip_parallel(&mut &data[..], &mut out, rbuild_store::GZIP_LEVEL, threads)?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "gzip -6 members, {threads} thread(s): {:.0} MB/s",
            mbs(size, s)
        );
        let t = Instant::now();
        let mut out = Sink(0);
        rbuild_store::zstd_compress(&mut &data[..], &mut out, rbuild_store::ZSTD_LEVEL, threads)?;
        let s = t.elapsed().as_secs_f64();
        println!("zstd -3, {threads} worker(s): {:.0} MB/s", mbs(size, s));
    }
    Ok(())
}
