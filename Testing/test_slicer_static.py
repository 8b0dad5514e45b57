"""Static checks of the Slicer module that need no Slicer: its .ui, CMake lists and layering.

The widget cannot run here (no Slicer GUI), so what can go wrong between the files is checked by
reading them: every widget the module looks up exists in the .ui with the class its name promises,
every parameter-bound widget can represent its parameter's type, every MRML widget receives the
scene, and CMake ships every file the module needs.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from slicer_layout import cmake_lists

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancDiffSlicer"
MODULE_FILE = MODULE_DIR / "PancDiffSlicer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "PancDiffSlicer.ui"
CMAKE_FILE = MODULE_DIR / "CMakeLists.txt"
LIB_DIR = MODULE_DIR / "PancDiffSlicerLib"
ENGINE_DIR = MODULE_DIR / "pancdiff"

# Widget names end in what they are; the class each ending promises.
CLASS_BY_SUFFIX = {
    "CollapsibleButton": {"ctkCollapsibleButton"},
    "SegmentSelector": {"qMRMLSegmentSelectorWidget"},
    "MarkupsWidget": {"qSlicerSimpleMarkupsWidget"},
    "Selector": {"qMRMLNodeComboBox"},
    "Button": {"QPushButton", "QToolButton"},
    "Slider": {"ctkSliderWidget"},
    "ComboBox": {"QComboBox"},
    "CheckBox": {"QCheckBox"},
    "SpinBox": {"QSpinBox", "QDoubleSpinBox"},
    "Label": {"QLabel"},
    "ProgressBar": {"QProgressBar"},
    "TableView": {"qMRMLTableView"},
}

# Which widget classes Slicer's parameter-node connectors bind to which parameter types.
WIDGETS_FOR_TYPE = {
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox", "QPushButton"},
    "str": {"QLineEdit", "QTextEdit"},
    "enum": {"QComboBox"},
    "node": {"qMRMLNodeComboBox"},
}
QT_AND_CTK_BUILTINS = {
    "QWidget",
    "QLabel",
    "QPushButton",
    "QComboBox",
    "QCheckBox",
    "QSpinBox",
    "QDoubleSpinBox",
    "QProgressBar",
    "QTableView",
    "QLineEdit",
    "QToolButton",
    "QSlider",
    "QTextEdit",
}


def _expectedClasses(name: str) -> set[str]:
    for suffix, classes in CLASS_BY_SUFFIX.items():
        if name.lower().endswith(suffix.lower()):
            return classes
    raise AssertionError(f"widget name {name!r} does not end in a known kind ({', '.join(CLASS_BY_SUFFIX)})")


@pytest.fixture(scope="module")
def uiRoot() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def uiWidgets(uiRoot) -> dict[str, ET.Element]:
    return {w.get("name"): w for w in uiRoot.iter("widget")}


@pytest.fixture(scope="module")
def moduleTree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def _uiNamesUsedByModule(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def _parameterTypes(tree: ast.Module) -> dict[str, str]:
    """Parameter name -> "float" | "int" | "bool" | "str" | "enum" | "node" from the wrapper class."""
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PancDiffSlicerParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in wrapper.decorator_list)
    kinds = {}
    for statement in wrapper.body:
        if not isinstance(statement, ast.AnnAssign):
            continue
        annotation = statement.annotation
        if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
            annotation = annotation.slice.elts[0]
        typeName = ast.unparse(annotation)
        if typeName.startswith("vtkMRML"):
            kinds[statement.target.id] = "node"
        elif typeName in ("float", "int", "bool", "str"):
            kinds[statement.target.id] = typeName
        elif typeName in ("PancreasSource", "Device", "Quality"):
            kinds[statement.target.id] = "enum"
        else:
            raise AssertionError(f"parameter {statement.target.id}: unexpected type {typeName}")
    return kinds


def _parameterName(widget: ET.Element) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.find("string").text
    return None


def test_every_widget_the_module_uses_exists_in_the_ui_with_the_right_class(moduleTree, uiWidgets):
    used = _uiNamesUsedByModule(moduleTree)
    assert {"detectButton", "progressBar", "statusLabel"} <= used  # the walk does find the lookups
    for name in sorted(used):
        assert name in uiWidgets, f"self.ui.{name} is not in {UI_FILE.name}"
        assert uiWidgets[name].get("class") in _expectedClasses(name), (
            f"{name} is a {uiWidgets[name].get('class')} in the .ui, expected one of {_expectedClasses(name)}"
        )


def test_every_named_ui_widget_has_the_class_its_name_promises(uiRoot, uiWidgets):
    for name, widget in uiWidgets.items():
        if widget is uiRoot.find("widget"):
            continue
        assert widget.get("class") in _expectedClasses(name), f"{name}: {widget.get('class')}"


def test_parameter_bound_widgets_can_represent_their_parameter(moduleTree, uiWidgets):
    types = _parameterTypes(moduleTree)
    bound = {_parameterName(w): w for w in uiWidgets.values() if _parameterName(w)}
    assert bound, "no widget is bound to the parameter node"
    for parameter, widget in bound.items():
        assert parameter in types, f"{widget.get('name')} is bound to unknown parameter {parameter!r}"
        assert widget.get("class") in WIDGETS_FOR_TYPE[types[parameter]], (
            f"{widget.get('name')} ({widget.get('class')}) cannot represent {parameter}: {types[parameter]}"
        )
    for slider in (w for w in uiWidgets.values() if w.get("class") == "ctkSliderWidget"):
        # the connector refuses unbounded floats on a slider
        assert _parameterName(slider), f"{slider.get('name')} is not bound to a parameter"


def test_bound_ranges_in_the_ui_match_the_parameter_ranges(moduleTree, uiWidgets):
    wrapper = next(
        n for n in moduleTree.body if isinstance(n, ast.ClassDef) and n.name == "PancDiffSlicerParameterNode"
    )
    ranges = {}
    for statement in wrapper.body:
        if isinstance(statement, ast.AnnAssign) and "WithinRange" in ast.unparse(statement.annotation):
            call = next(n for n in ast.walk(statement.annotation) if isinstance(n, ast.Call))
            ranges[statement.target.id] = tuple(float(ast.literal_eval(a)) for a in call.args)
    assert ranges["guidanceScale"] == (0, 20) and ranges["noiseLevel"] == (10, 600)
    assert ranges["thresholdPercent"] == (5, 95)
    for widget in uiWidgets.values():
        parameter = _parameterName(widget)
        if parameter in ranges and widget.get("class") == "ctkSliderWidget":
            props = {p.get("name"): p for p in widget.findall("property")}
            ui = (float(props["minimum"][0].text), float(props["maximum"][0].text))
            assert ui == ranges[parameter], f"{widget.get('name')}: .ui range {ui} vs parameter {ranges[parameter]}"


def test_slider_defaults_are_the_bundled_models_operating_point(moduleTree, uiWidgets):
    """Parameter node, .ui and DetectionSettings start where the release chose (model.json), so a
    first Detect runs the validated setting; a new bundle with another operating point fails here."""
    import json
    import sys

    sys.path.insert(0, str(MODULE_DIR))
    from PancDiffSlicerLib.contract import FAST_NOISE, FAST_STEPS, DetectionSettings

    op = json.loads((MODULE_DIR / "Resources" / "Models" / "model.json").read_text())["operating_point"]
    expected = {
        "guidanceScale": op["scale"], "noiseLevel": op["noise_level"], "thresholdPercent": 100 * op["threshold"]
    }  # fmt: skip
    wrapper = next(
        n for n in moduleTree.body if isinstance(n, ast.ClassDef) and n.name == "PancDiffSlicerParameterNode"
    )
    defaults = {
        s.target.id: ast.literal_eval(s.value)
        for s in wrapper.body
        if isinstance(s, ast.AnnAssign) and s.value and s.target.id in expected
    }
    for name, value in expected.items():
        assert defaults[name] == pytest.approx(value), f"parameter node {name}"
        widget = next(w for w in uiWidgets.values() if _parameterName(w) == name)
        props = {p.get("name"): p for p in widget.findall("property")}
        assert float(props["value"][0].text) == pytest.approx(value), f".ui {widget.get('name')}"
    settings = DetectionSettings()
    assert (settings.guidanceScale, settings.noiseLevel) == (op["scale"], op["noise_level"])
    assert settings.threshold == pytest.approx(op["threshold"])
    assert (FAST_STEPS, FAST_NOISE) == (op["steps"], op["noise_level"]), "Fast runs the release's step size"


def test_mrml_widgets_receive_the_scene(uiRoot, uiWidgets):
    connected = {
        c.findtext("receiver")
        for c in uiRoot.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    top = uiRoot.find("widget")
    assert top.get("class") == "qMRMLWidget"
    for name, widget in uiWidgets.items():
        if widget is not top and widget.get("class").startswith(("qMRML", "qSlicer")):
            assert name in connected, f"{name} never gets the scene (add a mrmlSceneChanged connection)"


def test_custom_widget_classes_are_declared(uiRoot, uiWidgets):
    declared = {c.findtext("class") for c in uiRoot.iter("customwidget")}
    for widget in uiWidgets.values():
        cls = widget.get("class")
        assert cls in QT_AND_CTK_BUILTINS or cls in declared, f"{cls} needs a <customwidget> entry"


def _cmakeModuleScripts() -> list[str]:
    return cmake_lists(MODULE_DIR)["MODULE_PYTHON_SCRIPTS"]


def test_cmake_lists_every_module_file():
    listed = {p for p in _cmakeModuleScripts() if not p.startswith("pancdiff/")}
    onDisk = {"PancDiffSlicer.py"} | {f"PancDiffSlicerLib/{p.name}" for p in LIB_DIR.glob("*.py")}
    assert listed == onDisk, f"missing from CMake: {onDisk - listed}; listed but absent: {listed - onDisk}"


def test_cmake_ships_the_engine_package_and_every_python_file_is_covered():
    text = CMAKE_FILE.read_text(encoding="utf-8")
    glob = re.search(r"file\(GLOB_RECURSE PANCDIFF_ENGINE_SCRIPTS(.*?)\)", text, re.DOTALL)
    assert glob and "${CMAKE_CURRENT_SOURCE_DIR}/pancdiff/*.py" in glob.group(1)
    listed = set(_cmakeModuleScripts())
    for path in MODULE_DIR.rglob("*.py"):
        relative = path.relative_to(MODULE_DIR).as_posix()
        if "__pycache__" in relative or ".egg-info" in relative:
            continue
        assert relative in listed, f"{relative} is not shipped by CMake"


def test_cmake_ships_every_resource_models_and_sample_data_included():
    text = CMAKE_FILE.read_text(encoding="utf-8")
    resources = set(cmake_lists(MODULE_DIR)["MODULE_PYTHON_RESOURCES"])
    onDisk = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert resources == onDisk
    for required in ("Resources/Models/model.json", "Resources/Models/unet.safetensors",
                     "Resources/SampleData/example_ct_sm.nii.gz", "Resources/SampleData/pancreas.nii.gz"):
        assert required in resources
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_cmake_has_the_metadata_and_dependencies():
    text = (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")
    for required in (
        "project(PancDiff)",
        'set(EXTENSION_CATEGORY "Segmentation")',
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        'set(EXTENSION_DEPENDS "PyTorch TotalSegmentator")',
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(PancDiffSlicer)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert required in text, required


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_lib_imports_no_qt_and_nobody_imports_the_engine_into_slicer():
    for path in LIB_DIR.glob("*.py"):
        imports = _imports(path)
        assert not imports & {"qt", "ctk", "slicer.util", "slicer.ScriptedLoadableModule"}, path.name
        assert not any(name.split(".")[0] == "pancdiff" for name in imports), path.name
    assert not any(name.split(".")[0] == "pancdiff" for name in _imports(MODULE_FILE))


def test_engine_never_imports_slicer():
    for path in ENGINE_DIR.rglob("*.py"):
        assert not any(name.split(".")[0] in ("slicer", "qt", "ctk", "vtk") for name in _imports(path)), path


def test_snake_case_contract_names_live_only_in_the_contract_module():
    contractOnly = ("--pancreas-mask", "--progress", "eta_s", "elapsed_s", "tumor_probability", "overall_confidence")
    for path in [MODULE_FILE, *LIB_DIR.glob("*.py")]:
        if path.name == "contract.py":
            continue
        text = path.read_text(encoding="utf-8")
        for name in contractOnly:
            assert f'"{name}"' not in text, f"{path.name} uses the engine's name {name!r}; go through contract.py"


def test_every_lib_module_is_reloaded_with_the_module(moduleTree):
    assignment = next(n for n in moduleTree.body if isinstance(n, ast.Assign) and n.targets[0].id == "LIB_MODULES")
    reloaded = set(ast.literal_eval(assignment.value))
    assert reloaded == {p.stem for p in LIB_DIR.glob("*.py") if p.stem != "__init__"}


def test_module_follows_the_scripted_module_template(moduleTree):
    classes = {n.name: n for n in moduleTree.body if isinstance(n, ast.ClassDef)}
    bases = {name: {ast.unparse(b) for b in cls.bases} for name, cls in classes.items()}
    assert "ScriptedLoadableModule" in bases["PancDiffSlicer"]
    assert {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} <= bases["PancDiffSlicerWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["PancDiffSlicerLogic"]
    assert "ScriptedLoadableModuleTest" in bases["PancDiffSlicerTest"]
    text = MODULE_FILE.read_text(encoding="utf-8")
    assert "not for diagnosis" in text and '_("Segmentation")' in text


def test_icon_is_a_128_pixel_png():
    png = (MODULE_DIR / "Resources" / "Icons" / "PancDiffSlicer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (128, 128)


def test_minimum_slicer_version_is_the_same_in_cmake_module_and_readme():
    cmake = (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")
    minimum = re.search(r'set\(PANCDIFF_MINIMUM_SLICER_VERSION "(\d+)\.(\d+)"\)', cmake).groups()
    assert "if(Slicer_VERSION VERSION_LESS PANCDIFF_MINIMUM_SLICER_VERSION)" in cmake
    module = MODULE_FILE.read_text(encoding="utf-8")
    assert re.search(r"MINIMUM_SLICER_VERSION = \((\d+), (\d+)\)", module).groups() == minimum
    assert "slicerVersionProblem(slicer.app.majorVersion, slicer.app.minorVersion)" in module
    readme = (MODULE_DIR.parent / "README.md").read_text(encoding="utf-8")
    assert f"Slicer {minimum[0]}.{minimum[1]} or newer" in readme


def test_extension_screenshot_and_license_exist_where_the_metadata_says():
    cmake = (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_SCREENSHOTURLS", "EXTENSION_ICONURL"):
        url = re.search(rf'set\({variable} "([^"]+)"\)', cmake).group(1)
        relative = url.split("/main/", 1)[1]
        path = MODULE_DIR.parent / relative
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{variable}: {relative} missing"
    license = (MODULE_DIR.parent / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license and "Version 2.0" in license


def test_sample_data_checksums_match_the_shipped_files():
    import hashlib
    import sys

    sys.path.insert(0, str(MODULE_DIR))
    from PancDiffSlicerLib import sampledata

    for arguments, sample in zip(sampledata.registrationArguments(MODULE_DIR), sampledata.SAMPLES):
        path = MODULE_DIR / "Resources" / "SampleData" / sample.fileName
        assert arguments["checksums"] == [f"SHA256:{hashlib.sha256(path.read_bytes()).hexdigest()}"]
        assert arguments["uris"] == [path.resolve().as_uri()]
    assert [s.labelmap for s in sampledata.SAMPLES] == [False, True]
