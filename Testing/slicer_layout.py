"""What the module's CMake installs, evaluated here without CMake or Slicer.

``slicerMacroBuildScriptedModule(SCRIPTS ... RESOURCES ...)`` copies every listed file, keeping its path
relative to the module folder, into ``lib/Slicer-X.Y/qt-scripted-modules/`` of the extension. This
reads the few CMake commands our ``CMakeLists.txt`` uses (``set``, ``list(APPEND)``,
``file(GLOB_RECURSE ... RELATIVE ...)``), so a file missing from the lists is missing from the layout
the tests build, as it would be in an installed Slicer.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancDiffSlicer"
SCRIPTED_MODULES_DIR = "lib/Slicer-5.8/qt-scripted-modules"
_COMMAND = re.compile(r"^\s*(set|list|file)\s*\((.*?)\)", re.DOTALL | re.MULTILINE | re.IGNORECASE)


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("#") else "" for line in text.splitlines())


def _glob_recurse(source_dir: Path, pattern: str) -> list[str]:
    folder, _, name_pattern = pattern.rpartition("/")
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if fnmatch.fnmatchcase(name, name_pattern):
                found.append(Path(dirpath, name).relative_to(source_dir).as_posix())
    return sorted(found)


def cmake_lists(module_dir: Path = MODULE_DIR) -> dict[str, list[str]]:
    """The CMake variables of the module's ``CMakeLists.txt``, globs evaluated against ``module_dir``."""
    variables: dict[str, list[str]] = {
        "CMAKE_CURRENT_SOURCE_DIR": [str(module_dir)],
    }

    def expand(token: str) -> list[str]:
        whole = re.fullmatch(r"\$\{(\w+)\}", token)
        if whole:
            return list(variables.get(whole.group(1), []))
        return [re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), token)]

    text = _strip_comments((module_dir / "CMakeLists.txt").read_text(encoding="utf-8"))
    for command, body in _COMMAND.findall(text):
        tokens = [t for raw in body.split() for t in expand(raw)]
        command = command.lower()
        if command == "set" and tokens:
            variables[tokens[0]] = tokens[1:]
        elif command == "list" and tokens[:1] == ["APPEND"]:
            variables.setdefault(tokens[1], []).extend(tokens[2:])
        elif command == "file" and tokens[:1] == ["GLOB_RECURSE"]:
            name, rest = tokens[1], tokens[2:]
            relative_to = Path(rest[rest.index("RELATIVE") + 1]) if "RELATIVE" in rest else None
            patterns = [t for t in rest if t not in ("RELATIVE", "CONFIGURE_DEPENDS") and Path(t) != relative_to]
            assert relative_to == module_dir, "only RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} globs are understood"
            variables[name] = [p for pattern in patterns for p in _glob_recurse(module_dir, pattern)]
    return variables


def installed_files(module_dir: Path = MODULE_DIR) -> list[str]:
    """Module-relative paths that the extension installs (scripts and resources)."""
    variables = cmake_lists(module_dir)
    return sorted(set(variables["MODULE_PYTHON_SCRIPTS"]) | set(variables["MODULE_PYTHON_RESOURCES"]))


def build_installed_layout(prefix: Path, module_dir: Path = MODULE_DIR) -> Path:
    """Copy exactly what CMake installs under ``prefix``; returns the ``qt-scripted-modules`` folder."""
    target = Path(prefix) / SCRIPTED_MODULES_DIR
    for relative in installed_files(module_dir):
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module_dir / relative, destination)
    return target
