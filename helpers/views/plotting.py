"""All the course's pictures (mask overlays, boxes, points, grids), in one module: notebooks
call these and never redefine them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Distinct colours for instances (RGB 0..255), cycled.
INSTANCE_COLOURS = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
    ],
    dtype=np.float32,
)


def overlay_masks(
    image: np.ndarray,
    masks: np.ndarray,
    alpha: float = 0.5,
    outline: np.ndarray | None = None,
    outline_colour=(255, 255, 255),
    colours=None,
) -> np.ndarray:
    """Blend instance masks onto an image.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        masks: ``N x H x W`` bool; instance ``k`` gets ``INSTANCE_COLOURS[k % 15]`` (or
            ``colours[k]``, ``K x 3`` RGB 0..255); later masks paint over earlier ones.
        alpha: a masked pixel becomes ``(1 - alpha) * pixel + alpha * colour``, rounded.
        outline: optional ``H x W`` bool painted in ``outline_colour`` (VOC's void border,
            LabPics' ignore region).

    Returns:
        ``H x W x 3`` uint8 RGB."""
    import cv2

    out = np.array(image, dtype=np.uint8, copy=True)
    palette = (
        INSTANCE_COLOURS if colours is None else np.asarray(colours, np.float32).reshape(-1, 3)
    )
    for k, mask in enumerate(np.asarray(masks, dtype=bool)):
        colour = palette[k % len(palette)]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not len(rows):
            continue
        # blend the mask's bounding box, keep its pixels: the widget redraws on every
        # click, and writing through a mask is faster than indexing with it
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        region = out[box]
        paint = np.empty_like(region)
        paint[:] = np.asarray(colour).round().astype(np.uint8)
        blended = cv2.addWeighted(region, 1 - alpha, paint, alpha, 0.0)  # rounded, saturated
        np.copyto(region, blended, where=mask[box][..., None])
    if outline is not None:
        out[np.asarray(outline, dtype=bool)] = outline_colour
    return out


def draw_boxes(ax, boxes, labels=None, colour="yellow") -> None:
    """Draw ``K x 4`` xyxy pixel boxes (pixel-edge coordinates) on a matplotlib axis.

    ``imshow`` puts pixel ``(col, row)``'s centre at ``(col, row)``, so its edges are at
    ``-0.5``; a box from the edge convention is shifted by half a pixel to sit exactly on
    the mask.
    """
    from matplotlib.patches import Rectangle

    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float)):
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5)
        )
        if labels is not None:
            ax.text(x0 - 0.5, y0 - 2, str(labels[k]), color=colour, fontsize=8, va="bottom")


def show_sample(
    ax, sample: dict, names=None, title: str | None = None, labels: bool = True
) -> None:
    """One reader sample on ``ax``: image, instance overlay, void/ignore in white, and
    (with ``labels``) each instance's label at its centre of mass, moved down where it
    would cover another label (:func:`draw_labels_rgb`).

    Args:
        sample: a dict from :class:`helpers.data.voc.VOCInstanceDataset` or
            :class:`helpers.data.labpics.LabPicsDataset`.
        names: optional sequence mapping label ``l`` to ``names[l - 1]``.
        labels: False for a one-class data set, where the label says nothing.
    """
    outline = sample.get("void", sample.get("ignore"))
    shown = overlay_masks(sample["image"], sample["masks"], outline=outline)
    texts, anchors = [], []
    for mask, label in zip(sample["masks"], sample["labels"] if labels else []):
        ys, xs = np.nonzero(mask)
        if len(xs):
            texts.append(names[label - 1] if names is not None else str(label))
            anchors.append((xs.mean(), ys.mean()))
    shown = draw_labels_rgb(shown, texts, anchors, [(0, 0, 0)] * len(texts), (255, 255, 255))
    ax.imshow(shown)
    ax.set_title(title or sample["image_id"], fontsize=9)
    ax.axis("off")


def draw_roi_sampling(
    ax,
    feature_hw,
    box,
    output_size=2,
    sampling_ratio=2,
    spatial_scale=1.0,
    aligned=False,
    colour="tab:red",
    label=None,
) -> None:
    """RoI Align's picture on a feature grid: cells, the RoI, its bins and sample points.

    Cell ``(r, c)`` is drawn as the unit square centred on ``(c, r)`` (the convention of
    ``aligned=False``, where a cell's value sits at its integer coordinates).

    Args:
        feature_hw: ``(H, W)`` of the feature grid.
        box: ``(x1, y1, x2, y2)`` in image pixels; ``spatial_scale`` maps it to the grid.
    """
    from matplotlib.patches import Rectangle

    from ..detection.roi_align import sample_points

    h, w = feature_hw
    for r in range(h + 1):
        ax.axhline(r - 0.5, color="0.8", lw=0.8, zorder=0)
    for c in range(w + 1):
        ax.axvline(c - 0.5, color="0.8", lw=0.8, zorder=0)
    ax.plot(*np.meshgrid(np.arange(w), np.arange(h)), ".", color="0.6", ms=3, zorder=1)
    pts = sample_points(box, output_size, sampling_ratio, spatial_scale, aligned)
    ph, pw = pts.shape[:2]
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * spatial_scale - off for v in box)
    if not aligned:
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=2, label=label))
    for p in range(1, ph):
        y = y1 + p * (y2 - y1) / ph
        ax.plot([x1, x2], [y, y], color=colour, lw=0.8, ls="--")
    for q in range(1, pw):
        x = x1 + q * (x2 - x1) / pw
        ax.plot([x, x], [y1, y2], color=colour, lw=0.8, ls="--")
    flat = pts.reshape(-1, 2).numpy()
    ax.plot(flat[:, 0], flat[:, 1], "x", color=colour, ms=6)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("feature-map column (x)")
    ax.set_ylabel("feature-map row (y)")


def draw_prompts(ax, points=None, labels=None, box=None, colour=None) -> None:
    """SAM prompts on an image axis, in SamPredictor's pixel-index coordinates (which are
    matplotlib's: ``imshow`` puts pixel ``(col, row)``'s centre at ``(col, row)``).

    Foreground points are filled circles, background points crosses; without ``colour``
    they are green / red, with it both take ``colour`` (to show which points belong to
    one instance). The box ``(x0, y0, x1, y1)`` (first and last column and row,
    inclusive) is drawn around those pixels, in yellow or ``colour``.

    Args:
        points: ``P x 2`` ``(x, y)``; labels: ``P`` (1 foreground, 0 background, -1
            padding: not drawn).
    """
    from matplotlib.patches import Rectangle

    if points is not None and len(points):
        pts, lab = np.asarray(points, float), np.asarray(labels)
        for value, marker, default in ((1, "o", "lime"), (0, "X", "red")):
            sel = pts[lab == value]
            if len(sel):
                ax.scatter(
                    sel[:, 0],
                    sel[:, 1],
                    marker=marker,
                    s=90,
                    c=[colour or default],
                    edgecolors="white",
                    linewidths=1.5,
                    zorder=3,
                )
    if box is not None:
        x0, y0, x1, y1 = np.asarray(box, float)
        ax.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0 + 1,
                y1 - y0 + 1,
                fill=False,
                ec=colour or "yellow",
                lw=2,
            )
        )


def show_prediction(
    ax, image, mask, gt=None, points=None, labels=None, box=None, title: str = ""
) -> None:
    """A predicted mask on ``image`` (cyan), the ground-truth instance's outline (white,
    dashed) and the prompts.

    Args:
        image: ``H x W x 3`` uint8; mask, gt: ``H x W`` bool.
    """
    ax.imshow(draw_mask_rgb(image, mask))
    if gt is not None and np.asarray(gt).any():
        ax.contour(
            np.asarray(gt, float), levels=[0.5], colors="white", linewidths=1.5, linestyles="--"
        )
    draw_prompts(ax, points, labels, box)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_decoder_changes(
    ax, changes: dict[str, dict[str, float]], reference: float | None = None
) -> None:
    """Horizontal bars of relative parameter change per decoder group, one bar per run.

    Args:
        changes: ``{run name: {group: relative change}}`` (from
            :func:`helpers.sam.decoder_changes.decoder_changes`); groups in the first run's order.
        reference: a change to mark with a vertical line (e.g. weight decay alone).
    """
    runs = list(changes)
    groups = list(changes[runs[0]])
    y = np.arange(len(groups))
    height = 0.8 / len(runs)
    floor = 1e-9  # log axis: an unchanged group is drawn at the floor
    for i, run in enumerate(runs):
        values = [max(changes[run][g], floor) for g in groups]
        ax.barh(y + (i - (len(runs) - 1) / 2) * height, values, height=height, label=run)
    if reference is not None:
        ax.axvline(reference, color="k", ls="--", lw=1, label="weight decay alone")
    ax.set_xscale("log")
    ax.set_xlim(left=floor)
    ax.set_yticks(y, groups, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "relative change ||after - before|| / ||before|| (log scale; unchanged at the left edge)"
    )
    ax.set_ylabel("mask decoder parameters")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def show_masks(
    axes, image, masks, scores=None, points=None, labels=None, box=None, title="mask"
) -> None:
    """One panel per mask: the image, the mask overlaid, the prompts, the score.

    Args:
        axes: a sequence of matplotlib axes, one per mask.
        masks: ``M x H x W`` bool; scores: ``M`` floats (SAM's predicted IoU) or None.
    """
    for m, ax in enumerate(axes):
        ax.imshow(overlay_masks(image, np.asarray(masks[m])[None], alpha=0.55))
        draw_prompts(ax, points, labels, box)
        score = "" if scores is None else f" score {float(scores[m]):.3f}"
        ax.set_title(f"{title} {m}{score}", fontsize=9)
        ax.axis("off")


#: The widget's mask colour: a saturated cyan, rare in photos, with a dark rim to its
#: contour so that it reads on light and dark backgrounds alike.
MASK_COLOUR = (0, 215, 255)


def draw_mask_rgb(
    image: np.ndarray, mask: np.ndarray, colour=MASK_COLOUR, alpha: float = 0.4
) -> np.ndarray:
    """A mask drawn so that its shape reads on any photo: a half-transparent fill and a
    solid contour, the contour ``colour`` over a dark rim.

    The contour is the band where the mask, dilated, differs from the mask, eroded (OpenCV,
    round kernel): about 1/200 of the image's longer side (at least 2 pixels), holes'
    edges included; the rim is 2 pixels wider. A few passes over the image whatever the
    mask's shape, so an untrained decoder's ragged mask draws as fast as a smooth one.

    Args:
        image: ``H x W x 3`` uint8 RGB; mask: ``H x W`` bool.

    Returns:
        ``H x W x 3`` uint8 RGB (a new array)."""
    mask = np.asarray(mask, dtype=bool)
    out = overlay_masks(image, mask[None], alpha=alpha, colours=[colour])
    if not mask.any():
        return out
    width = max(2, round(max(image.shape[:2]) / 200))
    np.copyto(out, np.uint8(0), where=edge_band(mask, width + 2)[..., None])
    np.copyto(out, np.asarray(colour, np.uint8), where=edge_band(mask, width)[..., None])
    return out


def edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels within about ``width / 2`` of the edge of ``mask`` (``H x W`` bool), on
    both sides: ``dilate(mask) & ~erode(mask)`` with a ``width x width`` round kernel
    (the outer half ``width // 2`` pixels, the inner half the rest). Pixels outside
    the image count as background, so a mask that touches the border has an edge there
    too. Returns ``H x W`` bool."""
    import cv2

    outer, inner = width // 2, width - width // 2
    m = np.pad(mask, 1).astype(np.uint8)  # the image's border: background beyond it

    def disc(r):
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    grown = cv2.dilate(m, disc(outer)) if outer else m
    shrunk = cv2.erode(m, disc(inner), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (grown > shrunk)[1:-1, 1:-1]


def draw_prompts_rgb(image: np.ndarray, points=(), box=None) -> np.ndarray:
    """Prompts drawn into an ``H x W x 3`` uint8 RGB array for the widgets (fast, no
    matplotlib): positive points green, negative red, the box yellow.

    Args:
        points: ``(x, y, label)`` in pixel indices; box: ``(x0, y0, x1, y1)`` inclusive.
    """
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    r = max(3, round(min(image.shape[:2]) / 80))
    for x, y, label in points:
        fill = (40, 220, 40) if label else (230, 40, 40)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255), width=2)
    if box is not None:
        draw.rectangle(list(box), outline=(255, 230, 0), width=max(2, r // 2))
    return np.asarray(canvas)


def label_font(image_shape, fraction: float = 1 / 28, minimum: int = 14) -> ImageFont.ImageFont:
    """A font for text drawn into an image that is shown scaled to a panel: about
    ``fraction`` of the image's shorter side, never below ``minimum`` pixels, so that it
    stays readable at display size (PIL's default bitmap font is 11 px at any size)."""
    size = max(minimum, round(min(image_shape[:2]) * fraction))
    return ImageFont.load_default(size=size)


def stack_labels(anchors, sizes, gap: float = 1) -> list[tuple[float, float, float, float]]:
    """Where labels go so that none overlaps another: each label's top-left corner starts
    at its anchor ``(x, y)`` (pixels, y down) and moves down by its own height until it
    overlaps no label placed before it. Labels are placed in the given order (the most
    important first). Returns the rectangles ``(x0, y0, x1, y1)``."""
    placed: list[tuple[float, float, float, float]] = []
    for (x, y), (w, h) in zip(anchors, sizes):
        while any(
            x < bx1 and bx0 < x + w and y < by1 and by0 < y + h for bx0, by0, bx1, by1 in placed
        ):
            y += h + gap
        placed.append((x, y, x + w, y + h))
    return placed


def draw_labels_rgb(image: np.ndarray, texts, anchors, fills, ink=(0, 0, 0)) -> np.ndarray:
    """Text labels drawn into an ``H x W x 3`` uint8 RGB array, in a font sized for display
    (:func:`label_font`): label ``k`` in ``ink`` on a ``fills[k]`` box whose top-left
    corner starts at ``anchors[k]`` ``(x, y)`` and moves down until it overlaps no earlier
    label (:func:`stack_labels`; the most important first). Returns a new array."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = label_font(image.shape)
    extents = [draw.textbbox((0, 0), t, font=font) for t in texts]
    rects = stack_labels(
        anchors, [(right - left + 4, bottom - top + 4) for left, top, right, bottom in extents]
    )
    for text, (left, top, _, _), rect, fill in zip(texts, extents, rects, fills):
        draw.rectangle(list(rect), fill=tuple(int(c) for c in fill))
        draw.text((rect[0] + 2 - left, rect[1] + 2 - top), text, fill=ink, font=font)
    return np.asarray(canvas)


def draw_detections_rgb(image: np.ndarray, prediction: dict, threshold: float = 0.5) -> np.ndarray:
    """A detector's output drawn into an ``H x W x 3`` uint8 RGB array (widgets and
    notebook figures): masks, boxes and score labels of the detections scoring at least
    ``threshold``, highest first, each label inside its box's top-left corner
    (:func:`draw_labels_rgb`).

    Args:
        prediction: torchvision's output dict for one image on the CPU (``boxes``
            ``K x 4`` xyxy pixels, ``scores`` ``K``, ``masks`` ``K x 1 x H x W``).
    """
    scores = np.asarray(prediction["scores"], float)
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep])]
    masks = np.asarray(prediction["masks"])[keep, 0] > 0.5
    canvas = Image.fromarray(overlay_masks(image, masks, alpha=0.45))
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(min(image.shape[:2]) / 200))
    colours = [
        tuple(int(c) for c in INSTANCE_COLOURS[r % len(INSTANCE_COLOURS)]) for r in range(len(keep))
    ]
    boxes = [[float(v) for v in prediction["boxes"][k]] for k in keep]
    for box, colour in zip(boxes, colours):  # every box first, so that no box crosses a label
        draw.rectangle(box, outline=colour, width=line)
    anchors = [(x0 + line, y0 + line) for x0, y0, _, _ in boxes]
    return draw_labels_rgb(np.asarray(canvas), [f"{scores[k]:.2f}" for k in keep], anchors, colours)


def show_automatic_masks(axes, image, gt, generated: dict, scores: dict | None = None) -> None:
    """Ground truth and each model's automatic masks on one image, a panel each.

    Args:
        axes: ``1 + len(generated)`` matplotlib axes.
        gt: ``N x H x W`` bool ground-truth instances.
        generated: model name -> list of ``H x W`` bool masks (largest drawn first, so
            small masks stay visible on top).
        scores: model name -> a short text for the title (e.g. its mean best IoU).
    """
    axes[0].imshow(overlay_masks(image, np.asarray(gt, bool), alpha=0.55))
    axes[0].set_title(f"ground truth ({len(gt)})", fontsize=9)
    for ax, (name, masks) in zip(axes[1:], generated.items()):
        ordered = sorted(masks, key=lambda m: -int(np.count_nonzero(m)))
        stack = np.asarray(ordered, bool).reshape(-1, *image.shape[:2])
        ax.imshow(overlay_masks(image, stack, alpha=0.55))
        extra = f", {scores[name]}" if scores and name in scores else ""
        ax.set_title(f"{name}: masks {len(masks)}{extra}", fontsize=9)
    for ax in axes:
        ax.axis("off")
