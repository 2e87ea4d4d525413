"""Bring Ray (and optuna, pydantic, fvcore and what they need) to the GPU machine, which has
no network and takes at most 64 MiB per call.

Here (with network):  python3 benchmarks/pydeps.py pack      # .whl/wheels/*.whl -> .whl/part.NN (<= 60 MiB each)
There (one part per call, back to back; the machine keeps ignored files while warm, ~30 s):
                      python3 benchmarks/pydeps.py unpack    # once every part is there: .pydeps/, ready to import

Wheels are fetched into .whl/wheels first (see gpu_session.sh's header, "Bringing Ray"). Unpacking
is a plain unzip of every wheel into .pydeps/ (no pip), file modes kept: Ray's gcs_server
and raylet must stay executable. gpu_session.sh puts .pydeps/ on PYTHONPATH.
Last line: ``pydeps: N wheels, M MiB``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART = 60 * 2**20


def pack(whl: Path) -> None:
    wheels = sorted((whl / "wheels").glob("*.whl"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for w in wheels:
            tar.add(w, arcname=w.name)
    data = buf.getvalue()
    for old in whl.glob("part.*"):
        old.unlink()
    for i in range(0, len(data), PART):
        (whl / f"part.{i // PART:02d}").write_bytes(data[i:i + PART])
    (whl / "SHA256").write_text(hashlib.sha256(data).hexdigest())
    print(f"pydeps: {len(wheels)} wheels, {len(data) / 2**20:.1f} MiB in {-(-len(data) // PART)} parts")


def unpack(whl: Path, target: Path) -> None:
    data = b"".join(p.read_bytes() for p in sorted(whl.glob("part.*")))
    expected = (whl / "SHA256").read_text().strip()
    if hashlib.sha256(data).hexdigest() != expected:
        sys.exit(f"parts do not join to the packed wheels (sha256 differs): {sorted(p.name for p in whl.glob('part.*'))}")
    target.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            with zipfile.ZipFile(tar.extractfile(member)) as wheel:
                for info in wheel.infolist():
                    path = Path(wheel.extract(info, target))
                    mode = info.external_attr >> 16
                    if mode and not info.is_dir():
                        path.chmod(mode & 0o777)
            n += 1
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"pydeps: {n} wheels, {size / 2**20:.0f} MiB unpacked into {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("--whl", type=Path, default=ROOT / ".whl")
    parser.add_argument("--target", type=Path, default=ROOT / ".pydeps")
    args = parser.parse_args()
    pack(args.whl) if args.action == "pack" else unpack(args.whl, args.target)


if __name__ == "__main__":
    main()
