"""The student code moved into the engine gives the maps and training steps of the code that ran.

    python model_runs/20261129-map-student/check_moved.py GEN_DIR STUDENT_DIR /tmp/old_student.py
(the old file: ``git show 34fc3c6:model_runs/20261129-map-student/student.py``, the commit of the run).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from pancdiff.map_student import student_map
from pancdiff.weights import load_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
import student as new  # noqa: E402

spec = importlib.util.spec_from_file_location("old_student", sys.argv[3])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
torch.set_num_threads(1)
op = load_bundle(None, "cpu").operating_point
part = dict(np.load(sorted(Path(sys.argv[1]).glob("part_*.npz"))[0]))
for kind in ("A", "B"):
    a = old.student_maps(old.load_student(Path(sys.argv[2]), kind), kind, part, op.map_scale, op.saliency_weight)
    b = student_map(new.load_student(Path(sys.argv[2]), kind, op), new.config(kind, op), {**part, "map": part["map2"]})
    print(kind, "maps identical:", np.array_equal(a.astype(np.float32), b), "max diff", float(np.abs(a - b).max()))
    torch.manual_seed(0)
    n_old = old.network(kind)
    torch.manual_seed(0)
    n_new = new.build_student(new.config(kind, op))
    same = all(torch.equal(p, q) for p, q in zip(n_old.state_dict().values(), n_new.state_dict().values()))
    print(kind, "same initial weights:", same)
