"""helpers.detection.roi_align vs torchvision's compiled CPU kernel at Mask R-CNN mask-head sizes.

For each feature-map size (``sizes``): both median times and ``ratio`` (ours over
torchvision's; below 1 means ours is faster), after checking both give the same output.
Boxes are drawn like Mask R-CNN proposals on an 800 x 800 image (sides log-uniform in
32..512 px, aspect 1:2 to 2:1), mapped onto the map by ``spatial_scale = size / 800``.

Then notebook 02's small-object experiment at its full size (``roundtrip``: ``--objects``
ellipses per half-height, at stride 8 and at stride 4, the mean IoU of each way of
pooling; :func:`helpers.detection.roi_roundtrip.roundtrip_experiment`).

    python benchmarks/roi_align.py [--sizes 50 100 200] [--rois 512] [--repeat 5]
"""

import argparse
import time

import torch
import torchvision
from _results import save

from helpers.detection.roi_align import roi_align
from helpers.detection.roi_roundtrip import roundtrip_experiment


def make_boxes(n_images: int, k: int, image_size: int, gen: torch.Generator) -> torch.Tensor:
    side = torch.exp(
        torch.empty(k).uniform_(
            torch.log(torch.tensor(32.0)), torch.log(torch.tensor(512.0)), generator=gen
        )
    )
    aspect = torch.exp(torch.empty(k).uniform_(-0.69, 0.69, generator=gen))
    bw, bh = side * aspect.sqrt(), side / aspect.sqrt()
    x0 = torch.rand(k, generator=gen) * (image_size - bw).clamp(min=1)
    y0 = torch.rand(k, generator=gen) * (image_size - bh).clamp(min=1)
    batch = torch.randint(0, n_images, (k,), generator=gen).float()
    return torch.stack([batch, x0, y0, x0 + bw, y0 + bh], dim=1)


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--rois", type=int, default=512)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--output", type=int, default=14)
    parser.add_argument("--sampling-ratio", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--objects", type=int, default=50)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    sizes = []
    for size in args.sizes:
        feat = torch.randn(args.images, args.channels, size, size, generator=gen)
        boxes = make_boxes(args.images, args.rois, 800, gen)
        kw = dict(
            output_size=args.output,
            spatial_scale=size / 800,
            sampling_ratio=args.sampling_ratio,
            aligned=True,
        )
        ours = roi_align(feat, boxes, **kw)
        ref = torchvision.ops.roi_align(feat, boxes, **kw)
        max_diff = (ours - ref).abs().max().item()
        t_tv = median_time(lambda: torchvision.ops.roi_align(feat, boxes, **kw), args.repeat)
        t_ours = median_time(lambda: roi_align(feat, boxes, **kw), args.repeat)
        sizes.append(
            {
                "feature_map": [args.images, args.channels, size, size],
                "torchvision_s": round(t_tv, 4),
                "ours_s": round(t_ours, 4),
                "ratio": round(t_ours / t_tv, 3),
                "max_abs_diff": max_diff,
            }
        )
    roundtrip = {
        f"stride_{stride}": {
            str(r): {k: round(v, 3) for k, v in row.items()}
            for r, row in roundtrip_experiment(n_objects=args.objects, stride=stride).items()
        }
        for stride in (8, 4)
    }
    save(
        "roi_align",
        {
            "rois": args.rois,
            "output": args.output,
            "sampling_ratio": args.sampling_ratio,
            "repeat": args.repeat,
            "threads": torch.get_num_threads(),
            "sizes": sizes,
            "objects": args.objects,
            "roundtrip": roundtrip,
        },
    )


if __name__ == "__main__":
    main()
