//! Hot paths of the store: layer tar + diffID, gzip/zstd compression at the edge, and
//! build-cache lookups. Inputs are small (a few MiB) so `cargo bench -- --quick` stays short.

use std::io::{self, Write};
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rbuild_store::{
    gzip_parallel, write_layer_tar, write_layer_tar_with, zstd_compress, CacheRecord, Digest,
    ExternalFile, ExternalFiles, Store, TarOptions, CACHE_RECORD_VERSION, GZIP_LEVEL, ZSTD_LEVEL,
};
use sha2::{Digest as _, Sha256};

/// Deterministic text-like bytes (64-symbol alphabet from an xorshift stream): compresses
/// to about three quarters, like mixed sources.
fn text_like(seed: u64, n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x & 63) as usize]
        })
        .collect()
}

/// A tree of `files` files of `size` bytes in directories of 50.
fn make_tree(root: &Path, files: usize, size: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 50));
        std::fs::create_dir_all(&dir).expect("bench dir");
        std::fs::write(dir.join(format!("f{i:05}")), text_like(i as u64, size)).expect("file");
    }
}

/// A writer that only hashes (the diffID side of committing a layer).
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn layer_tar(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, size) = (400, 8 << 10);
    make_tree(dir.path(), files, size);
    let mut g = c.benchmark_group("layer_tar");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((files * size) as u64));
    g.bench_function("400x8KiB_tar_and_diffid", |b| {
        b.iter(|| {
            let mut w = HashWriter(Sha256::new());
            let stats = write_layer_tar(dir.path(), &mut w, &TarOptions::default()).expect("tar");
            (stats, Digest::from_hasher(w.0))
        })
    });
    // The COPY path: the same files as external files of an upper holding only the dirs.
    let upper = tempfile::tempdir().expect("tempdir");
    let mut external = ExternalFiles::new();
    for entry in walkdir::WalkDir::new(dir.path()).min_depth(1) {
        let entry = entry.expect("walk");
        let rel = entry
            .path()
            .strip_prefix(dir.path())
            .expect("rel")
            .to_path_buf();
        let meta = entry.metadata().expect("stat");
        if meta.is_dir() {
            std::fs::create_dir(upper.path().join(&rel)).expect("dir");
            continue;
        }
        let file = ExternalFile {
            source: entry.path().to_path_buf(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: meta.len(),
            link: None,
        };
        external.insert(rel, file);
    }
    g.bench_function("400x8KiB_external_tar_and_diffid", |b| {
        b.iter(|| {
            let mut w = HashWriter(Sha256::new());
            let options = TarOptions::default();
            let stats =
                write_layer_tar_with(upper.path(), &external, &mut w, &options).expect("tar");
            (stats, Digest::from_hasher(w.0))
        })
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let data = text_like(7, 8 << 20);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("compress_8MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(format!("gzip_parallel_l{GZIP_LEVEL}_t{threads}"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(data.len());
            gzip_parallel(&mut data.as_slice(), &mut out, GZIP_LEVEL, threads).expect("gzip");
            out.len()
        })
    });
    g.bench_function(format!("gzip_parallel_l{GZIP_LEVEL}_t1"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(data.len());
            gzip_parallel(&mut data.as_slice(), &mut out, GZIP_LEVEL, 1).expect("gzip");
            out.len()
        })
    });
    g.bench_function(format!("zstd_l{ZSTD_LEVEL}_t{threads}"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(data.len());
            zstd_compress(&mut data.as_slice(), &mut out, ZSTD_LEVEL, threads).expect("zstd");
            out.len()
        })
    });
    g.bench_function("sha256", |b| b.iter(|| Sha256::digest(&data)));
    g.finish();
}

fn cache_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let record = CacheRecord {
        version: CACHE_RECORD_VERSION,
        chain_id: None,
        layer: None,
        config_json: serde_json::json!({"config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]}}),
        created: "2026-11-23T00:00:00Z".into(),
    };
    let keys: Vec<Digest> = (0..200u32).map(|i| Digest::of(&i.to_be_bytes())).collect();
    for k in &keys {
        store.cache_put(k, &record).expect("cache_put");
    }
    let absent = Digest::of(b"absent");
    let mut g = c.benchmark_group("cache_get");
    g.bench_function("hit", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            store.cache_get(&keys[i]).expect("cache_get")
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| store.cache_get(&absent).expect("cache_get"))
    });
    g.bench_function("put", |b| {
        b.iter_batched(
            || Digest::of(&fresh_key_bytes()),
            |k| store.cache_put(&k, &record).expect("cache_put"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn fresh_key_bytes() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1 << 40);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b
}

criterion_group!(benches, layer_tar, compression, cache_lookup);
criterion_main!(benches);
