//! Hot paths of the builder: the context walk with `.dockerignore`, content hashing of COPY
//! sources (cold and through a warm stat cache), and the step cache-key encoder. Inputs are
//! small so `cargo bench -- --quick` stays short.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rbuild_builder::context::{
    digest_sources, hash_file, select_sources, ContextFiles, IgnoreRules, StatCache,
};
use rbuild_builder::solver::KeyEncoder;

/// Deterministic file bodies from an xorshift stream.
fn body(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// `kept` files under src/ and `ignored` under node_modules/ (excluded by the rules).
fn make_context(root: &Path, kept: usize, ignored: usize) {
    for i in 0..kept + ignored {
        let rel = if i < kept {
            format!("src/m{:02}/s{i:05}.txt", i / 100)
        } else {
            format!("node_modules/p{:03}/lib/x{i:06}.js", i / 200)
        };
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("bench dir");
        std::fs::write(path, body(i as u64, 512)).expect("file");
    }
}

fn context_walk(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, ignored) = (100, 4900);
    make_context(dir.path(), kept, ignored);
    let rules = IgnoreRules::parse("node_modules\n**/*.log\n").expect("rules");
    let none = IgnoreRules::parse("").expect("rules");
    let mut g = c.benchmark_group("context_walk_5000_files");
    g.sample_size(10);
    g.bench_function("98pct_ignored", |b| {
        b.iter(|| ContextFiles::walk(dir.path(), &rules).expect("walk").len())
    });
    g.bench_function("no_ignore", |b| {
        b.iter(|| ContextFiles::walk(dir.path(), &none).expect("walk").len())
    });
    g.finish();
}

fn content_hashing(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = 1000;
    make_context(dir.path(), files, 0);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, body(99, 4 << 20)).expect("big file");
    let none = IgnoreRules::parse("").expect("rules");
    let ctx = ContextFiles::walk(dir.path(), &none).expect("walk");
    let sources = select_sources(&ctx, &["src"]).expect("select");

    let mut g = c.benchmark_group("content_hash");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(4 << 20));
    g.bench_function("hash_file_4MiB", |b| {
        b.iter(|| hash_file(&big).expect("hash"))
    });
    g.finish();

    let mut g = c.benchmark_group("digest_sources_1000_files");
    g.sample_size(10);
    g.bench_function("cold_stat_cache", |b| {
        b.iter(|| {
            let mut cache = StatCache::in_memory();
            digest_sources(&ctx, &sources, &none, &mut cache).expect("digest")
        })
    });
    let mut warm = StatCache::in_memory();
    digest_sources(&ctx, &sources, &none, &mut warm).expect("digest");
    g.bench_function("warm_stat_cache", |b| {
        b.iter(|| digest_sources(&ctx, &sources, &none, &mut warm).expect("digest"))
    });
    g.finish();
}

fn cache_key(c: &mut Criterion) {
    let env: Vec<(String, String)> = (0..8)
        .map(|i| (format!("VAR{i}"), format!("value-{i}")))
        .collect();
    let parent = KeyEncoder::new("FROM", None)
        .str("image", "sha256:0123456789abcdef")
        .clone()
        .finish();
    c.bench_function("cache_key_run_step", |b| {
        b.iter(|| {
            let mut e = KeyEncoder::new("RUN", Some(&parent));
            e.list("cmd", &["/bin/sh", "-c", "make -j2 && make install"])
                .pairs("env", &env)
                .opt("user", None)
                .str("workdir", "/src")
                .bool("network_none", false);
            e.finish()
        })
    });
}

criterion_group!(benches, context_walk, content_hashing, cache_key);
criterion_main!(benches);
