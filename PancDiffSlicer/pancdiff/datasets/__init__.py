"""Slice datasets behind one interface: records of (image, case, label, optional mask)."""
