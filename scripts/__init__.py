"""Repository tooling: what makes or checks the files committed in this checkout. Not
part of the installed ``helpers`` package; run from the repository root:

- ``python -m scripts.local_setup``: README command 1's set-up of a checkout (the git
  filter, the Jupyter save hook, the kernel's ``language_info`` in the notebooks);
- ``python -m scripts.data_example``: regenerates ``data_example/``;
- ``python -m scripts.readme_results``: rewrites the README's measured passages from
  ``benchmarks/results/``;
- ``python -m scripts.colab_setup``: rewrites every notebook's Colab setup cell and
  badge from ``[tool.segcourse]`` in ``pyproject.toml``;
- ``scripts/slurm_train_sam_decoder.sbatch``: notebook 06's cluster launch.
"""
