"""Write ``gdopt/datasets/digits.npz`` from scikit-learn's bundled copy of the UCI digits.

The archive holds two arrays:

- ``images``: ``uint8`` of shape ``(1797, 64)``, the 8x8 images flattened row by row, with
  pixel counts 0..16;
- ``labels``: ``uint8`` of shape ``(1797,)``, the digit 0..9 of each image.

scikit-learn is needed only to run this script; gdopt itself reads the ``.npz`` with NumPy.
The output is deterministic: the arrays are written with :func:`numpy.savez_compressed`, then
the zip members are re-stored with a fixed timestamp (1980-01-01) and a fixed compression
level, so running the script twice gives byte-identical files (for a given zlib).

Usage::

    python scripts/make_digits.py            # writes gdopt/datasets/digits.npz, prints SHA-256
    python scripts/make_digits.py --check    # verifies the bundled file's arrays match
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "gdopt" / "datasets" / "digits.npz"


def digits_arrays() -> dict[str, np.ndarray]:
    """The images and labels from ``sklearn.datasets.load_digits``, as ``uint8``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = np.asarray(bunch.data)
    target = np.asarray(bunch.target)
    if data.shape != (1797, 64) or target.shape != (1797,):
        raise RuntimeError(f"unexpected shapes {data.shape}, {target.shape} from scikit-learn")
    images = data.astype(np.uint8)
    labels = target.astype(np.uint8)
    if not (np.array_equal(images, data) and images.max() <= 16 and labels.max() <= 9):
        raise RuntimeError("scikit-learn's digits are not integer pixels 0..16 / labels 0..9")
    return {"images": images, "labels": labels}


def deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed`` bytes with every zip member's timestamp fixed."""
    raw = io.BytesIO()
    np.savez_compressed(raw, **arrays)
    raw.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w") as dst:
        for name in sorted(src.namelist()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, src.read(name), compresslevel=9)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the .npz")
    parser.add_argument(
        "--check", action="store_true", help="compare the existing file with scikit-learn's copy"
    )
    args = parser.parse_args(argv)
    arrays = digits_arrays()
    if args.check:
        with np.load(args.out) as f:
            same = all(np.array_equal(f[k], v) and f[k].dtype == v.dtype for k, v in arrays.items())
        print("arrays match" if same else "arrays DIFFER", args.out)
        return 0 if same else 1
    blob = deterministic_npz(arrays)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob)} bytes)")
    print(f"sha256 {hashlib.sha256(blob).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
