"""Render the extension's screenshot offscreen from a real MRML scene (slicer-core), no Slicer GUI.

The scene is built by the module's own logic: the bundled sample CT and its pancreas label are
loaded, the real engine runs with the bundled models exactly as the module runs it (its command
line, from the module folder), and the results are imported with ``PancDiffSlicerLib.scene``.
The picture is then drawn from the scene's nodes and display properties: the axial slice through
the engine's first-ranked peak with the CT window, the heatmap in the scene's Inferno table, window
and opacity, the candidate (cyan) and pancreas (green) outlines; beside it the confidence text,
the ranked candidates and p(tumor) per slice. It is not a capture of the Slicer window.

    .venv/bin/python scripts/slicer_screenshot.py --out docs/slicer_screenshot.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancDiffSlicer"
sys.path.insert(0, str(MODULE_DIR))


def newScene():
    """A scene set up like Slicer's: colors, subject hierarchy, three slice views."""
    import slicer
    from PancDiffSlicerLib import scene

    mrmlScene = slicer.vtkMRMLScene()
    colorLogic = slicer.vtkMRMLColorLogic()
    colorLogic.SetMRMLScene(mrmlScene)
    mrmlScene._keepAlive = colorLogic
    slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(mrmlScene)
    scene.ensureSegmentationConverters()
    for layout in ("Red", "Yellow", "Green"):
        compositeNode = slicer.vtkMRMLSliceCompositeNode()
        compositeNode.SetLayoutName(layout)
        compositeNode.SetSingletonTag(layout)
        mrmlScene.AddNode(compositeNode)
    return mrmlScene


def colorsOf(colorNode) -> np.ndarray:
    """(N, 3) RGB of a color table node."""
    rgba = [0.0] * 4
    out = []
    for index in range(colorNode.GetNumberOfColors()):
        colorNode.GetColor(index, rgba)
        out.append(rgba[:3])
    return np.asarray(out)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D mask that touch a pixel outside it."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/slicer_screenshot.png")
    parser.add_argument("--steps", default="10", help="DDIM steps (the module's Fast quality: 10)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PancDiffSlicerLib import contract, findings, scene

    mrmlScene = newScene()
    sample = MODULE_DIR / "Resources" / "SampleData"
    ct = scene.loadVolumeFile(mrmlScene, sample / "example_ct_sm.nii.gz", "Sample CT")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        scene.writeVolumeFile(ct, work / "ct.nrrd")
        settings = contract.DetectionSettings(
            device=contract.Device.CPU, pancreasSource=contract.PancreasSource.LABELMAP
        )
        command = contract.detectCommandLine(
            sys.executable, work / "ct.nrrd", work / "out", settings, sample / "pancreas.nii.gz"
        )
        command[command.index("--steps") + 1] = args.steps
        subprocess.run(command, cwd=MODULE_DIR, check=True, stdout=subprocess.DEVNULL)
        result = scene.importResults(ct, work / "out", settings.threshold, 0.6, settings.rerunKey())
        pancreasNode, pancreasId = scene.importPancreasMask(ct, sample / "pancreas.nii.gz")
    candidates = findings.rankedCandidates(result, settings.threshold)
    summary = scene.summaryOf(result)
    card = contract.readModelCard(MODULE_DIR)

    # The slice through the first-ranked peak, drawn with the scene's display properties.
    heatmapVolume = scene.arrayFromVolume(result.heatmapNode)
    k = candidates[0].sliceIndex if candidates else int(np.argmax(heatmapVolume.max(axis=(1, 2))))
    ctSlice = scene.arrayFromVolume(ct)[k].astype(float)
    ctDisplay = ct.GetDisplayNode()
    ctDisplay.AutoWindowLevelOff()
    ctDisplay.SetWindowLevel(400, 40)  # abdomen window, as a radiologist sets it
    low, high = ctDisplay.GetWindowLevelMin(), ctDisplay.GetWindowLevelMax()
    rgb = np.repeat(np.clip((ctSlice - low) / (high - low), 0, 1)[..., None], 3, axis=2)
    heat = scene.arrayFromVolume(result.heatmapNode)[k]
    display = result.heatmapNode.GetDisplayNode()
    hLow, hHigh = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    lut = colorsOf(display.GetColorNode())
    index = np.clip(((heat - hLow) / (hHigh - hLow) * (len(lut) - 1)).round().astype(int), 0, len(lut) - 1)
    opacity = mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceCompositeNode").GetForegroundOpacity()
    shown = heat >= display.GetLowerThreshold()
    rgb[shown] = (1 - opacity) * rgb[shown] + opacity * lut[index[shown]]
    candidate = scene.candidateMask(heat, settings.threshold)
    pancreas = scene.segmentMaskArray(ct, pancreasNode, pancreasId)[k] > 0
    rows, cols = np.nonzero(scene.segmentMaskArray(ct, pancreasNode, pancreasId).any(axis=0))
    r0, r1 = max(rows.min() - 15, 0), min(rows.max() + 15, rgb.shape[0])
    c0, c1 = max(cols.min() - 15, 0), min(cols.max() + 15, rgb.shape[1])
    # Zoom (nearest neighbour) before drawing the outlines, so they are thin lines around the voxels.
    zoom = 8

    def zoomed(array):
        return np.repeat(np.repeat(array[r0:r1, c0:c1], zoom, axis=0), zoom, axis=1)

    view = zoomed(rgb)
    view[outline(zoomed(pancreas))] = scene.PANCREAS_COLOR
    view[outline(zoomed(candidate))] = scene.CANDIDATE_COLOR
    # Radiological view: anterior at the top, the patient's right on the image's left.
    ijkToRas = scene.ijkToRas(ct)
    flipRows, flipCols = ijkToRas[1, 1] > 0, ijkToRas[0, 0] < 0
    view = view[::-1] if flipRows else view
    view = view[:, ::-1] if flipCols else view

    figure = plt.figure(figsize=(12, 6.2), dpi=110, facecolor="#2b2b2b")
    axes = figure.add_axes([0.01, 0.03, 0.48, 0.9])
    axes.imshow(view, interpolation="nearest", aspect="equal")
    if candidates and candidates[0].sliceIndex == k:
        ijk = np.rint(scene.worldToIjk(result.heatmapNode, candidates[0].peakRas)).astype(int)
        row, col = (ijk[1] - r0 + 0.5) * zoom - 0.5, (ijk[0] - c0 + 0.5) * zoom - 0.5
        row = view.shape[0] - 1 - row if flipRows else row
        col = view.shape[1] - 1 - col if flipCols else col
        axes.plot(col, row, "+", color="white", markersize=16, mew=2)
    axes.set_axis_off()
    axes.set_title(f"Sample CT, axial slice {k}: heatmap (Inferno), candidate (cyan), pancreas (green)",
                   color="white", fontsize=9)  # fmt: skip
    text = figure.add_axes([0.51, 0.55, 0.48, 0.4])
    text.set_axis_off()
    import textwrap

    confidence = [textwrap.fill(line, 70) for line in contract.confidenceText(summary, card).splitlines()]
    lines = [*confidence, "", "Ranked candidates (engine's peaks):",
             "rank  value  size mm  slice  p(tumor)"]  # fmt: skip
    for c in candidates[:5]:
        lines.append(f"{c.rank:>4}  {c.value:5.2f}  {c.sizeMm:7.1f}  {c.sliceIndex:>5}  {c.tumorProbability:8.2f}")
    text.text(0, 1, "\n".join(lines), va="top", ha="left", color="white", family="monospace", fontsize=8.5)
    plot = figure.add_axes([0.56, 0.1, 0.4, 0.35], facecolor="#1e1e1e")
    table = result.sliceTableNode
    xs = [int(table.GetCellText(r, table.GetColumnIndex("Slice"))) for r in range(table.GetNumberOfRows())]
    column = table.GetColumnIndex("Tumor probability")
    ys = [float(table.GetCellText(r, column)) for r in range(table.GetNumberOfRows())]
    plot.plot(xs, ys, "o-", color=scene.CANDIDATE_COLOR, markersize=3)
    plot.set_ylim(0, 1)
    plot.set_xlabel("slice (k)", color="white")
    calibrated = bool(card.get("confidence_calibration"))
    plot.set_ylabel("p(tumor)" + ("" if calibrated else ", uncalibrated"), color="white")
    plot.tick_params(colors="white")
    figure.text(0.51, 0.965, "PancDiff (3D Slicer module) - research software, not for diagnosis",
                color="white", fontsize=10, weight="bold")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, facecolor=figure.get_facecolor())
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
