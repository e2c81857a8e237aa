"""An exported ONNX file is usable without fgvc: README's program (onnxruntime, Pillow, NumPy) rebuilds the input
from the file's metadata alone and gets `fgvc predict`'s top-1 on every test image.

The program is README's fenced block itself, run in a fresh interpreter where importing fgvc fails, so README and
this test cannot drift apart. The runs are the tiny seeing runs: baseline (``plain``: resize, the backbone's
statistics) and FBSD (``fbsd``: resize to 550/448 of the size, centre crop), both at 64 px.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.cli import main
from fgvc.data.transforms import Preprocessing
from fgvc.engine.run import Run
from fgvc.export import load_exported
from tests.seeing_fixtures import build_data
from tests.serve.exports import export

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fgvc[export]'")

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- program: predict-without-fgvc -->"

# Runs README's program with fgvc unimportable: the first finder on sys.meta_path refuses it, whether it is
# installed or on the path; the runner checks that before it runs the program.
RUNNER = """
import importlib.abc, sys
class NoFgvc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fgvc" or name.startswith("fgvc."):
            raise ImportError("fgvc is blocked in this test")
sys.meta_path.insert(0, NoFgvc())
try:
    import fgvc
except ImportError:
    pass
else:
    raise SystemExit("fgvc was importable")
program = sys.argv.pop(1)
exec(compile(program, "README.md", "exec"), {"__name__": "__main__"})
"""


def readme_program() -> str:
    """The fenced Python block right after README's marker."""
    text = README.read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert found, f"README.md has no ```python block after {MARKER}"
    return found.group(1)


def _predict(source: Path, data: Path, out: Path) -> dict[str, str]:
    assert main(["predict", str(source), "--data", str(data), "--out", str(out), "--group", "g", "--device", "cpu",
                 "--no-progress"]) == 0
    return {row["file"]: row["class_id"] for row in csv.DictReader((out / "predictions.csv").open())}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


def test_readme_program_is_a_dozen_lines_and_fgvc_is_blocked_in_its_interpreter():
    lines = [line for line in readme_program().splitlines() if line.strip()]
    assert len(lines) <= 16, lines
    blocked = subprocess.run([sys.executable, "-I", "-c", RUNNER, "import fgvc"], capture_output=True, text=True)
    assert blocked.returncode == 1 and "ImportError: fgvc is blocked in this test" in blocked.stderr, blocked.stderr


@pytest.mark.parametrize("model", ["baseline", pytest.param("fbsd", marks=pytest.mark.slow)])
def test_the_readme_program_without_fgvc_gets_fgvc_predicts_top1(base, tmp_path, model):
    done = export(base, model, "onnx")
    assert done.code == 0, done.err
    meta = load_exported(done.path, "cpu").preprocessing
    assert meta.recipe == {"baseline": "plain", "fbsd": "fbsd"}[model]
    assert (meta.crop is None) == (model == "baseline")  # plain: resize only; fbsd: resize and crop
    data = build_data(base)
    expected = _predict(done.path, data, tmp_path / "file")
    assert expected == _predict(done.run, data, tmp_path / "run")  # the file predicts as the run does
    images = sorted(p for p in (data / "test").iterdir())
    assert len(images) == len(expected) > 0
    ran = subprocess.run([sys.executable, "-I", "-c", RUNNER, readme_program(), str(done.path), *map(str, images)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr
    got = dict(line.rsplit(" ", 1) for line in ran.stdout.splitlines())
    assert {Path(path).name: class_id for path, class_id in got.items()} == \
        {Path(file).name: class_id for file, class_id in expected.items()}


def test_the_preprocessing_round_trips_through_a_checkpoint_and_an_exported_file(base):
    done = export(base, "baseline", "onnx")
    run = Run.open(done.run, device="cpu")
    stored = run.checkpoint["preprocessing"]
    assert Preprocessing.from_dict(stored) == run.preprocessing
    assert stored["resize"] == [64, 64] and stored["crop"] is None and stored["mean"] == [0.485, 0.456, 0.406]
    assert load_exported(done.path, "cpu").preprocessing == run.preprocessing


def test_a_checkpoint_with_only_the_recipe_name_resolves_it(base, tmp_path):
    from fgvc.engine.checkpoint import load_checkpoint, save_checkpoint
    from tests.seeing_fixtures import build_run, fresh_copy

    run_dir = fresh_copy(build_run(base, "fbsd"), tmp_path / "run")
    state = load_checkpoint(run_dir / "best.pt")
    new = Preprocessing.from_dict(state.pop("preprocessing"))
    (run_dir / "best.pt").unlink()
    save_checkpoint(run_dir / "best.pt", state)  # as fgvc wrote it before the preprocessing was stored
    old = Run.open(run_dir, device="cpu").preprocessing
    assert old == new and (old.resize, old.crop, old.mean) == ((round(64 * 550 / 448),) * 2, (64, 64), (0.5,) * 3)
