"""Model bundles on disk: safetensors weights + ``model.json`` (configs, card, SHA-256 of each file).

No pickle anywhere: loading verifies every weight file's SHA-256 against ``model.json`` and refuses
a mismatch, so a corrupted or swapped file never silently produces maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .calibration import PlattScaling
from .config import DetectConfig, NetworkConfig, PreprocessConfig, ScheduleConfig, from_dict, to_dict
from .errors import WeightsError
from .lesion_head import LesionHeadConfig
from .map_student import StudentConfig, build_student
from .networks import NoisyClassifier, build_unet

UNET_FILE, CLASSIFIER_FILE, CARD_FILE = "unet.safetensors", "classifier.safetensors", "model.json"
STUDENT_FILE = "map_student.safetensors"  # optional: bundles from before the map student have none
HEAD_FILE = "lesion_head.safetensors"  # optional: bundles from before the lesion head have none


def bundled_model_dir() -> Path:
    """The models shipped with this copy of the engine, wherever it is installed (see ``resources``)."""
    from .resources import bundled_model_dir as locate

    return locate()


@dataclass
class ModelBundle:
    """Everything a detection needs, rebuilt exactly as trained."""

    unet: nn.Module
    classifier: nn.Module
    network: NetworkConfig = field(default_factory=NetworkConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    operating_point: DetectConfig = field(default_factory=DetectConfig)
    model_id: str = "untrained-random"
    sha256: dict[str, str] = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    calibration: PlattScaling = field(default_factory=PlattScaling)
    student: nn.Module | None = None
    student_config: StudentConfig | None = None
    head: nn.Module | None = None
    head_config: LesionHeadConfig | None = None

    def to(self, device: torch.device | str) -> ModelBundle:
        self.unet.to(device)
        self.classifier.to(device)
        for part in (self.student, self.head):
            if part is not None:
                part.to(device)
        return self


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def init_bundle(seed: int = 0, network: NetworkConfig | None = None) -> ModelBundle:
    """Randomly initialised networks (seeded): for tests and for benchmarking before training."""
    network = network or NetworkConfig()
    torch.manual_seed(seed)
    unet, classifier = build_unet(network).eval(), NoisyClassifier(network).eval()
    return ModelBundle(unet=unet, classifier=classifier, network=network, model_id=f"untrained-random-{seed}")


def save_state(module: nn.Module, path: str | Path, half: bool = False) -> str:
    """Write a module's tensors as safetensors atomically; returns the file's SHA-256."""
    path = Path(path)
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in module.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def save_bundle(bundle: ModelBundle, out_dir: str | Path, card: dict | None = None, half: bool = False) -> Path:
    """Write ``unet.safetensors``, ``classifier.safetensors``, the map student and lesion head where there
    are, and ``model.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {
        UNET_FILE: save_state(bundle.unet, out / UNET_FILE, half),
        CLASSIFIER_FILE: save_state(bundle.classifier, out / CLASSIFIER_FILE, half),
    }
    doc = dict(card or bundle.card)
    doc.pop("map_student", None)
    doc.pop("lesion_head", None)
    if bundle.student is not None:
        hashes[STUDENT_FILE] = save_state(bundle.student, out / STUDENT_FILE, half)
        doc["map_student"] = to_dict(bundle.student_config)
    if bundle.head is not None:
        hashes[HEAD_FILE] = save_state(bundle.head, out / HEAD_FILE, half)
        doc["lesion_head"] = to_dict(bundle.head_config)
    doc.update(
        model_id=bundle.model_id,
        network=to_dict(bundle.network),
        schedule=to_dict(bundle.schedule),
        preprocess=to_dict(bundle.preprocess),
        operating_point=to_dict(bundle.operating_point),
        sha256=hashes,
    )
    if not bundle.calibration.identity:
        doc["confidence_calibration"] = {**doc.get("confidence_calibration", {}), **to_dict(bundle.calibration)}
    (out / CARD_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    bundle.sha256, bundle.card = hashes, doc
    return out


def load_bundle(model_dir: str | Path | None = None, device: str | torch.device = "cpu") -> ModelBundle:
    """Load and verify a bundle; ``None`` means the models shipped in ``Resources/Models``."""
    root = Path(model_dir) if model_dir is not None else bundled_model_dir()
    card_path = root / CARD_FILE
    if not card_path.is_file():
        raise WeightsError(
            f"{root}: no {CARD_FILE}; no trained models here. Train them (pancdiff train ...) "
            "or pass --model DIR pointing at a model bundle"
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{card_path}: not valid JSON ({exc.msg})") from None
    hashes = card.get("sha256", {})
    student_config = _part_config(card, "map_student", StudentConfig, "student", card_path)
    head_config = _part_config(card, "lesion_head", LesionHeadConfig, "lesion head", card_path)
    if head_config is not None and student_config is None:
        raise WeightsError(f"{card_path}: a lesion_head needs the map_student it combines with")
    optional = ((STUDENT_FILE,) if student_config else ()) + ((HEAD_FILE,) if head_config else ())
    for name in (UNET_FILE, CLASSIFIER_FILE) + optional:
        path = root / name
        if not path.is_file():
            raise WeightsError(f"{path}: weight file missing; restore it from the repository or retrain")
        actual = sha256_file(path)
        if hashes.get(name) != actual:
            raise WeightsError(
                f"{path}: SHA-256 {actual[:12]}... does not match model.json ({str(hashes.get(name))[:12]}...); "
                "the file is corrupt or from another model"
            )
    network = from_dict(NetworkConfig, card["network"])
    unet, classifier = build_unet(network), NoisyClassifier(network)
    load_weights_into(unet, root / UNET_FILE)
    load_weights_into(classifier, root / CLASSIFIER_FILE)
    student = _load_part(student_config, root / STUDENT_FILE)
    head = _load_part(head_config, root / HEAD_FILE)
    return ModelBundle(
        unet=unet.eval(),
        classifier=classifier.eval(),
        network=network,
        schedule=from_dict(ScheduleConfig, card.get("schedule", {})),
        preprocess=from_dict(PreprocessConfig, card.get("preprocess", {})),
        operating_point=from_dict(DetectConfig, card.get("operating_point", {})),
        model_id=card.get("model_id", root.name),
        sha256=hashes,
        card=card,
        calibration=from_dict(PlattScaling, card.get("confidence_calibration", {})),
        student=student,
        student_config=student_config,
        head=head,
        head_config=head_config,
    ).to(device)


def _part_config(card: dict, key: str, kind: type, what: str, card_path: Path) -> StudentConfig | None:
    """A learned part's config from its model.json section (None where the bundle has none)."""
    try:
        return from_dict(kind, card[key]) if key in card else None
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{card_path}: its {key} section is not a valid {what} ({exc})") from None


def _load_part(cfg: StudentConfig | None, path: Path) -> nn.Module | None:
    """A learned part's network (the student's, for the lesion head too) with its verified weights."""
    if cfg is None:
        return None
    net = build_student(cfg)
    load_weights_into(net, path)
    return net.eval()


def load_weights_into(module: nn.Module, path: Path) -> None:
    """Load safetensors into ``module`` (strict), or a WeightsError saying they do not fit."""
    state = load_file(str(path))
    reference = module.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path}: weights do not fit the network in model.json ({first})") from None
