"""PancDiff: weakly supervised pancreatic tumor detection with guided diffusion models.

Pure Python (no ``slicer`` import): preprocessing, networks, diffusion maths, detection, metrics,
training and the command line. The Slicer module in ``PancDiffSlicer/`` drives it in a child process.
"""

__version__ = "0.1.0"
