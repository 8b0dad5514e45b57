"""Training the eps-UNet (DDPM loss) and the noisy classifier, resumable and reproducible.

One loop serves both: AdamW, an EMA of the weights (what gets shipped), periodic checkpoints in
safetensors (no pickle) that a rerun with ``resume=True`` continues from, a loss CSV and plot, and
optional DDP when started by ``torchrun``. Data comes from a slice folder or an MSD Task07 folder,
split by case; the split is written beside the weights.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import NetworkConfig, PreprocessConfig, ScheduleConfig, from_dict, to_dict
from .crop_samples import NO_AUGMENT, AugmentConfig, CropSampler
from .datasets.slice_folder import load_label_map, load_slice_image, read_manifest, split_cases, tuning_test_halves
from .diffusion import alpha_bar_schedule, diffusion_loss, q_sample
from .errors import InputError
from .lesions import LesionConfig, insert_lesion, lesion_hosts
from .metrics import auroc
from .networks import TUMOR, NoisyClassifier, build_unet
from .progress import QUIET, Reporter
from .weights import load_weights_into, save_state

Kind = Literal["diffusion", "classifier"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Saved as ``train_config.json`` beside the weights.

    Attributes:
        lesion_fraction: classifier, unpaired only; share of the tumor-labelled samples that are
            healthy crops with a simulated lesion.
        max_timestep: classifier only; the largest t it trains on. Guidance never asks above N.
        paired: classifier only; every batch is counterfactual pairs, a healthy crop next to the
            same crop with a lesion inside its pancreas (same t, same noise): only the lesion
            explains the label, so neither site nor crop size can. Unpaired mixing learned nothing.
        contrast_start_hu, contrast_ramp: paired lesions start conspicuous (``contrast_start_hu``)
            and fade linearly to ``lesions.contrast_hu`` over ``contrast_ramp`` steps;
            ``conspicuous_fraction`` of the pairs keep ``contrast_start_hu`` throughout (a classifier
            trained only down to realistic contrast stops calling very dark lesions tumor).
        lr_decay_start: step from which the learning rate decays (cosine) to 1 % at the last step;
            0 keeps it constant after the warm-up.
        t_clean_steps, t_ramp, t_power, clean_fraction: the t curriculum. t = 0 only for the first
            ``t_clean_steps``; then the largest t grows linearly to ``max_timestep`` over ``t_ramp``
            steps, t = t_max * u**t_power (weighted to low t), and ``clean_fraction`` of the pairs
            stay at t = 0 (where the x0-guided detector asks).
        real_fraction: paired only; share of each batch given to real slices, half tumor (label
            1), half healthy (label 0), after the pairs, each with its own t and noise. Only crops
            with a pancreas outline take part in either class, so the zone's origin (outline or
            fallback) cannot tell the class. Real tumor slices carry the site confound (MSD against
            NIH): measure it when using them (``model_runs/20261126-real-slices``).
        healthy_only: diffusion only; the UNet learns healthy slices (tumor = 0) alone, so that its
            reconstruction from x_N itself turns what healthy anatomy does not explain into healthy
            tissue (AnoDDPM's premise). The paper trains the UNet on both classes and leaves the
            healing to the classifier's guidance.
        assumed_spacing_mm: pixel spacing of slice-folder crops that do not record it.
        init_weights: safetensors of the same network to start from (a fresh run warm-started from
            an earlier one; ignored on resume, where the checkpoint wins).
        mixed_precision: bf16 autocast on GPU, and on CPUs with native bf16 (1.75x faster here).
        data_workers: processes that build batches beside the training loop (0: the loop builds
            them). On a GPU the crops and lesions, not the tiny networks, set the pace. Each worker
            has its own random stream, so a run is reproducible for a given worker count only, and
            the contrast curriculum reads the step a worker estimates from the batches it made.
    """

    iterations: int = 6000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    warmup: int = 200
    lr_decay_start: int = 0
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    validate_every: int = 500
    val_fraction: float = 0.15
    split_seed: int = 0
    seed: int = 0
    assumed_spacing_mm: float = 0.8
    init_weights: str = ""
    lesion_fraction: float = 0.0
    max_timestep: int = 1000
    paired: bool = False
    contrast_start_hu: tuple[float, float] = (100.0, 160.0)
    contrast_ramp: int = 3000
    conspicuous_fraction: float = 0.0
    t_clean_steps: int = 0
    t_ramp: int = 1
    t_power: float = 2.0
    clean_fraction: float = 0.5
    real_fraction: float = 0.0
    healthy_only: bool = False
    threads: int = 0
    mixed_precision: bool = True
    data_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    lesions: LesionConfig = field(default_factory=LesionConfig)


def config_from_json(path: str | Path | None, **overrides) -> TrainConfig:
    """A TrainConfig from a JSON file (nested sections by field name) plus keyword overrides."""
    data = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    nested = {
        "augment": AugmentConfig,
        "network": NetworkConfig,
        "preprocess": PreprocessConfig,
        "schedule": ScheduleConfig,
        "lesions": LesionConfig,
    }
    kwargs = {}
    for key, value in data.items():
        if key in nested and isinstance(value, dict):
            kwargs[key] = from_dict(nested[key], value)
        elif key in {f.name for f in dataclasses.fields(TrainConfig)}:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        else:
            raise InputError(f"{path}: unknown training setting {key!r}")
    return TrainConfig(**kwargs)


@dataclass
class SliceData:
    """Training and validation samplers with their labels and cases.

    ``val`` holds the *tuning* half of the validation cases only: training never looks at the test
    half (``datasets.slice_folder.tuning_test_halves``).
    """

    train: CropSampler
    val: CropSampler
    train_cases: list[str]
    val_cases: list[str]
    tune_cases: list[str] = field(default_factory=list)


def load_slice_data(root: str | Path, cfg: TrainConfig) -> SliceData:
    """Read a slice folder or MSD Task07 folder, with organ masks where labels exist; split by case."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: data folder not found")
    if (root / "manifest.csv").is_file():
        records = read_manifest(root)
        images = [load_slice_image(r.path, cfg.preprocess.hu_window) for r in records]
        organs = [load_label_map(r.labels) > 0 if r.labels is not None else None for r in records]
    elif (root / "dataset.json").is_file():
        organs: list = []
        records, images = _msd_records(root, cfg, organs)
    else:
        raise InputError(f"{root}: neither a slice folder (manifest.csv) nor MSD Task07 (dataset.json)")
    train_cases, val_cases = split_cases(records, cfg.val_fraction, cfg.split_seed)
    tune_cases = set(tuning_test_halves(val_cases)[0])
    val_set = set(val_cases)
    tr = [i for i, r in enumerate(records) if r.case not in val_set]
    va = [i for i, r in enumerate(records) if r.case in tune_cases]
    spacing = cfg.assumed_spacing_mm

    def sampler(ix: list[int]) -> CropSampler:
        return CropSampler(
            [images[i] for i in ix], [records[i].tumor for i in ix], cfg.preprocess, spacing, [organs[i] for i in ix]
        )

    return SliceData(sampler(tr), sampler(va), train_cases, val_cases, sorted(tune_cases))


def _msd_records(root: Path, cfg: TrainConfig, organs: list):
    """MSD volumes become pancreas-box crops at native spacing, then take the slice-folder path."""
    from .datasets.msd import load_msd_crops  # the MSD reader lives with the other datasets

    return load_msd_crops(root, cfg.preprocess, spacing_mm=cfg.assumed_spacing_mm, organs=organs)


class _Batches:
    """Random batches of canvases (and labels) from a sampler, seeded per rank."""

    def __init__(self, data: CropSampler, cfg: TrainConfig, kind: Kind, rng: np.random.Generator) -> None:
        self.data, self.cfg, self.kind, self.rng = data, cfg, kind, rng
        labels = data.labels
        self.by_label = [np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)]
        self.paired_pool = lesion_hosts(self.by_label[0], data.organs)
        if kind == "classifier" and cfg.paired and len(self.paired_pool) == 0:
            raise InputError("paired classifier training needs healthy slices (tumor = 0)")
        outlined = [o is not None and o.any() for o in data.organs]
        self.real_pools = [np.asarray([i for i in ix if outlined[i]], dtype=int) for ix in self.by_label]
        self.n_real = real_slots(cfg)
        if cfg.healthy_only and (kind != "diffusion" or not len(self.by_label[0])):
            raise InputError("healthy_only is for the diffusion UNet and needs healthy slices (tumor = 0)")
        if kind == "classifier" and self.n_real and not all(len(ix) for ix in self.real_pools):
            raise InputError("real_fraction needs healthy and tumor slices with a pancreas outline")

    def next(self, step: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Canvases (B, 1, S, S), labels (B,) and, for the classifier, pancreas zones (B, 1, S, S) bool."""
        if self.kind == "classifier" and self.cfg.paired:
            return self._pairs(step)
        cfg, rng = self.cfg, self.rng
        xs, ys, zs = [], [], []
        for _ in range(cfg.batch_size):
            simulate = False
            if self.kind == "classifier" and all(len(ix) for ix in self.by_label):
                # Balanced classes; a share of the positives are healthy crops with a simulated lesion.
                label = int(rng.random() < 0.5)
                simulate = label == 1 and rng.random() < cfg.lesion_fraction
                pool = self.by_label[0 if simulate else label]
                i = int(pool[rng.integers(len(pool))])
            elif cfg.healthy_only:
                i = int(self.by_label[0][rng.integers(len(self.by_label[0]))])
            else:
                i = int(rng.integers(len(self.data)))
            c = self.data.canvas(i, rng, cfg.augment)
            label = int(self.data.labels[i])
            if simulate:
                inserted = self._lesion(c, cfg.lesions)
                if inserted is not None:
                    c.x, label = inserted[0], 1
            xs.append(c.x)
            ys.append(label)
            if self.kind == "classifier":  # the UNet never looks at a zone
                zs.append(self.data.zone(c))
        return _as_batch(xs, ys, zs)

    def _lesion(self, c, lesions: LesionConfig):
        p = self.cfg.preprocess
        return insert_lesion(c.x, c.valid, self.rng, p.pixel_spacing_mm, lesions, p.hu_window, c.organ)

    def _pairs(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(2P, 1, S, S) as [clean_0, lesion_0, clean_1, lesion_1, ...] with labels [0, 1, 0, 1, ...];
        both members of a pair share the clean crop's zone."""
        cfg, rng = self.cfg, self.rng
        lesions = dataclasses.replace(cfg.lesions, contrast_hu=contrast_at(step, cfg))
        conspicuous = dataclasses.replace(cfg.lesions, contrast_hu=cfg.contrast_start_hu)
        xs: list[np.ndarray] = []
        zs: list[np.ndarray] = []
        while len(xs) < 2 * max(1, (cfg.batch_size - self.n_real) // 2):
            c = self.data.canvas(int(self.paired_pool[rng.integers(len(self.paired_pool))]), rng, cfg.augment)
            inserted = self._lesion(c, conspicuous if rng.random() < cfg.conspicuous_fraction else lesions)
            if inserted is not None:
                xs += [c.x, inserted[0]]
                zs += [self.data.zone(c)] * 2
        ys = list(np.tile([0, 1], len(xs) // 2))
        for k in range(self.n_real):  # then real slices, healthy and tumor in turn
            pool = self.real_pools[k % 2]
            c = self.data.canvas(int(pool[rng.integers(len(pool))]), rng, cfg.augment)
            xs.append(c.x)
            ys.append(k % 2)
            zs.append(self.data.zone(c))
        return _as_batch(xs, ys, zs)


def real_slots(cfg: TrainConfig) -> int:
    """How many slots of a paired batch hold real slices (an even number; at least one pair stays)."""
    if not cfg.paired or cfg.real_fraction <= 0:
        return 0
    return min(2 * round(cfg.batch_size * cfg.real_fraction / 2), 2 * max(0, cfg.batch_size // 2 - 1))


class _WorkerBatches(torch.utils.data.IterableDataset):
    """``_Batches`` built in ``cfg.data_workers`` processes; ``next`` hands them out in order."""

    def __init__(self, data: CropSampler, cfg: TrainConfig, kind: Kind, seed: tuple[int, ...], start: int) -> None:
        self.data, self.cfg, self.kind, self.seed, self.start = data, cfg, kind, seed, start
        _Batches(data, cfg, kind, np.random.default_rng(0))  # fail here, not in a worker
        self._it = None

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = _Batches(self.data, self.cfg, self.kind, np.random.default_rng([*self.seed, self.start, wid]))
        made = 0
        while True:
            yield batches.next(self.start + made * n + wid)
            made += 1

    def next(self, step: int = 0):
        if self._it is None:
            workers = self.cfg.data_workers
            self._it = iter(
                torch.utils.data.DataLoader(
                    self, batch_size=None, num_workers=workers, prefetch_factor=4, persistent_workers=True
                )
            )
        return next(self._it)


def _as_batch(xs: list, ys, zs: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return (
        torch.from_numpy(np.stack(xs)[:, None]),
        torch.as_tensor(np.asarray(ys), dtype=torch.long),
        torch.from_numpy(np.stack(zs)[:, None]) if zs else None,
    )


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, constant, then (with ``lr_decay_start`` > 0) cosine decay to 1 % at the end."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
    if 0 < cfg.lr_decay_start < cfg.iterations and step >= cfg.lr_decay_start:
        f = (step - cfg.lr_decay_start) / (cfg.iterations - cfg.lr_decay_start)
        lr *= 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * min(1.0, f)))
    return float(lr)


def contrast_at(step: int, cfg: TrainConfig) -> tuple[float, float]:
    """Lesion contrast range (HU) at ``step``: from ``contrast_start_hu`` down to the realistic range."""
    f = min(1.0, step / max(1, cfg.contrast_ramp))
    (a0, b0), (a1, b1) = cfg.contrast_start_hu, cfg.lesions.contrast_hu
    return (a0 + f * (a1 - a0), b0 + f * (b1 - b0))


def sample_timesteps(step: int, n: int, cfg: TrainConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) long timesteps of the classifier's t curriculum at ``step`` (see ``TrainConfig``)."""
    if not cfg.paired:
        return torch.randint(0, cfg.max_timestep, (n,), generator=generator)
    if step < cfg.t_clean_steps:
        return torch.zeros(n, dtype=torch.long)
    t_max = cfg.max_timestep * min(1.0, (step - cfg.t_clean_steps + 1) / max(1, cfg.t_ramp))
    u = torch.rand(n, generator=generator)
    t = (t_max * u**cfg.t_power).long().clamp(0, cfg.max_timestep - 1)
    clean = torch.rand(n, generator=generator) < cfg.clean_fraction
    return torch.where(clean, torch.zeros_like(t), t)


def validation_canvases(
    data: CropSampler,
    seed: int = 1234,
    lesion_cfg: LesionConfig | None = None,
) -> dict[str, np.ndarray]:
    """Deterministic validation set: every crop once, the label-blind centred cut, a fixed seed.

    With ``lesion_cfg``, healthy crops are also returned with an inserted lesion (inside their
    pancreas) and its mask (``lesion_x``, ``lesion_mask``, ``lesion_clean``, ``lesion_valid``,
    ``lesion_zone``): a same-site control where only the lesion differs. Where some crops have a
    pancreas label map, only those receive lesions: a lesion dropped anywhere in an unlabelled box
    (bowel, vessel, fat) is not the pancreatic lesion the classifier is asked to find.
    """
    rng = np.random.default_rng(seed)
    p = data.preprocess
    canvases = [data.canvas(i, rng, NO_AUGMENT) for i in range(len(data))]
    out = {
        "x": np.stack([c.x for c in canvases]),
        "valid": np.stack([c.valid for c in canvases]),
        "zone": np.stack([data.zone(c) for c in canvases]),
        "y": data.labels.copy(),
    }
    if lesion_cfg is not None:
        les_x, les_m, clean, clean_valid, clean_zone = [], [], [], [], []
        for i in lesion_hosts(np.flatnonzero(out["y"] == 0), [c.organ for c in canvases]):
            c = canvases[i]
            inserted = insert_lesion(c.x, c.valid, rng, p.pixel_spacing_mm, lesion_cfg, p.hu_window, c.organ)
            if inserted is None:
                continue
            les_x.append(inserted[0])
            les_m.append(inserted[1])
            clean.append(c.x)
            clean_valid.append(c.valid)
            clean_zone.append(out["zone"][i])
        out.update(
            lesion_x=np.stack(les_x),
            lesion_mask=np.stack(les_m),
            lesion_clean=np.stack(clean),
            lesion_valid=np.stack(clean_valid),
            lesion_zone=np.stack(clean_zone),
        )
    return out


@torch.no_grad()
def classifier_probabilities(
    classifier: nn.Module,
    x: np.ndarray,
    t: int = 0,
    batch: int = 128,
    alpha_bar: torch.Tensor | None = None,
    noise_seed: int = 0,
    zone: np.ndarray | None = None,
) -> np.ndarray:
    """p(tumor | x_t, t): (B,) for clean canvases x (B, S, S) with their pancreas zones (B, S, S).

    At t > 0 with ``alpha_bar``, x is first noised to x_t (eq. 2) with noise drawn from
    ``noise_seed`` per index, so a crop and its lesioned copy at the same index of two calls get
    identical noise (a paired comparison). Without ``alpha_bar`` the clean x is passed with t.
    """
    device = next(classifier.parameters()).device
    probs = []
    noisy = t > 0 and alpha_bar is not None
    noise = (
        torch.randn((len(x), 1, *np.shape(x)[1:]), generator=torch.Generator().manual_seed(noise_seed))
        if noisy
        else None
    )
    for start in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch]))[:, None].to(device)
        tb = torch.full((len(xb),), t, dtype=torch.long, device=device)
        if noise is not None:
            xb = q_sample(xb, tb, noise[start : start + len(xb)].to(device), alpha_bar.to(device).float())
        zb = None if zone is None else torch.from_numpy(np.ascontiguousarray(zone[start : start + batch])).to(device)
        probs.append(torch.softmax(classifier(xb, tb, zb).float(), dim=1)[:, TUMOR].cpu().numpy())
    return np.concatenate(probs) if probs else np.zeros(0)


def paired_auroc(
    classifier: nn.Module,
    clean: np.ndarray,
    lesioned: np.ndarray,
    t: int = 0,
    alpha_bar: torch.Tensor | None = None,
    zone: np.ndarray | None = None,
) -> float:
    """AUROC of p(tumor) separating crops from the same crops with a lesion, at noise level t
    (identical noise and the same pancreas zone for both members of a pair)."""
    p0 = classifier_probabilities(classifier, clean, t, alpha_bar=alpha_bar, zone=zone)
    p1 = classifier_probabilities(classifier, lesioned, t, alpha_bar=alpha_bar, zone=zone)
    return auroc(np.r_[np.zeros(len(p0)), np.ones(len(p1))], np.r_[p0, p1])


def train(
    kind: Kind,
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    resume: bool = False,
    reporter: Reporter = QUIET,
    device: str = "auto",
) -> Path:
    """Train one network; returns the path of the shipped (EMA) weights.

    Writes into ``out_dir``: ``<kind>.safetensors`` (EMA weights), ``train_config.json``,
    ``split.json``, ``loss.csv``, ``loss.png``, ``validation.csv`` and ``checkpoint/`` for resume.
    """
    from .device import resolve_device

    if kind not in ("diffusion", "classifier"):
        raise InputError(f"unknown model kind {kind!r}; choose diffusion or classifier")
    if cfg.data_workers < 0:
        raise InputError(f"data_workers must be 0 or more, got {cfg.data_workers}")
    if not 0 <= cfg.real_fraction < 1 or (cfg.real_fraction and not cfg.paired):
        raise InputError(f"real_fraction must be in [0, 1) and needs paired batches, got {cfg.real_fraction}")
    out = Path(out_dir)
    rank, world = _init_distributed()
    dev = resolve_device(device) if world == 1 else torch.device(f"cuda:{rank}" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = load_slice_data(data_dir, cfg)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps({"kind": kind, **to_dict(cfg)}, indent=2) + "\n")
        (out / "split.json").write_text(
            json.dumps({"train_cases": data.train_cases, "val_cases": data.val_cases, "seed": cfg.split_seed}, indent=2)
            + "\n"
        )

    torch.manual_seed(cfg.seed + rank)
    model = (build_unet(cfg.network) if kind == "diffusion" else NoisyClassifier(cfg.network)).to(dev)
    if cfg.init_weights:
        load_weights_into(model, Path(cfg.init_weights))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed + 1000 * rank)
    step = 0
    ckpt = out / "checkpoint"
    if resume and (ckpt / "state.json").is_file():
        step, rng = _load_checkpoint(ckpt, model, ema, opt, rng)
        reporter.info(f"resumed {kind} from step {step}")
    net = _wrap_ddp(model, dev) if world > 1 else model
    alpha_bar = alpha_bar_schedule(cfg.schedule).float().to(dev)
    batches = (
        _WorkerBatches(data.train, cfg, kind, (cfg.seed, rank), step)
        if cfg.data_workers > 0
        else _Batches(data.train, cfg, kind, rng)
    )
    val = validation_canvases(data.val, lesion_cfg=cfg.lesions if kind == "classifier" else None)
    if kind == "classifier":
        val["t_checks"] = sorted({0, 100, cfg.max_timestep // 2, cfg.max_timestep - 1})
    autocast = _autocast(dev) if cfg.mixed_precision else _null()
    n_real = real_slots(cfg) if kind == "classifier" else 0
    columns = ["step", "loss", "lr", "elapsed_s"] + (["loss_healthy", "loss_lesion"] if kind == "classifier" else [])
    columns += ["loss_real_healthy", "loss_real_tumor"] if n_real else []
    log = _CsvLog(out / "loss.csv", columns, append=resume) if rank == 0 else None
    vlog = _CsvLog(out / "validation.csv", ["step", "metric", "value"], append=resume) if rank == 0 else None
    start, running, groups = time.monotonic(), [], []
    with reporter.task(f"train {kind}", cfg.iterations, unit="step") as task:
        task.update(step)
        while step < cfg.iterations:
            x, y, zone = batches.next(step)
            x, y = x.to(dev), y.to(dev)
            zone = None if zone is None else zone.to(dev)
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast:
                if kind == "diffusion":
                    loss = diffusion_loss(lambda xt, t: net(xt, t).float(), x, alpha_bar)
                else:
                    if cfg.paired:  # one t and one noise per pair: the lesion is the only difference
                        n_pairs = (x.shape[0] - n_real) // 2
                        t = sample_timesteps(step, n_pairs, cfg).repeat_interleave(2)
                        t = torch.cat([t, sample_timesteps(step, n_real, cfg)]).to(dev)
                        noise = torch.randn_like(x[: 2 * n_pairs : 2]).repeat_interleave(2, dim=0)
                        noise = torch.cat([noise, torch.randn_like(x[2 * n_pairs :])])
                    else:
                        t = sample_timesteps(step, x.shape[0], cfg).to(dev)
                        noise = torch.randn_like(x)
                    x_t = q_sample(x, t, noise, alpha_bar)
                    per_sample = F.cross_entropy(net(x_t, t, zone).float(), y, reduction="none")
                    loss = per_sample.mean()
                    groups.append(_group_losses(per_sample.detach(), y, n_real))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema.update_parameters(model)
            step += 1
            running.append(loss.item())
            task.update(1, loss=float(np.mean(running[-50:])))
            if rank != 0:
                continue
            if step % 25 == 0 or step == cfg.iterations:
                row = [step, float(np.mean(running[-25:])), lr, round(time.monotonic() - start, 1)]
                if kind == "classifier":
                    row += [float(np.nanmean(g)) for g in np.asarray(groups[-25:]).T]
                log.write(row)
            if step % cfg.validate_every == 0 or step == cfg.iterations:
                for name, value in _validate(kind, ema.module, val, alpha_bar).items():
                    vlog.write([step, name, value])
                    reporter.info(f"step {step}: {name} = {value:.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
                _save_checkpoint(ckpt, model, ema, opt, step, rng)
                save_state(ema.module, out / f"{kind}.safetensors")
                _plot_loss(out / "loss.csv", out / "loss.png", kind)
    if world > 1:
        torch.distributed.destroy_process_group()
    return out / f"{kind}.safetensors"


def _group_losses(losses: torch.Tensor, y: torch.Tensor, n_real: int) -> list[float]:
    """Mean loss of healthy and lesion samples (the pairs, or the whole unpaired batch), then of the
    real healthy and real tumor slots when a paired batch has them."""
    cut = len(y) - n_real
    parts = [(losses[:cut], y[:cut])] + ([(losses[cut:], y[cut:])] if n_real else [])
    return [float(part[yy == g].mean()) if (yy == g).any() else np.nan for part, yy in parts for g in (0, 1)]


def _validate(kind: Kind, model: nn.Module, val: dict, alpha_bar: torch.Tensor) -> dict[str, float]:
    model.eval()
    try:
        if kind == "classifier":
            out = {"auroc_real_t0": auroc(val["y"], classifier_probabilities(model, val["x"], 0, zone=val["zone"]))}
            if "lesion_x" in val:
                for t in val.get("t_checks", [0]):
                    out[f"auroc_paired_t{t}"] = paired_auroc(
                        model, val["lesion_clean"], val["lesion_x"], t, alpha_bar, val["lesion_zone"]
                    )
            return out
        gen = torch.Generator().manual_seed(0)
        torch.set_grad_enabled(False)
        x = torch.from_numpy(val["x"][:256])[:, None].to(alpha_bar.device)
        losses = [
            float(diffusion_loss(model, x, alpha_bar, generator=gen if x.device.type == "cpu" else None))
            for _ in range(2)
        ]
        return {"val_loss": float(np.mean(losses))}
    finally:
        torch.set_grad_enabled(True)
        model.train()


def _init_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    return rank, world


def _wrap_ddp(model: nn.Module, dev: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _save_checkpoint(ckpt: Path, model, ema, opt, step: int, rng: np.random.Generator) -> None:
    """Weights, EMA and flattened AdamW state as safetensors; step and RNG as JSON. Atomic per file."""
    ckpt.mkdir(parents=True, exist_ok=True)
    save_state(model, ckpt / "model.safetensors")
    save_state(ema, ckpt / "ema.safetensors")
    state = opt.state_dict()
    flat = {
        f"{idx}.{name}": value.detach().cpu().contiguous().reshape(value.shape)
        for idx, entries in state["state"].items()
        for name, value in entries.items()
        if torch.is_tensor(value)
    }
    flat["__torch_rng__"] = torch.get_rng_state()
    tmp = ckpt / "optim.safetensors.tmp"
    save_file(flat, str(tmp))
    os.replace(tmp, ckpt / "optim.safetensors")
    meta = {"step": step, "param_groups": state["param_groups"], "rng": rng.bit_generator.state}
    (ckpt / "state.json.tmp").write_text(json.dumps(meta))
    os.replace(ckpt / "state.json.tmp", ckpt / "state.json")


def _load_checkpoint(ckpt: Path, model, ema, opt, rng: np.random.Generator) -> tuple[int, np.random.Generator]:
    meta = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    ema.load_state_dict(load_file(str(ckpt / "ema.safetensors")))
    flat = load_file(str(ckpt / "optim.safetensors"))
    torch.set_rng_state(flat.pop("__torch_rng__"))
    state: dict[int, dict] = {}
    for key, value in flat.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    rng.bit_generator.state = meta["rng"]
    return int(meta["step"]), rng


class _CsvLog:
    def __init__(self, path: Path, header: list[str], append: bool) -> None:
        self.path = path
        if not (append and path.is_file()):
            with path.open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(header)

    def write(self, row: list) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(row)


def _plot_loss(csv_path: Path, png_path: Path, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    if len(rows) < 2:
        return
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(steps, loss, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{kind} training loss")
    if kind == "diffusion":
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def _autocast(dev: torch.device):
    """bf16 autocast where the hardware has it; losses and the optimizer stay fp32."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if dev.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return _null()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
