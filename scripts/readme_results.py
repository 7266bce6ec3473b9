"""The README's measured figures, generated from the benchmarks' results files.

Repository tooling (not part of the installed package). Every figure a benchmark measures lives in
``benchmarks/results/<name>.json`` (written by the benchmark itself); the README holds
each such passage between two markers::

    <!-- results: onnx_decoder -->
    ... text generated from benchmarks/results/onnx_decoder.json ...
    <!-- /results -->

``python -m scripts.readme_results`` rewrites every marked passage from its files;
a test fails while any passage differs from what its files give, so no measured figure
in the README is typed by hand. Each passage ends with the command that measures it and
the date of the measurement.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from helpers.course.runtime import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"(<!-- results: (\w+) -->\n)(.*?)(<!-- /results -->)", re.S)


class Results:
    """The results files one passage reads; remembers which, for the passage's footer."""

    def __init__(self, folder: Path = RESULTS):
        self.folder, self.used, self.names = folder, [], []

    def __call__(self, name: str) -> dict:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the benchmark that writes it")
        record = json.loads(path.read_text())
        self.used.append(record)
        self.names.append(name)
        return record["results"]

    def footer(self) -> str:
        lines = [f"`{r['command']}`, {r['measured']}" for r in self.used]
        return "Measured by " + "; ".join(lines) + "."


def _s(v: float) -> str:
    return f"{v:.1f} s" if v >= 1 else f"{v:.3f} s"


def voc_extract(r: Results) -> str:
    x = r("voc_extract")
    return (
        f"For VOC2007's two archives ({x['archive_mb']:,} MB, {x['files']:,} files) that took "
        f"**{x['reextract_s']:.1f} s** on this machine's disk through `download_voc2007` "
        f"itself, {x['tar_only_s']:.1f} s for `tarfile` alone (archives of the real size and "
        "layout); reading the archives through the Drive mount comes on top (not measurable "
        "here; expect it to dominate)."
    )


def roi_align(r: Results) -> str:
    x = r("roi_align")
    rows = [
        "| feature map | torchvision | `helpers.detection.roi_align` | "
        "ratio (ours / torchvision) |",
        "| --- | --- | --- | --- |",
    ]
    for s in x["sizes"]:
        side = s["feature_map"][-1]
        rows.append(
            f"| {side} x {side} (stride {800 // side}) | {_s(s['torchvision_s'])} | "
            f"{_s(s['ours_s'])} | {s['ratio']:.2f} |"
        )
    worst = max(s["max_abs_diff"] for s in x["sizes"])
    n_images, channels = x["sizes"][0]["feature_map"][:2]
    return (
        f"{n_images} images, {channels} channels, {x['rois']} boxes drawn like Mask R-CNN "
        "proposals on an 800 px image (sides 32..512 px), "
        f"{x['output']} x {x['output']} output, `sampling_ratio={x['sampling_ratio']}`, "
        f"`aligned=True`; median of {x['repeat']} runs, {x['threads']} threads, both side by "
        f"side in one run. Outputs agree to {worst:.0e}.\n\n" + "\n".join(rows)
    )


def roundtrip(r: Results) -> str:
    x = r("roi_align")
    rows = [
        "| stride | object half-height | RoI Pool | `aligned=False` | `aligned=True`, rounded "
        "box | `aligned=True` | the shift costs | the rounding costs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stride_key, table in x["roundtrip"].items():
        stride = stride_key.split("_")[1]
        for radius, t in table.items():
            rows.append(
                f"| {stride} | {radius} px | {t['pool']:.3f} | {t['align_false']:.3f} | "
                f"{t['align_rounded']:.3f} | {t['align']:.3f} | "
                f"{t['align'] - t['align_false']:.3f} | {t['align'] - t['align_rounded']:.3f} |"
            )
    return f"{x['objects']} objects per size:\n\n" + "\n".join(rows)


def recipe_margins(r: Results) -> str:
    x = r("recipe_margins")
    names = {
        "sam": "SAM recipe",
        "seed": "seed recipe",
        "sam_without_multimask_loss": "SAM recipe, multimask loss cut",
    }

    def span(lo_hi):
        lo, hi = lo_hi
        return f"{lo:+.3f}" if lo == hi else f"{lo:+.3f} to {hi:+.3f}"

    b = x["before"]
    rows = [
        "| recipe | runs | test mIoU@1 | test box mIoU | train mIoU@1 | train box mIoU |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| released decoder (before) | | {b['miou@1']:.3f} | {b['box_miou']:.3f} "
        f"| {b['train_miou@1']:.3f} | {b['train_box_miou']:.3f} |",
    ]
    for key, label in names.items():
        if key in x["ranges"]:
            g = x["ranges"][key]
            rows.append(
                f"| {label} | {len(x['runs'][key])} | {span(g['miou@1'])} | {span(g['box_miou'])} "
                f"| {span(g['train_miou@1'])} | {span(g['train_box_miou'])} |"
            )
    s = x["settings"]
    return (
        f"Notebook 03's smoke settings ({s['epochs']} epochs, lr {s['lr']:g}, "
        f"{s['click_rounds']} click and {s['refine_rounds']} refinement rounds), smoke mode's "
        "pretrained small SAM; the released decoder's figures, then each recipe's change to "
        "`best.pt`, first click and box alone:\n\n" + "\n".join(rows)
    )


def sam_epoch(r: Results) -> str:
    runs = [r("sam_epoch_vit_b_4"), r("sam_epoch_vit_b_8")]
    rows = [
        "| run | images (instances) | vit_b encoder per image | seed's epoch | our epoch "
        "(cache warm) | our first epoch (fills the cache) | speedup | interactive recipe, "
        "epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in runs:
        rows.append(
            f"| `--images {x['images']}` | {x['images']} ({x['instances']}) | "
            f"{x['encoder_s_per_image']:.1f} s | {x['seed_epoch_s']:.1f} s | "
            f"{x['ours_epoch_s']:.1f} s | {x['ours_first_epoch_s']:.1f} s | "
            f"**{x['speedup']:.1f}x** | {x['sam_recipe_epoch_s']:.1f} s |"
        )
    per_image = [x["sam_recipe_epoch_s"] / x["images"] for x in runs]
    ratio = [x["sam_recipe_vs_seed_recipe"] for x in runs]
    return (
        "\n".join(rows)
        + f"\n\nThe interactive recipe costs {min(per_image):.1f}-{max(per_image):.1f} s per "
        f"vit_b image and epoch on this CPU, {min(ratio):.1f} to {max(ratio):.1f} times the "
        "seed recipe's two passes."
    )


def maskrcnn_data(r: Results) -> str:
    x = r("maskrcnn_data")
    small, large = sorted(int(k.rsplit("_", 1)[1]) for k in x if k.startswith("lazy_peak_mib_"))
    return "\n".join(
        [
            f"| data set | peak RSS at N = {small} | peak RSS at N = {large} | growth |",
            "| --- | --- | --- | --- |",
            f"| this project's lazy `LabPicsDetection` | {x[f'lazy_peak_mib_{small}']} MiB | "
            f"{x[f'lazy_peak_mib_{large}']} MiB | **{x['rss_growth']:+.1%}** |",
            f"| eager, load-everything-at-start (the seed's way) | "
            f"{x[f'eager_peak_mib_{small}']} MiB | {x[f'eager_peak_mib_{large}']} MiB | "
            f"{x['eager_rss_growth']:+.0%} |",
            "",
            f"The training loop against a bare loop (sum of losses, backward, step) on the same "
            f"{x['batches']} batches and weights: `train_one_epoch` {x['train_one_epoch_s']:.2f} "
            f"s, bare {x['bare_loop_s']:.2f} s: overhead {x['loop_overhead']:+.0%} (goal: under "
            "5%).",
            "",
            f"The data path at LabPics' real size, in the same run: {x['photos']} synthetic "
            "1920 x 1080 samples, the training transforms, batch 2, through a `DataLoader`, "
            f"{x['workers']} worker processes now, the main process before; the working size "
            f"is {x['working_size'][1]} x {x['working_size'][0]}:",
            "",
            "| path | samples/s | one core: s per sample |",
            "| --- | --- | --- |",
            f"| before | {x['old_samples_per_s']:.2f} | {x['one_core_s_per_sample_old']:.3f} |",
            f"| now, first epoch (starting the workers) | {x['new_samples_per_s']:.2f} | |",
            f"| now, later epochs | {x['new_samples_per_s_warm']:.2f} | "
            f"{x['one_core_s_per_sample']:.3f} |",
            f"| ratio | **{x['data_speedup']:.2f}x** ({x['data_speedup_first_epoch']:.2f}x in the "
            f"first epoch) | **{x['one_core_speedup']:.1f}x** |",
            "",
            f"The colour jitter alone at the working size, one core: "
            f"{x['jitter_with_hue_ms']:.1f} ms with its hue part (an RGB-HSV round trip), "
            f"{x['jitter_without_hue_ms']:.1f} ms without.",
        ]
    )


def onnx_decoder(r: Results) -> str:
    x = r("onnx_decoder")
    q = x["int8_quantize_ms"]
    return "\n".join(
        [
            f"{x['clicks']} clicks, {x['threads']} threads, the three runtimes interleaved "
            f"click by click, over the first click of the protocol on {x['instances']} "
            "instances; full-size masks:",
            "",
            "| runtime | file | ms per click (median) |",
            "| --- | --- | --- |",
            f"| PyTorch (`helpers.sam.predict.predict`) | | {x['torch_ms']:.1f} |",
            f"| onnxruntime fp32 | {x['onnx_mb']:.1f} MB | {x['onnx_ms']:.1f} "
            f"(**{x['onnx_vs_torch']:.1f}x** faster than PyTorch here) |",
            f"| onnxruntime int8 (dynamic quantisation) | {x['int8_mb']:.1f} MB | "
            f"{x['onnx_int8_ms']:.1f} |",
            "",
            f"int8 masks against fp32 (the first click's best mask): mean IoU "
            f"**{x['int8_miou_vs_fp32']:.3f}**, lowest {x['int8_min_iou_vs_fp32']:.3f}; the "
            f"largest change of a low-res logit {x['int8_max_low_res_diff']:.3f}. Where the "
            f"time goes (onnxruntime's profiler, kernel time per click): fp32 "
            f"{x['fp32_kernel_ms']:.1f} ms, int8 {x['int8_kernel_ms']:.1f} ms, of which "
            f"{q:.1f} ms is `DynamicQuantizeLinear`, the quantisation of activations on every "
            "call.",
        ]
    )


def widget_latency(r: Results) -> str:
    rows = ["| backend | median | p95 |", "| --- | --- | --- |"]
    x = r("widget_latency_vit_b")
    rows.append(f"| {x['backend']} | **{x['median_ms']:.1f} ms** | {x['p95_ms']:.1f} ms |")
    rows.append(
        f"| PyTorch, the same clicks in the same run | {x['torch_median_ms']:.1f} ms | "
        f"{x['torch_p95_ms']:.1f} ms |"
    )
    parts = x["parts_median_ms"]
    return (
        f"{x['clicks']} scripted clicks on a {x['image'][1]} x {x['image'][0]} image, "
        f"{x['models_compared']} vit_b decoders (random weights: no checkpoint here), "
        f"{x['threads']} CPU threads:\n\n"
        + "\n".join(rows)
        + f"\n\nWhere an onnxruntime click's time goes (medians): the two decoders, side by "
        f"side, {parts['predict']:.1f} ms; drawing and JPEG-encoding both panels, side by "
        f"side, {parts['draw_and_encode']:.1f} ms."
    )


def encode_memory(r: Results) -> str:
    x = r("encode_memory")
    rows = [
        "| variant | the built model | encoding's peak on top (one image per call) |",
        "| --- | --- | --- |",
    ]
    for variant, row in x["variants"].items():
        c = row["course"]
        rows.append(f"| {variant} | {c['model_mib']:,} MiB | {c['encoding_rise_mib']:,} MiB |")
    text = "\n".join(rows)
    b = x["variants"].get("vit_b", {}).get("batch_4")
    if b:
        text += (
            f"\n\nvit_b four images per call, as the cache did before: "
            f"{b['encoding_rise_mib']:,} MiB on top of the model."
        )
    return (
        f"{x['images']} VOC-sized images encoded on this CPU, each case in a fresh process:\n\n"
        + text
    )


def _audit_line(x: dict) -> str:
    t = x["totals"]
    escaped = [r["description"] for r in x["results"] if r["outcome"] != "caught"]
    text = (
        f"{t['tried']} bugs in {len(x['modules'])} modules: **{t['caught']} of {t['tried']}** "
        f"caught ({x['caught_share']:.1%})"
    )
    return text + ("; not caught: " + "; ".join(escaped) + "." if escaped else ".")


def mutation_audit_first_round(r: Results) -> str:
    return _audit_line(r("mutation_audit_new_first_round"))


def mutation_audit(r: Results) -> str:
    return _audit_line(r("mutation_audit_new_targeted"))


def notebook_breaks(r: Results) -> str:
    x = r("notebook_breaks")
    per = {}
    for row in x["results"]:
        if "break" in row:
            n = per.setdefault(row["notebook"], [0, 0])
            n[0] += row["caught"]
            n[1] += 1
    parts = ", ".join(f"notebook {k}: {c} of {n}" for k, (c, n) in sorted(per.items()))
    text = f"**{x['caught']} of {x['breaks']}** caught ({parts})"
    return text + ("; not caught: " + "; ".join(x["escaped"]) + "." if x["escaped"] else ".")


def test_suite(r: Results) -> str:
    x = r("test_suite")
    slowest = "; ".join(f"`{s['item']}` {s['seconds']:.0f} s" for s in x["slowest"][:5])
    return (
        f"The whole command took **{x['seconds'] / 60:.1f} minutes** on this 2-core CPU "
        f"({x['passed']} passed, {x['skipped']} skipped, {x['workers']} worker processes; "
        f"without `{x['ignored']}`, which checks this very figure). The slowest items: "
        f"{slowest}."
    )


def pretrain_small_sam(r: Results) -> str:
    x = r("pretrain_small_sam")
    c, rel = x["config"], x["released"]
    return (
        f"Smoke mode's small SAM was pretrained for {x['steps']:,} steps ({c['passes']} passes "
        f"over {c['scenes']:,} synthetic scenes, {c['batch']} per step) in "
        f"{x['train_seconds'] / 60:.0f} min on this CPU, plus {x['pool_seconds'] / 60:.0f} min "
        f"drawing the scenes; the shipped file is {x['megabytes']} MB (fp16). On data_example's "
        f"held-out VOC test scenes, as shipped: box mIoU **{rel['box_miou']:.3f}**, mIoU@1 "
        f"**{rel['miou@1']:.3f}**, mIoU@3 **{rel['miou@3']:.3f}**."
    )


def lora_encoder(r: Results) -> str:
    x = r("lora_encoder")
    names = {
        "decoder_only": "decoder-only (cached embeddings)",
        "lora": "LoRA + decoder",
        "lora_checkpointing": "LoRA + decoder, checkpointed blocks",
    }
    rows = [
        "| arm | trained parameters | s per training photo | peak memory on top of the model "
        "| saved for backward (one encoder pass) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, arm in x["arms"].items():
        saved = f"{arm['saved_mib']:,} MiB" if key != "decoder_only" else "none"
        rows.append(
            f"| {names[key]} | {arm['trainable_parameters']:,} | {arm['s_per_image']:.1f} "
            f"| {arm['peak_rise_mib']:,} MiB | {saved} |"
        )
    t = x["t4_estimate"]
    est = "; ".join(
        f"{names[k]}: ~{v['encoder_s_per_image']:.2f} s of encoder per photo "
        f"(~{v['epoch_encoder_min']:.0f} min per {t['train_photos']} photos), peak ~"
        f"{v['peak_gib_batch_1']:.1f} GiB at one photo per step, so ~"
        f"{v['photos_per_step_in_15_gib']} photos per step fit in 15 GiB"
        for k, v in t.items()
        if k in names
    )
    return (
        f"{x['model']} with random weights, {x['images']} photos of LabPics' size "
        f"(1920 x 1080), the SAM recipe (1 + 8 + 2 decoder rounds per photo), each arm in a "
        f"fresh process on this CPU ({x['arms']['decoder_only']['memory_counted']}):\n\n"
        + "\n".join(rows)
        + f"\n\nFiles: the adapter (LoRA layers + decoder) {x['adapter_mib']} MiB, the merged "
        f"checkpoint {x['merged_mib']} MiB. One encoder forward pass at {x['frame']} x "
        f"{x['frame']}: {x['encoder_forward_gflop']:,} GFLOP (counted). T4 **estimate** "
        f"({t['assumed']}): {est}."
    )


RENDERERS: dict[str, Callable[[Results], str]] = {
    "voc_extract": voc_extract,
    "roi_align": roi_align,
    "roundtrip": roundtrip,
    "recipe_margins": recipe_margins,
    "sam_epoch": sam_epoch,
    "maskrcnn_data": maskrcnn_data,
    "onnx_decoder": onnx_decoder,
    "widget_latency": widget_latency,
    "encode_memory": encode_memory,
    "mutation_audit_first_round": mutation_audit_first_round,
    "mutation_audit": mutation_audit,
    "notebook_breaks": notebook_breaks,
    "test_suite": test_suite,
    "pretrain_small_sam": pretrain_small_sam,
    "lora_encoder": lora_encoder,
}


def render(name: str, folder: Path = RESULTS) -> str:
    """The passage ``name`` as generated from its results files, footer included."""
    if name not in RENDERERS:
        raise KeyError(f"no renderer for the README passage {name!r}")
    results = Results(folder)
    body = RENDERERS[name](results)
    return f"{body}\n\n{results.footer()}\n"


def regenerate(text: str, folder: Path = RESULTS) -> str:
    """``text`` with every marked passage rewritten from the results files."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), folder) + m.group(4), text)


def out_of_step(readme: Path = REPO_ROOT / "README.md", folder: Path = RESULTS) -> list[str]:
    """The names of the passages whose text differs from what their files give."""
    text = readme.read_text()
    return [m.group(2) for m in BLOCK.finditer(text) if m.group(3) != render(m.group(2), folder)]


def main() -> None:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    new = regenerate(text)
    if new != text:
        tmp = readme.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(readme)
    names = [m.group(2) for m in BLOCK.finditer(new)]
    print(f"{readme}: {len(names)} passages from benchmarks/results: {', '.join(names)}")


if __name__ == "__main__":
    sys.exit(main())
