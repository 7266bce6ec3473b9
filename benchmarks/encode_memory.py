"""Peak host memory of filling the embedding cache on a CPU, per SAM variant.

Each case runs in a fresh process: build the variant with random weights (the memory
of encoding does not depend on their values), then encode ``--images`` photos of VOC's
size through :class:`helpers.sam.embeddings.EmbeddingCache` and report the rise of the
process's peak resident memory (``VmHWM``) over what the built model already held:

- ``course``: the cache as the course runs it on a CPU, one image per encoder call;
- ``batch_4``: four images per call (what the cache did before), for vit_b only.

The images are random (the encoder's memory does not depend on the pixels). Prints one
JSON object; ``python benchmarks/encode_memory.py [--variants vit_b vit_l vit_h]``.
"""

import argparse
import json
import subprocess
import sys

from _results import save

CHILD = """
import json, sys, tempfile
import numpy as np, torch
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.model import build_sam

def peak_mib():
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

variant, n, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sam = build_sam(variant).eval()
rng = np.random.default_rng(0)
images = [rng.integers(0, 255, (375, 500, 3), dtype=np.uint8) for _ in range(n)]
model_mib = peak_mib()
with tempfile.TemporaryDirectory() as tmp:
    EmbeddingCache(tmp, sam).get_many(
        images, batch_size=None if batch == "course" else int(batch), show_progress=False
    )
rise = round(peak_mib() - model_mib)
print(json.dumps({"model_mib": round(model_mib), "encoding_rise_mib": rise}))
"""


def measure(variant: str, n: int, batch: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(n), batch],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    result = {"images": args.images, "variants": {}}
    for variant in args.variants:
        row = {"course": measure(variant, args.images, "course")}
        if variant == "vit_b":
            row["batch_4"] = measure(variant, max(args.images, 4), "4")
        result["variants"][variant] = row
        print(variant, json.dumps(row), file=sys.stderr, flush=True)
    save("encode_memory", result)


if __name__ == "__main__":
    main()
