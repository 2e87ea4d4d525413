"""Helpers the GPU benchmarks rely on, checked on a CPU with tiny data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airbench_files_hold_the_npz_images_in_torchvision_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), "y_train": np.arange(5, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), "y_test": np.array([9, 0], np.uint8)}
    np.savez(tmp_path / "cifar10.npz", **arrays)
    counts = _load("airbench_data").write_airbench_files(tmp_path / "cifar10.npz", tmp_path / "work")
    assert counts == {"train": 5, "test": 2}
    for split in ("train", "test"):
        record = torch.load(tmp_path / "work" / "cifar10" / f"{split}.pt", weights_only=True)
        assert record["images"].dtype == torch.uint8 and record["labels"].dtype == torch.int64
        assert np.array_equal(record["images"].numpy(), arrays[f"x_{split}"])  # HWC, as torchvision's .data
        assert record["labels"].tolist() == arrays[f"y_{split}"].tolist()
        assert record["classes"][0] == "airplane" and len(record["classes"]) == 10


def test_airbench_files_refuse_images_of_another_shape(tmp_path):
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        _load("airbench_data").write_airbench_files(tmp_path / "cifar10.npz", tmp_path / "work")


def test_every_file_seeds_md_names_exists():
    """benchmarks/seeds.md (written by reproduce.py) and its rows name only files of this checkout
    (run directories under runs/ are outputs, and data folders are the user's: not checked)."""
    import re
    import sys

    root = BENCHMARKS.parent
    table = (BENCHMARKS / "seeds.md").read_text()
    named = set(re.findall(r"(?<![\w./-])((?:examples|benchmarks|archscale|tests)/[\w./-]*\w)", table))
    spec = importlib.util.spec_from_file_location("reproduce", BENCHMARKS / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = reproduce  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(reproduce)
    finally:
        del sys.modules["reproduce"]
    named |= {row.spec for row in reproduce.ROWS}
    assert "examples/cifar10_200k.yaml" in named and "examples/cifar10_compound_scaling.yaml" in named
    assert sorted(p for p in named if not (root / p).is_file()) == []
    assert "not in this checkout" not in table
