"""The engine and the Slicer module run on the oldest Python we support: 3.9 (Slicer 5.8).

Three independent checks, so a 3.10-only construct fails CI even without a Python 3.9 at hand:
vermin's minimum version of every source file, our own scan for ``X | Y`` type unions evaluated at
run time (vermin cannot tell those from annotations), and, where a Python 3.9 interpreter exists,
compiling every file with it.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = (REPO / "PancDiffSlicer", REPO / "scripts")
MINIMUM = (3, 9)
BUILTIN_TYPES = {"int", "float", "str", "bytes", "bool", "list", "dict", "tuple", "set", "frozenset", "type", "None"}


def _sources() -> list[Path]:
    return sorted(
        p
        for folder in SOURCE_DIRS
        for p in folder.rglob("*.py")
        if "__pycache__" not in p.parts and not any(part.endswith(".egg-info") for part in p.parts)
    )


def test_every_source_file_needs_at_most_python_3_9_according_to_vermin():
    try:
        import vermin  # noqa: F401
    except ImportError:
        pytest.fail('vermin is missing: pip install -e ".[test]" (or pip install vermin)')
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())",
         f"-t={MINIMUM[0]}.{MINIMUM[1]}-", "--violations", "--no-tips", "-q", *map(str, _sources())],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, f"needs a newer Python than 3.9:\n{completed.stdout}{completed.stderr}"


def test_vermin_check_fails_on_a_python_3_10_construct(tmp_path):
    """The check above can fail: ``itertools.pairwise`` (what stopped the engine in Slicer 5.8)."""
    pytest.importorskip("vermin")
    bad = tmp_path / "bad.py"
    bad.write_text("import itertools\nprint(list(itertools.pairwise([1, 2, 3])))\n")
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())",
         "-t=3.9-", "--violations", "--no-tips", "-q", str(bad)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode != 0 and "pairwise" in completed.stdout


def runtime_unions(source: str) -> list[int]:
    """Lines where ``A | B`` builds a type at run time (not inside an annotation).

    Flags unions with ``None`` or a builtin type on either side, and any ``|`` inside the second
    argument of ``isinstance``/``issubclass``; ``set_a | set_b`` and flag arithmetic are left alone.
    """
    tree = ast.parse(source)
    annotations: set[int] = set()
    for node in ast.walk(tree):
        parts = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [a.annotation for a in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs)]
            parts += [node.args.vararg and node.args.vararg.annotation, node.args.kwarg and node.args.kwarg.annotation]
            parts.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            parts = [node.annotation]
        for part in parts:
            if part is not None:
                annotations.update(id(n) for n in ast.walk(part))

    def typeLike(n: ast.AST) -> bool:
        if isinstance(n, ast.Constant) and n.value is None:
            return True
        if isinstance(n, ast.Name) and n.id in BUILTIN_TYPES:
            return True
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id in BUILTIN_TYPES:
            return True
        return isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) and (typeLike(n.left) or typeLike(n.right))

    lines = []
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        isUnion = isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)
        if isUnion and (typeLike(node.left) or typeLike(node.right)):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
            and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(node.args[1]))
        ):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_no_type_union_is_evaluated_at_run_time():
    found = {
        str(path.relative_to(REPO)): lines
        for path in _sources()
        if (lines := runtime_unions(path.read_text(encoding="utf-8")))
    }
    assert not found, f"X | Y evaluated at run time needs Python 3.10 (use Optional/Union or a tuple): {found}"


def test_runtime_union_scan_tells_annotations_from_expressions():
    source = (
        "from __future__ import annotations\n"
        "def f(x: int | None, *a: str | bytes) -> dict[str, int] | None:\n"
        "    y: list[int] | None = None\n"
        "    flags = 1 | 2\n"
        "    both = set() | set()\n"
        "    return isinstance(x, int | str)\n"
        "Alias = int | None\n"
    )
    assert runtime_unions(source) == [6, 7]


def _python39() -> str | None:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [os.environ.get("PANCDIFF_PYTHON39")]
    candidates += sorted(str(p / "bin" / "python3.9") for p in pyenv.glob("3.9.*")) if pyenv.is_dir() else []
    candidates.append(shutil.which("python3.9"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if probe.returncode == 0 and probe.stdout.strip() == "True":  # a pyenv shim may not run
                return candidate
    return None


def test_every_source_file_compiles_with_python_3_9():
    python = _python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter here (set PANCDIFF_PYTHON39); vermin and the scan above still ran")
    script = (
        "import sys\n"
        "bad = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        compile(open(path, encoding='utf-8').read(), path, 'exec', dont_inherit=True)\n"
        "    except SyntaxError as exc:\n"
        "        bad.append(f'{path}:{exc.lineno}: {exc.msg}')\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    completed = subprocess.run(
        [python, "-c", script, *map(str, _sources())], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_packaging_and_lint_target_python_3_9():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^requires-python = ">=3\.9"$', text, re.MULTILINE)
    assert re.search(r'^target-version = "py39"$', text, re.MULTILINE)


_IMPORT_SURVEY = """
import importlib, json, pkgutil, sys
sys.path[:0] = [sys.argv[1]]
import pancdiff
names = [m.name for m in pkgutil.walk_packages(pancdiff.__path__, "pancdiff.") if not m.name.endswith("__main__")]
names += ["PancDiffSlicerLib." + n for n in sys.argv[2].split(",")]
result = {"ok": [], "needs": {}, "failed": {}}
for name in names:
    try:
        importlib.import_module(name)
        result["ok"].append(name)
    except ModuleNotFoundError as exc:
        bucket = "needs" if exc.name in ("torch", "monai", "slicer", "vtk", "qt") else "failed"
        result[bucket][name] = str(exc)
    except Exception as exc:
        result["failed"][name] = repr(exc)
print(json.dumps(result))
"""


def test_engine_and_module_helpers_run_on_python_3_9(tmp_path):
    """On a real Python 3.9 with the engine's light dependencies (no torch here): every module imports
    (or needs only torch/MONAI/Slicer), every command's --help, doctor (exit 3: no torch) and a phantom.

    Set PANCDIFF_PYTHON39 to such an interpreter (a venv with numpy, SimpleITK, scipy, safetensors,
    einops, pillow, matplotlib, tqdm) to run it.
    """
    import json

    python = os.environ.get("PANCDIFF_PYTHON39")
    if not python:
        pytest.skip("set PANCDIFF_PYTHON39 to a Python 3.9 with the engine's dependencies")
    engine = REPO / "PancDiffSlicer"
    env = {**os.environ, "PYTHONPATH": str(engine)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=tmp_path, check=False)

    assert run("-c", "import sys; assert sys.version_info[:2] == (3, 9)").returncode == 0
    lib = ",".join(p.stem for p in (engine / "PancDiffSlicerLib").glob("*.py") if p.stem != "__init__")
    survey = json.loads(run("-c", _IMPORT_SURVEY, str(engine), lib).stdout)
    assert survey["failed"] == {}, survey["failed"]
    assert "pancdiff.cli" in survey["ok"] and "PancDiffSlicerLib.contract" in survey["ok"]
    from pancdiff.cli import COMMANDS

    for command in ("", *COMMANDS):
        completed = run("-m", "pancdiff", *([command] if command else []), "--help")
        assert completed.returncode == 0, f"pancdiff {command} --help on 3.9: {completed.stderr[-2000:]}"
    doctor = run("-m", "pancdiff", "doctor")
    assert doctor.returncode in (0, 3) and "bundled models" in doctor.stdout, doctor.stderr[-2000:]
    phantom = run("-m", "pancdiff", "phantom", "--out", str(tmp_path / "ph"), "--cases", "1", "--size", "48",
                  "--slices", "6", "--quiet")  # fmt: skip
    assert phantom.returncode == 0 and (tmp_path / "ph" / "dataset.json").is_file(), phantom.stderr[-2000:]
