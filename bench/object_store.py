"""Publishing a job's directory to an object store against publishing it on a local disk.

The object store is moto's S3 server on 127.0.0.1 (a Python process: this measures the cost
of ftqueue's protocol, a temporary prefix, a manifest with sha256 and a server-side copy,
over a local server, not a real S3 link). The local figure is today's path: the staging
directory copied (as a worker writes it) and renamed into place with fsync.

Prints one row per directory shape: MB, seconds to publish locally and to the store (upload,
manifest, copy into place), MB/s of each, and the ratio; then the time for a reader to
download and check the published directory into an empty cache. Runs from the repository root:
    python bench/object_store.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftqueue.artifacts import objects, publishing

#: (label, file count, bytes each): a LoRA adapter of a small BERT (one weights file of a
#: few MB plus small JSON files), a large adapter, and a predictions directory of many files.
SHAPES = [("adapter 3 MB", 3, 1024**2), ("adapter 48 MB", 3, 16 * 1024**2),
          ("64 files x 256 kB", 64, 256 * 1024)]  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make(directory: Path, count: int, size: int) -> None:
    directory.mkdir(parents=True)
    for i in range(count):
        (directory / f"part-{i:03d}.bin").write_bytes(os.urandom(size))


def _local(source: Path, root: Path, n: int) -> float:
    final = root / "adapters" / f"job-{n}"
    start = time.perf_counter()
    staging = publishing.new_staging_dir(final.parent, final.name)
    shutil.copytree(source, staging, dirs_exist_ok=True)
    publishing.publish_dir(staging, final)
    return time.perf_counter() - start


def _remote(source: Path, root: objects.ObjectRoot, n: int) -> float:
    start = time.perf_counter()
    objects.publish(objects.upload(root, source, f"adapters/job-{n}"))
    return time.perf_counter() - start


def _download(root: objects.ObjectRoot, n: int, into: Path) -> float:
    start = time.perf_counter()
    objects.download_dir(root, f"adapters/job-{n}", into)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per shape (median shown)")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    port = _port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        root = objects.ObjectRoot("s3://bench/runs", f"http://127.0.0.1:{port}")
        root.filesystem().mkdir("bench")
        print(f"{'directory':<20} {'MB':>6} {'local s':>8} {'local MB/s':>10} {'S3 s':>7} "
              f"{'S3 MB/s':>8} {'S3/local':>8} {'download s':>10}")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            n = 0
            for label, count, size in SHAPES:
                source = Path(tmp, label.replace(" ", "_"))
                _make(source, count, size)
                mb = count * size / 1024**2
                local, remote, down = [], [], []
                for _ in range(args.repeat):
                    n += 1
                    local.append(_local(source, Path(tmp, "local"), n))
                    remote.append(_remote(source, root, n))
                    down.append(_download(root, n, Path(tmp, f"cache-{n}")))
                lo, re_, dn = (statistics.median(v) for v in (local, remote, down))
                print(f"{label:<20} {mb:>6.0f} {lo:>8.3f} {mb / lo:>10.0f} {re_:>7.3f} "
                      f"{mb / re_:>8.0f} {re_ / lo:>7.1f}x {dn:>10.3f}")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()
