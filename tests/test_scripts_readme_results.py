"""No measured figure is typed into the README: every marked passage is what its
benchmark's results file gives (``python -m scripts.readme_results``)."""

import json
import shutil
from pathlib import Path

import pytest

from scripts import readme_results
from scripts.readme_results import BLOCK, RENDERERS, out_of_step, regenerate

ROOT = Path(__file__).resolve().parent.parent


README = ROOT / "README.md"


def test_every_passage_in_the_readme_equals_what_its_results_give():
    assert out_of_step() == [], "run `python -m scripts.readme_results` and commit"


def test_every_renderer_has_its_passage_once():
    names = [m.group(2) for m in BLOCK.finditer(README.read_text())]
    assert sorted(names) == sorted(RENDERERS)


def test_every_results_file_is_quoted_somewhere():
    """Each file in benchmarks/results is read by some passage: none measured for
    nothing, none quoted from a file that is gone."""
    read = set()
    for name in RENDERERS:
        results = readme_results.Results()
        RENDERERS[name](results)
        read |= set(results.names)
    files = {f.stem for f in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert files == read


def test_a_changed_figure_makes_the_check_fail(tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", folder)
    path = folder / "onnx_decoder.json"
    record = json.loads(path.read_text())
    record["results"]["onnx_ms"] += 1.0
    path.write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text())
    assert out_of_step(readme, folder) == ["onnx_decoder"]
    readme.write_text(regenerate(readme.read_text(), folder))
    assert out_of_step(readme, folder) == []


def test_a_missing_results_file_names_the_benchmark(tmp_path):
    with pytest.raises(FileNotFoundError, match="onnx_decoder.json: missing"):
        readme_results.render("onnx_decoder", tmp_path)
