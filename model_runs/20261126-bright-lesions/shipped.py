"""What this record's described-only scripts share: the shipped bundle on one CPU thread, and the
validation cases split into the tuning and test halves the release used."""

import json

import torch
from pancdiff.datasets.slice_folder import tuning_test_halves
from pancdiff.weights import load_bundle


def bundle_and_halves():
    """(shipped bundle, tuning cases, test cases)."""
    torch.set_num_threads(1)
    split = json.load(open("model_runs/20261125-paired-classifier/split.json"))
    tune, test = tuning_test_halves(split["val_cases"])
    return load_bundle(None, "cpu"), tune, test
