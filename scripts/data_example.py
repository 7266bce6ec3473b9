"""The generator of ``data_example/``: miniature VOC2007 and LabPics Medical data sets in
the real on-disk layouts, so that every notebook and test runs offline in seconds.

Regenerate with ``python -m scripts.data_example`` (writes ``data_example/`` in the
repository; ``--out DIR`` for elsewhere). The output is deterministic: the same seeds give
the same label PNGs and XML byte for byte and the same photos up to JPEG encoder
differences between library versions.

What is drawn, and why:
- Objects are several shaded, textured parts (a potted plant is a terracotta pot and green
  leaves; a monitor a dark frame and a bright screen), lit from one side, with soft
  shadows, on cluttered backgrounds whose clutter uses the same colours. No colour
  threshold separates object from background, so a model has to learn shape.
- VOC: 2 to 5 instances per image from 5 of VOC's classes, placed so that some touch or
  occlude each other; instance ids 1..N in drawing order; a void (255) band 5 pixels
  wide along every visible object border, as VOC draws it; Annotations XML boxes from the
  visible masks (1-based inclusive pixel coordinates, as VOC's are).
- LabPics: transparent glassware (tubes, beakers, flasks, bottles) with coloured liquid,
  highlights and outlines on a lab bench; vessels overlap (a vessel seen through another
  keeps its whole outline), an opaque object may hide part of one (the hidden part is
  not in its mask); ``Ignore.png`` marks a blurred region in some samples.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOC_CLASSES, voc_palette

VOC_SIZES = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 400), (400, 500)]
VOC_EXAMPLE_CLASSES = ("bottle", "car", "person", "pottedplant", "tvmonitor")
VOID_HALF_WIDTH = 2  # band = 2 px outside + the border pixel ring + 2 px inside ~ 5 px
VOC_SPLITS = {"train": 8, "val": 4, "test": 4}
LABPICS_SPLITS = {"Train": 8, "Test": 4}
LABPICS_SIZES = [(640, 480), (480, 640), (600, 450)]
JPEG_QUALITY = 88


# --------------------------------------------------------------------------- textures
def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth value noise in [-1, 1], ``h x w`` float32, about ``cells`` blobs across."""
    small = rng.uniform(
        -1, 1, size=(max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w)))
    )
    img = Image.fromarray(((small + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1


def _rand_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(30, 226, size=3).astype(np.float32)


def _pick(rng: np.random.Generator, palette) -> np.ndarray:
    """A colour near one of the scene's palette (so clutter and objects share colours),
    or a fresh random one."""
    if rng.random() < 0.6:
        return np.clip(
            palette[int(rng.integers(len(palette)))] + rng.normal(0, 18, 3), 0, 255
        ).astype(np.float32)
    return _rand_colour(rng)


def _background(rng: np.random.Generator, w: int, h: int, n_clutter: int, palette) -> np.ndarray:
    """A cluttered scene: two-colour gradient, texture, and shapes in the objects' colours."""
    top, bottom = _pick(rng, palette), _pick(rng, palette)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t + np.zeros((h, w, 3), np.float32)
    img += 25 * _noise(rng, h, w, 6)[:, :, None] + 8 * _noise(rng, h, w, 40)[:, :, None]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    for _ in range(n_clutter):
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        colour = tuple(int(c) for c in _pick(rng, palette))
        alpha = int(rng.integers(90, 230))
        x0, y0 = rng.integers(-w // 8, w), rng.integers(-h // 8, h)
        x1, y1 = x0 + rng.integers(15, w // 2), y0 + rng.integers(15, h // 2)
        kind = rng.integers(4)
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour + (alpha,))
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour + (alpha,))
        elif kind == 2:
            pts = [(int(rng.integers(x0, x1)), int(rng.integers(y0, y1))) for _ in range(5)]
            draw.polygon(pts, fill=colour + (alpha,))
        else:
            draw.line([x0, y0, x1, y1], fill=colour + (alpha,), width=int(rng.integers(2, 9)))
        if rng.random() < 0.4:
            layer = layer.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
        canvas = Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
    return np.asarray(canvas, dtype=np.float32)


def _shade(
    rng: np.random.Generator, mask: np.ndarray, colour: np.ndarray, light: np.ndarray
) -> np.ndarray:
    """Colour one part: base colour x directional light x rounded (distance-to-edge)
    shading + texture. Returns ``H x W x 3`` float32 (meaningful inside ``mask``)."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = np.nonzero(mask)
    cy, cx, size = ys.mean(), xs.mean(), max(np.ptp(ys), np.ptp(xs), 1)
    directional = 1 + 0.35 * ((xx - cx) * light[0] + (yy - cy) * light[1]) / size
    depth = ndimage.distance_transform_edt(mask)
    rounded = 0.65 + 0.35 * np.clip(depth / max(depth.max(), 1) * 2.5, 0, 1)
    texture = 1 + 0.12 * _noise(rng, h, w, 25) + 0.05 * _noise(rng, h, w, 90)
    return colour[None, None, :] * (directional * rounded * texture)[:, :, None]


def _composite(img: np.ndarray, parts, rng, light, shadow: bool = True) -> np.ndarray:
    """Paint ``parts`` [(mask, colour)] over ``img`` with a soft drop shadow."""
    union = np.any([m for m, _ in parts], axis=0)
    if shadow:
        off = (int(-light[1] * 8), int(-light[0] * 8))
        sh = np.roll(union, off, axis=(0, 1)).astype(np.float32)
        sh = ndimage.gaussian_filter(sh, 5) * 0.45
        img = img * (1 - sh[:, :, None])
    for mask, colour in parts:
        if not mask.any():  # a part entirely outside the image
            continue
        shaded = _shade(rng, mask, colour, light)
        img = np.where(mask[:, :, None], shaded, img)
    return img


def _draw(shape_fn, w, h, *args) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    shape_fn(ImageDraw.Draw(canvas), *args)
    return np.asarray(canvas) > 0


# ----------------------------------------------------------------- VOC object shapes
def _voc_object(cls: str, rng, w, h, box, palette):
    """Parts ``[(mask, colour)]`` of one object of class ``cls`` inside ``box``."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    c = _pick(rng, palette)
    if cls == "bottle":
        neck = bw * 0.18
        body = _draw(
            lambda d: d.rounded_rectangle([x0, y0 + bh * 0.35, x1, y1], radius=bw * 0.25, fill=1),
            w,
            h,
        )
        shoulder = _draw(
            lambda d: d.polygon(
                [
                    (x0 + 2, y0 + bh * 0.4),
                    (x1 - 2, y0 + bh * 0.4),
                    (cx + neck, y0 + bh * 0.15),
                    (cx - neck, y0 + bh * 0.15),
                ],
                fill=1,
            ),
            w,
            h,
        )
        cap = _draw(
            lambda d: d.rectangle([cx - neck * 1.1, y0, cx + neck * 1.1, y0 + bh * 0.16], fill=1),
            w,
            h,
        )
        return [(body | shoulder, c), (cap, _pick(rng, palette))]
    if cls == "tvmonitor":
        frame = _draw(lambda d: d.rectangle([x0, y0, x1, y0 + bh * 0.82], fill=1), w, h)
        screen = _draw(
            lambda d: d.rectangle(
                [x0 + bw * 0.07, y0 + bh * 0.07, x1 - bw * 0.07, y0 + bh * 0.74], fill=1
            ),
            w,
            h,
        )
        stand = _draw(
            lambda d: d.polygon(
                [
                    (cx - bw * 0.08, y0 + bh * 0.82),
                    (cx + bw * 0.08, y0 + bh * 0.82),
                    (cx + bw * 0.25, y1),
                    (cx - bw * 0.25, y1),
                ],
                fill=1,
            ),
            w,
            h,
        )
        dark = rng.uniform(20, 70, 3).astype(np.float32)
        return [(frame | stand, dark), (screen, _pick(rng, palette) * 0.5 + 100)]
    if cls == "pottedplant":
        pot = _draw(
            lambda d: d.polygon(
                [
                    (x0 + bw * 0.2, y0 + bh * 0.6),
                    (x1 - bw * 0.2, y0 + bh * 0.6),
                    (x1 - bw * 0.3, y1),
                    (x0 + bw * 0.3, y1),
                ],
                fill=1,
            ),
            w,
            h,
        )
        leaves = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(5, 9))):
            lx, ly = rng.uniform(x0, x1), rng.uniform(y0, y0 + bh * 0.55)
            rx, ry = bw * rng.uniform(0.12, 0.25), bh * rng.uniform(0.08, 0.18)
            leaves |= _draw(lambda d: d.ellipse([lx - rx, ly - ry, lx + rx, ly + ry], fill=1), w, h)
        leaves |= _draw(
            lambda d: d.rectangle(
                [cx - bw * 0.04, y0 + bh * 0.3, cx + bw * 0.04, y0 + bh * 0.62], fill=1
            ),
            w,
            h,
        )
        green = np.array(
            [rng.uniform(30, 90), rng.uniform(100, 180), rng.uniform(30, 80)], np.float32
        )
        terracotta = np.array(
            [rng.uniform(150, 200), rng.uniform(70, 110), rng.uniform(40, 70)], np.float32
        )
        return [(leaves & ~pot, green), (pot, terracotta)]
    if cls == "car":
        body = _draw(
            lambda d: d.rounded_rectangle(
                [x0, y0 + bh * 0.4, x1, y0 + bh * 0.82], radius=bh * 0.12, fill=1
            ),
            w,
            h,
        )
        cabin = _draw(
            lambda d: d.polygon(
                [
                    (x0 + bw * 0.2, y0 + bh * 0.42),
                    (x0 + bw * 0.32, y0),
                    (x0 + bw * 0.72, y0),
                    (x0 + bw * 0.85, y0 + bh * 0.42),
                ],
                fill=1,
            ),
            w,
            h,
        )
        r = bh * 0.18
        wheels = _draw(
            lambda d: (
                d.ellipse([x0 + bw * 0.22 - r, y1 - 2 * r, x0 + bw * 0.22 + r, y1], fill=1),
                d.ellipse([x1 - bw * 0.22 - r, y1 - 2 * r, x1 - bw * 0.22 + r, y1], fill=1),
            ),
            w,
            h,
        )
        return [(body | cabin, c), (wheels, rng.uniform(15, 45, 3).astype(np.float32))]
    if cls == "person":
        r = bw * 0.2
        head = _draw(lambda d: d.ellipse([cx - r, y0, cx + r, y0 + 2 * r], fill=1), w, h)
        torso = _draw(
            lambda d: d.rounded_rectangle(
                [x0 + bw * 0.15, y0 + 2 * r, x1 - bw * 0.15, y0 + bh * 0.6], radius=r * 0.6, fill=1
            ),
            w,
            h,
        )
        legs = _draw(
            lambda d: (
                d.rectangle([x0 + bw * 0.22, y0 + bh * 0.58, cx - bw * 0.03, y1], fill=1),
                d.rectangle([cx + bw * 0.03, y0 + bh * 0.58, x1 - bw * 0.22, y1], fill=1),
            ),
            w,
            h,
        )
        arms = _draw(
            lambda d: d.rounded_rectangle(
                [x0, y0 + 2.2 * r, x1, y0 + 2.2 * r + bh * 0.08], radius=3, fill=1
            ),
            w,
            h,
        )
        skin = np.array(
            [rng.uniform(120, 230), rng.uniform(80, 180), rng.uniform(60, 150)], np.float32
        )
        return [(head, skin), (torso | arms, c), (legs & ~torso, _pick(rng, palette))]
    raise ValueError(f"no drawing for class {cls!r}")


_ASPECT = {
    "bottle": (0.35, 0.5),
    "tvmonitor": (1.1, 1.5),
    "pottedplant": (0.6, 0.9),
    "car": (1.6, 2.2),
    "person": (0.45, 0.6),
}  # w/h


def _voc_scene(rng: np.random.Generator, w: int, h: int, split: tuple[str, ...] = ()):
    """Image and visible instance masks, classes of one VOC-like scene. An object of a
    class in ``split`` is given as its parts (a person's head, body and legs, a potted
    plant's leaves and pot, a monitor's frame and screen), each an instance of its own:
    the small SAM's pretraining sees those classes at another granularity than VOC's
    whole objects (``scripts/pretrain_small_sam.py``). The drawing is the same either way."""
    n = int(rng.integers(2, 6))
    classes = [VOC_EXAMPLE_CLASSES[int(rng.integers(len(VOC_EXAMPLE_CLASSES)))] for _ in range(n)]
    palette = [_rand_colour(rng) for _ in range(6)]
    img = _background(rng, w, h, int(rng.integers(25, 40)), palette)
    light = rng.normal(size=2)
    light /= np.linalg.norm(light)
    full_masks, boxes, object_parts = [], [], []
    for k, cls in enumerate(classes):
        for _attempt in range(50):
            bh = rng.uniform(0.3, 0.6) * h
            bw = min(bh * rng.uniform(*_ASPECT[cls]), 0.8 * w)
            bh = bw / np.mean(_ASPECT[cls]) if bw == 0.8 * w else bh
            if k > 0 and rng.random() < 0.6:  # touch / occlude the previous object
                px0, py0, px1, py1 = boxes[-1]
                x0 = rng.uniform(px0 - bw * 0.6, px1 - bw * 0.4)
                y0 = rng.uniform(py0 - bh * 0.3, py1 - bh * 0.7)
            else:
                x0, y0 = (
                    rng.uniform(-0.1 * bw, w - 0.9 * bw),
                    rng.uniform(-0.05 * bh, h - 0.95 * bh),
                )
            box = (x0, y0, x0 + bw, y0 + bh)
            parts = _voc_object(cls, rng, w, h, box, palette)
            mask = np.any([m for m, _ in parts], axis=0)
            # every earlier object must keep at least 45% of itself visible
            if mask.sum() > 600 and all((m & ~mask).sum() > 0.45 * m.sum() for m in full_masks):
                break
        img = _composite(img, parts, rng, light)
        full_masks.append(mask)
        boxes.append(box)
        object_parts.append([m for m, _ in parts])
    visible = [
        m & ~np.any(full_masks[k + 1 :], axis=0) if k + 1 < n else m
        for k, m in enumerate(full_masks)
    ]
    masks, names = [], []
    for cls, seen, parts in zip(classes, visible, object_parts):
        if cls not in split:
            masks.append(seen)
            names.append(cls)
            continue
        for j, part in enumerate(parts):  # what shows of each part: later parts paint over
            over = np.any(parts[j + 1 :], axis=0) if j + 1 < len(parts) else False
            masks.append(part & ~over & seen)
            names.append(cls)
    return np.clip(img, 0, 255).astype(np.uint8), masks, names


def _void_band(masks: list[np.ndarray]) -> np.ndarray:
    band = np.zeros(masks[0].shape, bool)
    for m in masks:
        band |= ndimage.binary_dilation(m, iterations=VOID_HALF_WIDTH) & ~ndimage.binary_erosion(
            m, iterations=VOID_HALF_WIDTH
        )
    return band


def _palette_png(indices: np.ndarray, path: Path) -> None:
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    img.putpalette(voc_palette())
    img.save(path)


def _voc_xml(image_id: str, w: int, h: int, masks, classes) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "segcourse data_example (synthetic)"
    size = ET.SubElement(root, "size")
    for tag, val in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(root, "segmented").text = "1"
    for mask, cls in zip(masks, classes):
        ys, xs = np.nonzero(mask)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = cls
        ET.SubElement(obj, "pose").text = "Unspecified"
        truncated = xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1
        ET.SubElement(obj, "truncated").text = str(int(truncated))
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")  # VOC: 1-based, inclusive
        for tag, val in (
            ("xmin", xs.min()),
            ("ymin", ys.min()),
            ("xmax", xs.max()),
            ("ymax", ys.max()),
        ):
            ET.SubElement(bb, tag).text = str(int(val) + 1)
    ET.indent(root)
    return ET.ElementTree(root)


def write_voc(out: Path, seed: int = 2007) -> None:
    """Write ``out/VOC2007`` (see the module docstring)."""
    voc = out / "VOC2007"
    for sub in (
        "JPEGImages",
        "SegmentationObject",
        "SegmentationClass",
        "Annotations",
        "ImageSets/Segmentation",
    ):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    number = 0
    for split, count in VOC_SPLITS.items():
        ids[split] = []
        for _ in range(count):
            number += 1
            image_id = f"{number * 7 + 5:06d}"  # VOC-like six-digit, not consecutive
            rng = np.random.default_rng([seed, number])
            w, h = VOC_SIZES[number % len(VOC_SIZES)]
            img, masks, classes = _voc_scene(rng, w, h)
            void = _void_band(masks)
            obj = np.zeros((h, w), np.uint8)
            cls_map = np.zeros((h, w), np.uint8)
            for k, (m, c) in enumerate(zip(masks, classes), start=1):
                obj[m] = k
                cls_map[m] = VOC_CLASSES.index(c) + 1
            obj[void] = 255
            cls_map[void] = 255
            Image.fromarray(img).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
            _palette_png(obj, voc / "SegmentationObject" / f"{image_id}.png")
            _palette_png(cls_map, voc / "SegmentationClass" / f"{image_id}.png")
            _voc_xml(image_id, w, h, masks, classes).write(voc / "Annotations" / f"{image_id}.xml")
            ids[split].append(image_id)
    ids["trainval"] = sorted(ids["train"] + ids["val"])
    for split, split_ids in ids.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "\n".join(split_ids) + "\n"
        )


# ------------------------------------------------------------------------- LabPics
def _vessel_mask(kind: int, w, h, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    if kind == 0:  # test tube
        return _draw(
            lambda d: (
                d.rectangle([x0, y0, x1, y1 - bw / 2], fill=1),
                d.ellipse([x0, y1 - bw, x1, y1], fill=1),
            ),
            w,
            h,
        )
    if kind == 1:  # beaker with spout
        return _draw(
            lambda d: (
                d.rectangle([x0, y0 + bh * 0.05, x1, y1], fill=1),
                d.polygon(
                    [(x0, y0 + bh * 0.05), (x0 - bw * 0.08, y0), (x0 + bw * 0.1, y0 + bh * 0.05)],
                    fill=1,
                ),
            ),
            w,
            h,
        )
    if kind == 2:  # Erlenmeyer flask
        return _draw(
            lambda d: (
                d.polygon(
                    [
                        (cx - bw * 0.15, y0 + bh * 0.3),
                        (cx + bw * 0.15, y0 + bh * 0.3),
                        (x1, y1),
                        (x0, y1),
                    ],
                    fill=1,
                ),
                d.rectangle([cx - bw * 0.15, y0, cx + bw * 0.15, y0 + bh * 0.32], fill=1),
            ),
            w,
            h,
        )
    return _draw(
        lambda d: (
            d.rounded_rectangle([x0, y0 + bh * 0.25, x1, y1], radius=bw * 0.15, fill=1),
            d.rectangle([cx - bw * 0.2, y0, cx + bw * 0.2, y0 + bh * 0.27], fill=1),
        ),
        w,
        h,
    )


_VESSEL_ASPECT = {0: (0.15, 0.25), 1: (0.6, 0.9), 2: (0.6, 0.8), 3: (0.35, 0.5)}


def _labpics_scene(rng, w, h):
    palette = [_rand_colour(rng) for _ in range(6)]
    img = _background(rng, w, h, int(rng.integers(18, 30)), palette)
    bench_y = int(h * rng.uniform(0.55, 0.75))
    bench = np.array([rng.uniform(90, 170)] * 3, np.float32) + rng.uniform(-20, 20, 3)
    img[bench_y:] = img[bench_y:] * 0.35 + bench * (
        0.65 + 0.15 * _noise(rng, h - bench_y, w, 30)[:, :, None]
    )
    masks = []
    prev_x1 = None
    for _ in range(int(rng.integers(2, 6))):
        kind = int(rng.integers(4))
        bh = rng.uniform(0.25, 0.5) * h
        bw = bh * rng.uniform(*_VESSEL_ASPECT[kind])
        if prev_x1 is None or rng.random() < 0.4:
            x0 = rng.uniform(0, w - bw)
        else:  # overlap the previous vessel: glass in front of glass
            x0 = float(np.clip(prev_x1 + rng.uniform(-0.7, 0.4) * bw, 0, w - bw))
        y1 = bench_y + rng.uniform(-0.05, 0.15) * h
        box = (x0, y1 - bh, x0 + bw, min(y1, h - 2))
        prev_x1 = box[2]
        m = _vessel_mask(kind, w, h, box)
        if m.sum() < 500:
            continue
        glass = rng.uniform(180, 240, 3).astype(np.float32)
        img = np.where(m[:, :, None], img * 0.75 + glass * 0.25, img)
        ys = np.nonzero(m)[0]
        level = ys.min() + (ys.max() - ys.min()) * rng.uniform(0.3, 0.8)
        liquid = m & (np.arange(h)[:, None] > level)
        lc = _rand_colour(rng)
        img = (
            np.where(
                liquid[:, :, None],
                img * 0.3 + _shade(rng, liquid | m, lc, np.array([1.0, 0.0])) * 0.7,
                img,
            )
            if liquid.any()
            else img
        )
        edge = m & ~ndimage.binary_erosion(m, iterations=2)
        img = np.where(edge[:, :, None], img * 0.45, img)
        hx = int(box[0] + (box[2] - box[0]) * rng.uniform(0.15, 0.3))
        stripe = m & (np.abs(np.arange(w)[None, :] - hx) <= max(1, int((box[2] - box[0]) * 0.05)))
        img = np.where(stripe[:, :, None], img * 0.4 + 255 * 0.6, img)
        masks.append(m)
    if rng.random() < 0.5 and masks:  # an opaque object (a glove, a box) in front of a vessel
        ys, xs = np.nonzero(masks[int(rng.integers(len(masks)))])
        ox, oy = rng.choice(xs), rng.choice(ys)
        r = rng.uniform(0.06, 0.12) * min(w, h)
        occ = _draw(lambda d: d.ellipse([ox - r * 1.4, oy - r, ox + r * 1.4, oy + r], fill=1), w, h)
        img = _composite(img, [(occ, _rand_colour(rng))], rng, np.array([0.7, 0.7]))
        masks = [m & ~occ for m in masks]
        masks = [m for m in masks if m.sum() >= 200]
    ignore = np.zeros((h, w), bool)
    if rng.random() < 0.5:  # a blurred, ambiguous region the annotators marked as ignore
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.5) * h
        rx, ry = rng.uniform(0.06, 0.14) * w, rng.uniform(0.06, 0.12) * h
        ignore = _draw(lambda d: d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1), w, h)
        blurred = ndimage.gaussian_filter(img, sigma=(6, 6, 0))
        img = np.where(ignore[:, :, None], blurred, img)
    return np.clip(img, 0, 255).astype(np.uint8), masks, ignore


def write_labpics(out: Path, seed: int = 4736111) -> None:
    """Write ``out/Train`` and ``out/Test`` in LabPics Medical's layout."""
    number = 0
    for split, count in LABPICS_SPLITS.items():
        for k in range(count):
            number += 1
            rng = np.random.default_rng([seed, number])
            w, h = LABPICS_SIZES[number % len(LABPICS_SIZES)]
            img, masks, ignore = _labpics_scene(rng, w, h)
            sample = out / split / f"{split.lower()}_{k:03d}"
            (sample / "Vessels").mkdir(parents=True, exist_ok=True)
            (sample / "SemanticMaps" / "FullImage").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(sample / "Image.jpg", quality=JPEG_QUALITY)
            for i, m in enumerate(masks):
                Image.fromarray(m.astype(np.uint8) * 255).save(sample / "Vessels" / f"{i}.png")
            Image.fromarray(ignore.astype(np.uint8) * 255).save(sample / "Ignore.png")
            union = np.any(masks, axis=0) if masks else np.zeros((h, w), bool)
            Image.fromarray(union.astype(np.uint8) * 255).save(
                sample / "SemanticMaps" / "FullImage" / "Vessel.png"
            )


def generate(out: str | Path = DATA_EXAMPLE) -> Path:
    """Write both data sets under ``out`` (``out/VOCdevkit/VOC2007`` and
    ``out/LabPicsMedical/{Train,Test}``), replacing what was there. Built in a temporary
    folder first, then moved into place, so a failure leaves the old copy intact."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".data_example-", dir=out.parent))
    try:
        write_voc(tmp / "VOCdevkit")
        write_labpics(tmp / "LabPicsMedical")
        (tmp / "README.md").write_text(_README)
        for name in ("VOCdevkit", "LabPicsMedical", "README.md"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            out.mkdir(exist_ok=True)
            (tmp / name).replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_README = """# data_example

Miniature, synthetic copies of the two data sets of the course, in their real on-disk
layouts, so that every notebook and test runs offline in seconds (smoke mode).

- `VOCdevkit/VOC2007/`: Pascal VOC2007 segmentation layout (8 train, 4 val, 12 trainval,
  4 test images; palette PNGs with VOC's palette; 5 px void borders; Annotations XML).
- `LabPicsMedical/{Train,Test}/`: LabPics Medical layout (8 Train, 4 Test samples).

Generated by `python -m scripts.data_example`; do not edit by hand. The drawings are not
real photos: numbers measured on them say nothing about the real data sets.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=str(DATA_EXAMPLE), help="output folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    print(f"wrote {generate(args.out)}")


if __name__ == "__main__":
    main()


def threshold_baseline_iou(image: np.ndarray, foreground: np.ndarray, ignore=None) -> float:
    """The best IoU any single colour threshold reaches on one image: the bar that a
    segmentation data set must keep far above its trivial solution.

    Tries every threshold on each of R, G, B and gray, both polarities (pixel > t and
    pixel <= t), and returns the highest IoU with ``foreground``.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        foreground: ``H x W`` bool, the union of the objects.
        ignore: optional ``H x W`` bool of pixels left out of the count (VOC's void).
    """
    keep = np.ones(foreground.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
    fg = np.asarray(foreground, bool)[keep]
    channels = [image[..., c] for c in range(3)] + [
        image.astype(np.float32).mean(-1).astype(np.uint8)
    ]
    best = 0.0
    for ch in channels:
        v = ch[keep]
        # histograms make every threshold one cumulative sum
        fg_hist = np.bincount(v[fg], minlength=256)
        all_hist = np.bincount(v, minlength=256)
        above_fg = fg_hist[::-1].cumsum()[::-1]  # fg pixels with value >= t
        above_all = all_hist[::-1].cumsum()[::-1]
        n_fg = fg.sum()
        for inter, pred in ((above_fg, above_all), (n_fg - above_fg, v.size - above_all)):
            union = n_fg + pred - inter
            best = max(best, float((inter / np.maximum(union, 1)).max()))
    return best
