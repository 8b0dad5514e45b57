"""Plain-Python helpers of the PancDiff Slicer module (no Qt): testable without the Slicer GUI."""  # noqa: N999
