#!/usr/bin/env python3
"""Deterministic inputs for bench/run: build contexts and an offline busybox OCI layout.

Every byte comes from random.Random(SEED), so two machines generate identical contexts.
Dockerfiles are written as Dockerfile.in with FROM BASE_IMAGE; bench/run fills in the base.
Usage:
  gen.py small DIR                      6-step multi-stage context (late/ is COPYed last)
  gen.py runs DIR N                     FROM + N trivial RUN steps
  gen.py big DIR FILES BYTES            FILES files totalling BYTES under data/, COPYed whole
  gen.py ignored DIR FILES              FILES tiny files, 98% excluded by .dockerignore
  gen.py ci DIR                         a CI step: 2,000 source files (60 MiB) COPYed, a RUN writing 40 MiB
  gen.py unpack DIR                     FROM + RUN true: the first RUN on a freshly pulled base
  gen.py files DIR N                    N small files (64-255 bytes), 1,000 a directory, all COPYed
  gen.py layers DIR N                   FROM + N RUN steps, each one layer holding one small file
  gen.py blob DIR BYTES                 BYTES in files of at most 256 MiB under data/, COPYed whole
  gen.py busybox LAYOUT [BINARY ARCH]   OCI layout of /bin/busybox (busybox-static), tag latest
  gen.py emulated DIR                   one looping RUN on an arm64 base (BASE_ARM64)
"""

import base64
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile

SEED = 20261123


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def text_like(rng, n):
    """n bytes of base64 text from seeded randomness: compresses to ~3/4, like mixed sources."""
    raw = rng.randbytes(n * 3 // 4 + 3)
    return base64.b64encode(raw)[:n]


def small(d):
    rng = random.Random(SEED)
    for i in range(20):
        write(f"{d}/src/f{i:02}.txt", text_like(rng, 2000))
    for i in range(5):
        write(f"{d}/late/l{i}.txt", text_like(rng, 500))
    write(
        f"{d}/Dockerfile.in",
        b"FROM BASE_IMAGE AS build\n"
        b"COPY src/ /src/\n"
        b"RUN cat /src/*.txt > /out.txt\n"
        b"FROM BASE_IMAGE\n"
        b"COPY --from=build /out.txt /app/out.txt\n"
        b"RUN wc -c /app/out.txt > /app/size\n"
        b"ENV APP=/app\n"
        b"COPY late/ /app/late/\n",
    )


def runs(d, n):
    lines = ["FROM BASE_IMAGE"] + [f"RUN echo {i} > /step{i}" for i in range(int(n))]
    write(f"{d}/Dockerfile.in", ("\n".join(lines) + "\n").encode())


def big(d, files, total):
    files, total = int(files), int(total)
    rng = random.Random(SEED + 1)
    weights = [rng.random() + 0.05 for _ in range(files)]
    scale = total / sum(weights)
    sizes = [int(w * scale) for w in weights]
    sizes[-1] += total - sum(sizes)
    for i, size in enumerate(sizes):
        write(f"{d}/data/d{i // 200:03}/f{i:05}.bin", text_like(rng, size))
    write(f"{d}/Dockerfile.in", b"FROM BASE_IMAGE\nCOPY data/ /data/\n")


def ignored(d, files):
    files = int(files)
    rng = random.Random(SEED + 2)
    kept = files // 50  # 2% reach the build
    for i in range(files):
        body = text_like(rng, 64 + rng.randrange(192))
        if i < kept:
            write(f"{d}/src/m{i // 100:03}/s{i:05}.txt", body)
        else:
            write(f"{d}/node_modules/p{i // 500:03}/lib/x{i:06}.js", body)
    write(f"{d}/.dockerignore", b"node_modules\n**/*.log\n.git\n")
    write(f"{d}/Dockerfile.in", b"FROM BASE_IMAGE\nCOPY . /app/\n")


def ci(d):
    """The issue-22 CI step: COPY a 2,000-file 60 MiB source tree, then a RUN writing 40 MiB."""
    rng = random.Random(SEED + 3)
    files, total = 2000, 60 << 20
    weights = [rng.random() + 0.05 for _ in range(files)]
    sizes = [int(w * total / sum(weights)) for w in weights]
    sizes[-1] += total - sum(sizes)
    for i, size in enumerate(sizes):
        write(f"{d}/src/pkg{i // 100:02}/m{i:04}.go", text_like(rng, size))
    write(
        f"{d}/Dockerfile.in",
        b"FROM BASE_IMAGE\n"
        b"WORKDIR /src\n"
        b"COPY src/ /src/\n"
        b"RUN cat pkg*/*.go | head -c 41943040 > /usr/local/bin/app && chmod 755 /usr/local/bin/app\n"
        b'CMD ["/usr/local/bin/app"]\n',
    )


def unpack(d):
    write(f"{d}/Dockerfile.in", b"FROM BASE_IMAGE\nRUN true\n")


def files(d, n):
    """The scaling curve's context: n small files, all of them reaching the build."""
    n = int(n)
    rng = random.Random(SEED + 4)
    for i in range(n):
        write(f"{d}/src/d{i // 1000:04}/f{i:07}.txt", text_like(rng, 64 + rng.randrange(192)))
    write(f"{d}/Dockerfile.in", b"FROM BASE_IMAGE\nCOPY src/ /app/\n")


def layers(d, n):
    lines = ["FROM BASE_IMAGE"] + [f"RUN echo {i} > /layer{i}" for i in range(int(n))]
    write(f"{d}/Dockerfile.in", ("\n".join(lines) + "\n").encode())


def blob(d, total):
    """The scaling curve's layer size: total bytes of base64 text in files of <= 256 MiB."""
    total = int(total)
    rng = random.Random(SEED + 5)
    chunk, i = 256 << 20, 0
    while total > 0:
        n = min(chunk, total)
        os.makedirs(f"{d}/data", exist_ok=True)
        with open(f"{d}/data/part{i:03}.txt", "wb") as f:
            left = n
            while left > 0:
                k = min(left, 16 << 20)
                f.write(text_like(rng, k))
                left -= k
        total -= n
        i += 1
    write(f"{d}/Dockerfile.in", b"FROM BASE_IMAGE\nCOPY data/ /data/\n")


def emulated(d):
    """One RUN step that loops in busybox's shell, for an arm64 base run under emulation."""
    lines = [
        "FROM BASE_ARM64",
        "RUN i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; uname -m > /arch",
    ]
    write(f"{d}/Dockerfile.in", ("\n".join(lines) + "\n").encode())


def busybox(layout, binary="/bin/busybox", arch="amd64"):
    """Same shape as tests/util/busybox.rs: /bin/busybox, a symlink per applet, passwd/group.
    BINARY and ARCH make the image of another architecture's busybox-static (the applet
    list is the host's: the same Debian version)."""
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, check=True)
    names = sorted(a for a in applets.stdout.decode().split() if a and a != "busybox")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name, kind, mode, data=b"", link=""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size = kind, mode, 1_700_000_000, len(data)
            info.linkname = link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for dname in ["bin", "etc", "root", "var", "home"]:
            add(dname, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        with open(binary, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for a in names:
            add(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    layer_tar = buf.getvalue()
    layer = gzip.compress(layer_tar, compresslevel=6, mtime=0)
    blobs = f"{layout}/blobs/sha256"

    def put(data):
        h = hashlib.sha256(data).hexdigest()
        write(f"{blobs}/{h}", data)
        return f"sha256:{h}", len(data)

    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    layer_digest, layer_size = put(layer)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "busybox-static (bench/gen.py)"}],
        }
    ).encode()
    config_digest, config_size = put(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
        }
    ).encode()
    manifest_digest, manifest_size = put(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    write(f"{layout}/index.json", json.dumps(index).encode())
    write(f"{layout}/oci-layout", b'{"imageLayoutVersion":"1.0.0"}')


if __name__ == "__main__":
    {"small": small, "runs": runs, "big": big, "ignored": ignored, "ci": ci, "unpack": unpack,
     "files": files, "layers": layers, "blob": blob, "busybox": busybox, "emulated": emulated}[sys.argv[1]](*sys.argv[2:])
