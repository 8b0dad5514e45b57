"""Train the diffusion UNet or the noisy classifier on a slice folder or an MSD Task07 folder.

Writes into --out: <kind>.safetensors (EMA weights), train_config.json, split.json (cases by
patient), loss.csv, loss.png, validation.csv and checkpoint/ (rerun with --resume to continue; at
most one checkpoint interval is lost). Settings come from --config (JSON, see
PancDiffSlicer/Resources/Models/training/*.json) with command-line overrides. Multi-GPU: start with
`torchrun --nproc_per_node=G -m pancdiff train ...` (PyTorch DDP).

To assemble a model bundle for `pancdiff detect --model`, see `pancdiff.weights.save_bundle`
(the model card's reproduce section shows the exact commands).
"""

from __future__ import annotations

import argparse

from ..progress import Reporter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("diffusion", "classifier"), help="which network to train")
    parser.add_argument("--data", required=True, metavar="DIR", help="slice folder (manifest.csv) or MSD Task07 folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="training output folder")
    parser.add_argument("--config", metavar="FILE", help="JSON training settings (TrainConfig fields)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint if present")
    parser.add_argument("--iterations", type=int, help="override the number of optimizer steps")
    parser.add_argument("--batch-size", type=int, help="override the batch size")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, mps or cpu")


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    from ..train import config_from_json, train

    cfg = config_from_json(args.config, iterations=args.iterations, batch_size=args.batch_size)
    path = train(args.kind, args.data, args.out, cfg, resume=args.resume, reporter=reporter, device=args.device)
    reporter.info(f"weights: {path}")
    args.result = {"weights": str(path)}
    return 0
