"""Memory of one training step per image (CPU, fp32): the peak resident memory of a forward + backward.

    python benchmarks/memory.py [--cases transfg transfg-checkpointing pim] [--batches 1 2]

Each measurement runs in a fresh interpreter (``ru_maxrss`` is a process's high-water mark): the model is built,
one forward + loss + backward runs on seeded images, and the peak resident set above the built model is reported.
The cost of one more image is the difference between batch 2 and batch 1 — what the parameters' gradients and the
process take once cancels out. Untrained weights (memory does not depend on them); 200 classes; the papers' sizes.
Prints a Markdown table (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES: dict[str, dict] = {
    "transfg": {"method": "transfg", "backbone": "vit_b16", "size": 448, "options": {"img_size": 448}},
    "transfg-checkpointing": {"method": "transfg", "backbone": "vit_b16", "size": 448,
                              "options": {"img_size": 448, "checkpointing": True}},
    "pim": {"method": "pim", "backbone": "swin_l384", "size": 384, "options": {"fpn_size": 1536}},
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(case: str, batch: int) -> dict[str, float]:
    """In this process: (MiB) resident after building the model, and the peak of one training step."""
    import torch

    from fgvc.models import create_model

    c = CASES[case]
    torch.manual_seed(0)
    model = create_model(c["method"], 200, backbone=c["backbone"], **c["options"]).train()
    built = _peak_mib()
    x = torch.randn(batch, 3, c["size"], c["size"])
    y = torch.arange(batch) % 200
    loss, _ = model.loss(model(x), y)
    loss.backward()
    return {"built": built, "peak": _peak_mib()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--batches", nargs=2, type=int, default=[1, 2], metavar=("B1", "B2"))
    parser.add_argument("--one", nargs=2, metavar=("CASE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return 0
    b1, b2 = args.batches
    print(f"| case | backbone, size | peak at batch {b1} (MiB) | above the model (MiB) | peak at batch {b2} (MiB) "
          f"| one more image (MiB) |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        runs = [json.loads(subprocess.run([sys.executable, __file__, "--one", case, str(b)], check=True,
                                          capture_output=True, text=True).stdout) for b in (b1, b2)]
        per_image = (runs[1]["peak"] - runs[0]["peak"]) / (b2 - b1)
        c = CASES[case]
        print(f"| {case} | {c['backbone']}, {c['size']} px | {runs[0]['peak']:,.0f} | "
              f"{runs[0]['peak'] - runs[0]['built']:,.0f} | {runs[1]['peak']:,.0f} | {per_image:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
