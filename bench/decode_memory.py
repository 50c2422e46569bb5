"""Peak memory of decoding small files that claim huge films: python bench/decode_memory.py [--tree PATH]

Builds, in a temporary folder, the decompression bombs that fit inside the 100-megapixel limit (a
10000 x 10000 WebP, RGBA PNG, 16-bit PNG and float TIFF of a few hundred KiB each), and the largest film of
each kind that the decode budget (core.imaging.budget.MAX_DECODE_BYTES) still accepts. Each file is decoded
in a fresh child process the way the app's prediction does it (`read_film_and_model_input(data, 224,
max_side=1024)`) and the way training and scans do (`load_image`); the peak resident memory
(resource.getrusage ru_maxrss, and the child's own high-water mark VmHWM as a check) is recorded minus
the child's baseline after importing the loader and reading the file; the files are built in another child,
so that no decoding child inherits the builder's peak (Linux keeps ru_maxrss across exec). Then four decodes of the same file run at once on four threads of one child, as four
sessions of one server would. Writes bench/results/decode_memory.json (with --tree, measures another
checkout of Paru, e.g. an older commit, and prints the figures without writing; with --compare OLD, each
file is also decoded once by the older checkout OLD, recorded as "before").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "bench" / "results" / "decode_memory.json"
TARGET_MIB = 600

CHILD = r"""
import resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
try:
    from core.imaging.loader import load_image, read_film_and_model_input
except ImportError:  # trees from before core.imaging was a package
    from core.imaging import load_image, read_film_and_model_input
data = open(sys.argv[2], "rb").read()
how, copies = sys.argv[3], int(sys.argv[4])
def decode(results, index):
    try:
        if how == "predict":
            read_film_and_model_input(data, 224, max_side=1024)
        else:
            load_image(data, 224)
        results[index] = "decoded"
    except Exception as error:
        results[index] = f"refused: {type(error).__name__}: {str(error)[:160]}"
def high_water():
    # Linux keeps ru_maxrss across exec (a child inherits its parent's peak); VmHWM belongs to this process.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base_hwm = high_water()
results = [None] * copies
started = time.perf_counter()
threads = [threading.Thread(target=decode, args=(results, i)) for i in range(copies)]
for thread in threads: thread.start()
for thread in threads: thread.join()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(round((peak - base) / 1024), round((high_water() - base_hwm) / 1024), round(seconds, 2), results[0], sep="\t")
"""


def _pattern(side: int) -> np.ndarray:
    """A blocky 8-bit pattern that compresses to a few hundred KiB even at 10000 x 10000."""
    ramp = np.arange(side) // 40 % 256
    return (np.add.outer(ramp, ramp) // 2).astype(np.uint8)


def build(folder: Path) -> dict[str, Path]:
    """The files to decode: the four bombs at 100 megapixels and the largest accepted film of each kind."""
    files = {}
    for tag, side, webp_side in (("bomb", 10000, 10000), ("largest accepted", 8000, 4600)):
        gray = _pattern(side)
        rgb = Image.merge("RGB", [Image.fromarray(gray)] * 3)
        webp = rgb if webp_side == side else Image.merge("RGB", [Image.fromarray(_pattern(webp_side))] * 3)
        path = files[f"WebP {webp_side}x{webp_side} RGB ({tag})"] = folder / f"{tag}-rgb.webp"
        webp.save(path, lossless=True, quality=0, method=0)
        path = files[f"PNG {side}x{side} RGBA ({tag})"] = folder / f"{tag}-rgba.png"
        Image.merge("RGBA", [Image.fromarray(gray)] * 3 + [Image.fromarray(255 - gray // 2)]).save(path)
        path = files[f"TIFF {side}x{side} 32-bit float ({tag})"] = folder / f"{tag}-float.tif"
        Image.fromarray(gray.astype(np.float32) / 255, "F").save(path, compression="tiff_adobe_deflate")
    # A 16-bit film of 10000 x 10000 is inside the budget, so it is both the bomb and the largest accepted.
    path = files["PNG 10000x10000 16-bit gray (bomb and largest accepted)"] = folder / "bomb-16bit.png"
    Image.fromarray(_pattern(10000).astype(np.uint16) * 257).save(path, compress_level=1)
    return files


def measure(tree: Path, path: Path, how: str, copies: int) -> dict:
    output = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(path), how, str(copies)],
                            capture_output=True, text=True, check=True).stdout.strip()
    peak, high_water, seconds, outcome = output.split("\t", 3)
    return {"peak_mib_above_baseline": int(peak), "vm_hwm_mib_above_baseline": int(high_water),
            "seconds": float(seconds), "outcome": outcome}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=PROJECT_ROOT, help="Paru checkout to measure")
    parser.add_argument("--no-four", action="store_true", help="skip the four-at-once measurements")
    parser.add_argument("--compare", type=Path, help="also decode each file once with this older checkout "
                                                      "(recorded as 'before')")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:  # the child that builds the files, so this process never holds their pixels
        print(json.dumps({name: str(path) for name, path in build(args.build).items()}))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        # Built in a child: Linux passes a parent's peak memory on to the children it starts.
        built = subprocess.run([sys.executable, __file__, "--build", folder], capture_output=True, text=True,
                               check=True).stdout
        files = {name: Path(path) for name, path in json.loads(built).items()}
        print(f"built {len(files)} files in {time.perf_counter() - started:.0f} s", flush=True)
        for name, path in files.items():
            row = {"file": name, "file_kib": round(path.stat().st_size / 1024)}
            for how in ("predict", "load_image"):
                row[how] = measure(args.tree, path, how, 1)
            if not args.no_four:
                row["predict_four_at_once"] = measure(args.tree, path, "predict", 4)
            if args.compare:
                row["before_predict"] = measure(args.compare, path, "predict", 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    one = [row[how]["peak_mib_above_baseline"] for row in rows for how in ("predict", "load_image")]
    report = {
        "what": "peak resident memory (MiB above the child's baseline) of decoding each file; predict = "
                "read_film_and_model_input(data, 224, max_side=1024) as the app does for an upload, load_image "
                "as training and scans do; four_at_once = four predict decodes on four threads of one process",
        "target_mib_one_decode": TARGET_MIB,
        "max_mib_one_decode": max(one),
        "max_mib_four_at_once": max((row.get("predict_four_at_once") or {}).get("peak_mib_above_baseline", 0)
                                    for row in rows),
        "files": rows,
    }
    if args.compare:
        report["before"] = {"tree": str(args.compare), "max_mib_one_decode": max(
            row["before_predict"]["peak_mib_above_baseline"] for row in rows)}
    if args.tree.resolve() == PROJECT_ROOT:
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
