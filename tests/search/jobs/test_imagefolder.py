"""An image folder through the commands: a bad folder is exit 2 with nothing written, and a
run's class names reach result.json, the exported arch.yaml, metrics.json and model.py."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from archscale.cli import main
from tests.conftest import FOLDER_CLASSES, FOLDER_SIDE, TINY_SPEC, make_image_folder


def folder_spec(folder: Path, data_root: Path, **search) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["name"] = "pets"
    spec["data"] = {"dataset": f"imagefolder:{folder}", "image_size": FOLDER_SIDE, "root": str(data_root),
                    "val_fraction": 0.2}
    spec["space"]["params"].update(c1_width=4, c3_width=8, c4_width=8, c3_conv="regular")
    spec["search"].update(num_trials=1, max_concurrent=1, **search)
    return spec


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("damage, said", [
    (lambda root: (root / "train" / "dog" / "readme.md").write_text("#"), "readme.md: not an image"),
    (lambda root: (root / "test" / "fish").rename(root / "test" / "bird"), "classes differ from train/'s"),
], ids=["not an image", "classes differ"])
def test_a_bad_folder_is_exit_2_naming_the_path_and_nothing_is_written(tmp_path, write_spec, capsys, command,
                                                                       damage, said):
    folder = make_image_folder(tmp_path / "pets")
    damage(folder)
    spec = write_spec(folder_spec(folder, tmp_path / "data"))
    out = tmp_path / "run"
    assert main([command, str(spec), "--out", str(out)] if command == "run" else [command, str(spec)]) == 2
    err = capsys.readouterr().err
    assert said in err and str(folder) in err and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("archscale: error: ")  # then, for bad files, one line per file
    assert len(lines) == 1 or all(line.startswith(f"  {folder}") for line in lines[1:]), err
    assert not out.exists() and not (tmp_path / "data").exists()


def test_check_without_image_size_names_the_field(tmp_path, write_spec, capsys):
    spec = folder_spec(make_image_folder(tmp_path / "pets"), tmp_path / "data")
    del spec["data"]["image_size"]
    assert main(["check", str(write_spec(spec))]) == 2
    assert "data.image_size: not set" in capsys.readouterr().err


@pytest.mark.slow
def test_class_names_travel_from_the_folder_to_the_exported_model(tmp_path, write_spec, ray_session, capsys):
    folder = make_image_folder(tmp_path / "pets", splits=(("train", 6), ("val", 2), ("test", 2)))
    out = tmp_path / "run"
    assert main(["run", str(write_spec(folder_spec(folder, tmp_path / "data"))), "--out", str(out), "--quiet"]) == 0
    (trial,) = [p for p in (out / "trials").iterdir() if p.is_dir()]
    result = json.loads((trial / "result.json").read_text())
    assert result["classes"] == list(FOLDER_CLASSES)
    assert result["data"]["image_size"] == FOLDER_SIDE
    assert json.loads((out / "best" / "metrics.json").read_text())["classes"] == list(FOLDER_CLASSES)
    arch = yaml.safe_load((out / "best" / "arch.yaml").read_text())
    assert arch["classes"] == list(FOLDER_CLASSES)
    assert arch["params"]["in_channels"] == 3 and arch["params"]["image_size"] == FOLDER_SIDE
    spec = importlib.util.spec_from_file_location("exported_pets", out / "best" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.CLASSES == list(FOLDER_CLASSES)
    sys.modules.pop("exported_pets", None)
    # the report names the folder's classes in what the winner gets wrong
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    section = page[page.index("<h2 id='mistakes'>"):]
    table = section[section.index("<table"):section.index("</table>")]
    assert sorted(re.findall(r"<tr><td[^>]*>([^<]*)</td>", table)) == sorted(FOLDER_CLASSES)
    # the decoded folder is cached beside the data root, not in the run
    assert list((tmp_path / "data" / "imagefolder-cache").glob("pets-16px-*.npz"))
    assert not list(out.rglob("*.npz"))
