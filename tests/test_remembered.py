"""helpers.remembered: results kept under the fingerprint of what determines them."""

import numpy as np
import torch

from helpers.remembered import fingerprint, function_identity, remembered


def test_the_fingerprint_sees_every_value_shape_and_dtype():
    base = fingerprint({"a": np.zeros((2, 3)), "b": [1, 2]}, torch.ones(2))
    assert base == fingerprint({"b": [1, 2], "a": np.zeros((2, 3))}, torch.ones(2))  # key order
    for other in (
        ({"a": np.zeros((3, 2)), "b": [1, 2]}, torch.ones(2)),  # shape
        ({"a": np.zeros((2, 3), np.float32), "b": [1, 2]}, torch.ones(2)),  # dtype
        ({"a": np.zeros((2, 3)), "b": [1, 3]}, torch.ones(2)),  # a value
        ({"a": np.zeros((2, 3)), "b": [1, 2]}, torch.ones(2) * 1.0001),
    ):
        assert fingerprint(*other) != base
    lin = torch.nn.Linear(2, 2)
    before = fingerprint(lin)
    with torch.no_grad():
        lin.weight[0, 0] += 1e-6
    assert fingerprint(lin) != before


def test_two_lambdas_are_told_apart_by_their_code():
    a = lambda x: x / 255  # noqa: E731
    b = lambda x: x  # noqa: E731
    assert function_identity(a) != function_identity(b)
    assert function_identity(a) == function_identity(a)


def test_a_result_is_computed_once_and_an_unreadable_file_again(tmp_path, caplog):
    calls = []

    def compute():
        calls.append(1)
        return {"score": 0.5, "per_item": np.arange(3.0), "rows": [(1, [np.ones(2)])]}

    first = remembered(tmp_path, "x", "k" * 40, compute)
    second = remembered(tmp_path, "x", "k" * 40, compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(second["per_item"], first["per_item"])
    assert second["rows"][0][0] == 1 and isinstance(second["rows"][0][1][0], np.ndarray)
    (path,) = tmp_path.glob("x-*.pt")
    path.write_bytes(b"truncated")
    remembered(tmp_path, "x", "k" * 40, compute)
    assert len(calls) == 2 and "unreadable" in caplog.text
    remembered(None, "x", "k" * 40, compute)  # no folder: always computed
    assert len(calls) == 3


def test_results_are_read_without_running_pickled_code(tmp_path):
    """The file is loaded with weights_only=True: a pickle whose __reduce__ would run
    code is refused (and computed again), and its code never runs."""
    import os

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"key": "k" * 40, "result": Evil()}, tmp_path / "x-kkkkkkkkkkkkkkkk.pt")
    assert remembered(tmp_path, "x", "k" * 40, lambda: {"fresh": 1}) == {"fresh": 1}
    assert not marker.exists()


def test_keys_that_share_the_file_names_prefix_are_still_told_apart(tmp_path):
    first = remembered(tmp_path, "x", "a" * 16 + "1" * 24, lambda: {"v": 1})
    second = remembered(tmp_path, "x", "a" * 16 + "2" * 24, lambda: {"v": 2})
    assert (first, second) == ({"v": 1}, {"v": 2})


def test_tensors_of_other_shapes_have_other_fingerprints():
    assert fingerprint(torch.zeros(2, 3)) != fingerprint(torch.zeros(3, 2))
    assert fingerprint(torch.zeros(6)) != fingerprint(torch.zeros(2, 3))


def test_lambdas_with_the_same_constants_are_told_apart_by_their_code():
    plus = lambda x: x + 1  # noqa: E731
    minus = lambda x: x - 1  # noqa: E731
    assert function_identity(plus) != function_identity(minus)


def test_modules_with_scalar_buffers_have_fingerprints():
    """A BatchNorm holds a 0-dim int64 counter (num_batches_tracked), as Mask R-CNN does."""
    bn = torch.nn.BatchNorm2d(3)
    before = fingerprint(bn)
    bn.num_batches_tracked += 1
    assert fingerprint(bn) != before
    assert fingerprint(torch.tensor(3)) != fingerprint(torch.tensor(4))
    assert fingerprint(torch.tensor([True, False])) != fingerprint(torch.tensor([False, True]))
