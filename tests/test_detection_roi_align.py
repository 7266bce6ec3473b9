"""helpers.detection.roi_align against torchvision.ops (the oracle) over many random cases."""

import pytest
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import LevelMapper

from helpers.detection.roi_align import fpn_levels, roi_align, roi_pool

SCALES = [1.0, 0.5, 0.25, 1 / 8, 1 / 16, 1 / 32]


def random_case(seed: int, dtype):
    """Feature maps and boxes covering the hard cases: boxes partly or fully outside the
    map, zero width or height, tiny and huge boxes, several images per batch."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 4, (1,), generator=g))
    c = int(torch.randint(1, 5, (1,), generator=g))
    h, w = (int(v) for v in torch.randint(1, 24, (2,), generator=g))
    scale = SCALES[seed % len(SCALES)]
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    k = int(torch.randint(1, 16, (1,), generator=g))
    extent = torch.tensor([w, h], dtype=dtype) / scale
    xy = (torch.rand(k, 2, generator=g, dtype=dtype) * 1.8 - 0.4) * extent  # may start outside
    wh = torch.rand(k, 2, generator=g, dtype=dtype) ** 3 * extent * 1.5  # tiny .. huge
    wh[0::5, 0] = 0  # zero width
    wh[1::5, 1] = 0  # zero height
    if k > 2:
        xy[2] = extent * 1.2  # entirely outside
    batch = torch.randint(0, n, (k, 1), generator=g).to(dtype)
    rois = torch.cat([batch, xy, xy + wh], dim=1)
    out = (int(torch.randint(1, 8, (1,), generator=g)), int(torch.randint(1, 8, (1,), generator=g)))
    return x, rois, out, scale


CASES = [
    (seed, sr, aligned) for seed in range(24) for sr in (-1, 1, 2, 4) for aligned in (False, True)
]


@pytest.mark.parametrize("seed,sampling_ratio,aligned", CASES)
def test_roi_align_forward_and_gradient_equal_torchvision_float64(seed, sampling_ratio, aligned):
    x, rois, out, scale = random_case(seed, torch.float64)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    a = roi_align(x1, rois, out, scale, sampling_ratio, aligned)
    b = torchvision.ops.roi_align(x2, rois, out, scale, sampling_ratio, aligned)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert (a - b).abs().max() <= 1e-10
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    assert (x1.grad - x2.grad).abs().max() <= 1e-10


@pytest.mark.parametrize("seed", range(24))
def test_roi_align_equals_torchvision_float32(seed):
    x, rois, out, scale = random_case(seed, torch.float32)
    for sr in (-1, 2):
        for aligned in (False, True):
            a = roi_align(x, rois, out, scale, sr, aligned)
            b = torchvision.ops.roi_align(x, rois, out, scale, sr, aligned)
            assert (a - b).abs().max() <= 1e-4


def test_roi_align_accepts_a_list_of_boxes_per_image():
    x, rois, out, scale = random_case(3, torch.float64)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(x.shape[0])]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(x.shape[0])])
    assert torch.allclose(
        roi_align(x, ordered, out, scale, 2),
        torchvision.ops.roi_align(x, ordered, out, scale, 2),
        atol=1e-10,
    )
    assert torch.allclose(
        roi_align(x, per_image, out, scale, 2),
        torchvision.ops.roi_align(x, per_image, out, scale, 2),
        atol=1e-10,
    )


def test_roi_align_passes_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 1.2, 6.1, 5.7], [1, -1.5, 2.0, 3.3, 9.0], [1, 2.0, 2.0, 2.0, 4.0]],
        dtype=torch.float64,
    )
    for aligned in (False, True):
        assert torch.autograd.gradcheck(
            lambda t: roi_align(t, rois, (3, 2), 1.0, -1, aligned), (x,)
        )


@pytest.mark.parametrize("seed", range(40))
def test_roi_pool_equals_torchvision(seed):
    for dtype in (torch.float64, torch.float32):
        x, rois, out, scale = random_case(seed, dtype)
        a = roi_pool(x, rois, out, scale)
        b = torchvision.ops.roi_pool(x, rois, out, scale)
        assert torch.equal(a, b)


def test_roi_pool_float32_bin_edges_follow_float32_arithmetic():
    """7 * float32(3/7) rounds above 3, so the last bin of a 3-cell RoI split 7 ways
    reaches a fourth cell in torchvision's float32 kernel (not in exact arithmetic)."""
    x = torch.arange(10, dtype=torch.float32).reshape(1, 1, 1, 10)
    rois = torch.tensor([[0, 0.0, 0.0, 2.0, 0.0]])
    assert torch.equal(roi_pool(x, rois, (1, 7)), torchvision.ops.roi_pool(x, rois, (1, 7)))


def test_fpn_levels_equal_torchvision_level_mapper():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 800
    wh = torch.exp(torch.rand(500, 2, generator=g) * 7)  # 1 .. 1100 px
    boxes = torch.cat([xy, xy + wh], 1)
    mapper = LevelMapper(2, 5)
    assert torch.equal(fpn_levels(boxes) - 2, mapper([boxes]))
    assert fpn_levels(torch.tensor([[0.0, 0.0, 224.0, 224.0]])).item() == 4


def test_each_box_pooled_from_its_fpn_level_is_torchvisions_multiscale_roi_align():
    """Mask R-CNN's RoI features, put together from the package's two parts: each box
    pooled by roi_align (aligned=False, sampling_ratio 2) from the level fpn_levels
    picks, at that level's stride, equals torchvision's MultiScaleRoIAlign."""
    g = torch.Generator().manual_seed(1)
    image_size = (256, 320)
    features = {
        f"p{k}": torch.randn(2, 3, 256 // 2**k, 320 // 2**k, generator=g) for k in (2, 3, 4, 5)
    }
    boxes = []
    for _ in range(2):
        xy = torch.rand(30, 2, generator=g) * torch.tensor([300.0, 240.0])
        wh = torch.exp(torch.rand(30, 2, generator=g) * 6)
        boxes.append(torch.cat([xy, xy + wh], 1))
    oracle = MultiScaleRoIAlign(list(features), output_size=7, sampling_ratio=2)
    expected = oracle(features, boxes, [image_size] * 2)
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]
    )
    levels = fpn_levels(rois[:, 1:])
    got = torch.zeros_like(expected)
    for k, feat in zip((2, 3, 4, 5), features.values()):
        sel = levels == k
        got[sel] = roi_align(feat, rois[sel], 7, 1 / 2**k, 2, aligned=False)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("aligned", [False, True])
def test_sample_points_are_where_roi_align_samples(aligned):
    """On a map whose value is its column (row) index, bilinear interpolation returns the
    sample's x (y), so each bin's output is the mean of its sample points."""
    from helpers.detection.roi_align import sample_points

    h, w = 12, 15
    cols = torch.arange(w, dtype=torch.float64).expand(h, w)
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    feat = torch.stack([cols, rows])[None]
    box = (10.0, 6.0, 44.0, 30.0)  # well inside the map at scale 1/4
    out = roi_align(
        feat, torch.tensor([[0.0, *box]], dtype=torch.float64), (3, 4), 0.25, 2, aligned
    )
    pts = sample_points(box, (3, 4), 2, 0.25, aligned)  # 3 x 4 x 2 x 2 x (x, y)
    expected = pts.mean(dim=(2, 3)).permute(2, 0, 1)
    assert torch.allclose(out[0], expected, atol=1e-12)


def test_torchvision_mask_rcnn_pools_with_aligned_false():
    """What notebook 02 states: MultiScaleRoIAlign calls roi_align with aligned=False."""
    from collections import OrderedDict

    pooler = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    ).roi_heads.mask_roi_pool
    g = torch.Generator().manual_seed(0)
    maps = OrderedDict(
        (n, torch.randn(1, 3, s, s, generator=g)) for n, s in zip("0123", (200, 100, 50, 25))
    )
    box = [torch.tensor([[100.0, 120.0, 180.0, 210.0]])]  # level P2
    out = pooler(maps, box, [(800, 800)])
    assert torch.equal(out, torchvision.ops.roi_align(maps["0"], box, 14, 0.25, 2, aligned=False))
    assert not torch.allclose(
        out, torchvision.ops.roi_align(maps["0"], box, 14, 0.25, 2, aligned=True)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roi_pool_rounds_ties_as_torchvision_does(dtype):
    """Box edges that scale to exactly k + 0.5 cells (random boxes never hit them): the
    kernel's C round() goes half away from zero, where Python's round() goes to even."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 16, 16, generator=g, dtype=dtype)
    edges = torch.tensor(
        [2.0, 6.0, 10.0, 14.0, 18.0, 22.0, 26.0, 30.0]
    )  # x / 4 = 0.5, 1.5, ... 7.5
    rois = torch.tensor(
        [
            [0.0, a, b, c, d]
            for a in edges[:4]
            for b in edges[:3]
            for c in edges[4:]
            for d in edges[5:]
        ],
        dtype=dtype,
    )
    assert torch.equal(
        roi_pool(x, rois, (3, 3), 0.25), torchvision.ops.roi_pool(x, rois, (3, 3), 0.25)
    )


def test_any_number_of_rois_equals_torchvision_across_the_chunk_boundaries():
    """Sizes past the small cases: the RoIs are processed in chunks (sorted by size), so
    counts around and past the chunk size, several images and large maps must all equal
    torchvision; every output row is compared, so a RoI left uncomputed shows."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(
        k=st.sampled_from([63, 64, 65, 127, 128, 129, 200, 257]) | st.integers(1, 300),
        seed=st.integers(0, 2**16),
        out=st.sampled_from([(7, 7), (14, 14), (3, 5)]),
        sampling_ratio=st.sampled_from([-1, 2]),
        aligned=st.booleans(),
    )
    def check(k, seed, out, sampling_ratio, aligned):
        g = torch.Generator().manual_seed(seed)
        n, h, w = 3, 40, 56
        x = torch.randn(n, 2, h, w, generator=g)
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) * 8
        wh = torch.rand(k, 2, generator=g) ** 2 * torch.tensor([w, h]) * 6
        batch = torch.randint(0, n, (k, 1), generator=g).float()
        rois = torch.cat([batch, xy, xy + wh], dim=1)
        a = roi_align(x, rois, out, 1 / 8, sampling_ratio, aligned)
        b = torchvision.ops.roi_align(x, rois, out, 1 / 8, sampling_ratio, aligned)
        assert a.shape == b.shape == (k, 2, *out)
        worst = (a - b).abs().flatten(1).max(1).values
        assert worst.max() <= 1e-4, f"RoI {int(worst.argmax())} of {k} differs"

    check()
