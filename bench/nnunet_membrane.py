"""nnU-Net v2 (``2d`` configuration) on the ISBI membranes, trained for a fixed wall time on the CPU.

The peer named by issue 20: ``nnunetv2`` from PyPI trained on the same 24 training slices (0–23) for
the same training time as pixelwise's ``configs/membrane_unet.yaml`` (10.6 minutes by default) and
scored on the same 6 validation slices (24–29) by pixelwise's own confusion matrix
(:class:`pixelwise.metrics.ConfusionMatrix`, 2 classes, class 0 membrane, class 1 cell).

Steps (each printed, each timed):

1. **convert**: the 30 labelled slices of ``configs/data/membrane.yaml`` into nnU-Net's raw format,
   ``Dataset501_Membrane``: ``imagesTr/N_0000.png`` (the original grayscale PNG, copied byte for
   byte), ``labelsTr/N.png`` (nnU-Net label = 1 − pixelwise's class: the membrane, the structure
   to segment, is nnU-Net's foreground label 1 and the cell interior its background 0, because
   nnU-Net's Dice term leaves the background out; scoring maps back), ``dataset.json`` with
   channel name ``EM``
   (any name other than CT / noNorm / rescale_to_0_1 / rgb_to_0_1 gets nnU-Net's default z-score
   normalisation, what it uses for non-CT images) and labels ``{"background": 0, "membrane": 1}``.
2. **plan + preprocess**: nnU-Net's own Python API, what ``nnUNetv2_plan_and_preprocess -d 501 -c 2d
   --verify_dataset_integrity`` runs: dataset integrity check, fingerprint, the default
   ``ExperimentPlanner`` (plans ``nnUNetPlans``), preprocessing of the ``2d`` configuration only.
   Patch size, batch size, network, loss and augmentation are nnU-Net's, untouched.
3. **split**: ``splits_final.json`` with one fold, train = slices 0–23, val = 24–29, so nnU-Net
   never trains on the validation slices.
4. **train**: fold 0 of ``2d`` on ``torch.device("cpu")`` with ``torch.set_num_threads(cpu_count)``
   and nnU-Net's default number of augmentation processes (``min(12, cpu_count)``), as
   ``nnUNetv2_train ... -device cpu`` sets them. nnU-Net's schedule is 1000 epochs × 250 iterations
   with poly LR decay per epoch, which cannot finish in minutes on a CPU, so the trainer is
   :class:`nnUNetTrainer` subclassed with only these changes, decided while it trains:

   * ``num_iterations_per_epoch`` stays 250 unless an epoch would take longer than a tenth of the
     budget; then it is lowered so that an epoch takes about a tenth of the budget (about 10
     epochs), and ``num_val_iterations_per_epoch`` (its per-epoch pseudo-Dice, 50 by default) is
     lowered in the same 5:1 proportion so that its share of the time stays nnU-Net's. The time of
     an iteration is measured on the first iterations of epoch 0 (the first is excluded as warm-up;
     a validation iteration, forward only, is counted as a third of a training one).
   * ``num_epochs`` (and the poly scheduler's ``max_steps`` with it) is set after epoch 0 so that the
     poly schedule ends at the deadline: 1 + round(time left / time of an epoch), the epoch's time
     being epoch 0's without its warm-up excess. This is what nnU-Net's own ``nnUNetTrainer_Xepochs``
     variants change. Epoch 0 runs at the initial LR whatever ``num_epochs`` becomes, so nothing
     trained before the decision was trained on a wrong schedule.
   * a hard wall-clock stop: no training or validation iteration is started that would, at the
     measured pace, end after the deadline; training then ends as nnU-Net ends it (``on_train_end``
     writes ``checkpoint_final.pth``).

   The training time is counted as pixelwise counts its own (the sum of ``epoch_seconds``): the
   epochs, everything nnU-Net does in them included (its per-epoch validation iterations, progress
   plot and ``checkpoint_best.pth``), from the start of epoch 0 to the end of the last. The set-up
   before it (data loaders and their augmentation workers, unpacking) and ``on_train_end`` are
   recorded separately, like preprocessing and prediction. nnU-Net's per-epoch validation on slices
   24–29 only chooses ``checkpoint_best.pth``, which is not used: the scored model is the final one.
5. **predict**: the 6 validation slices with nnU-Net's own :class:`nnUNetPredictor` on the CPU and
   its defaults (sliding window with step 0.5 and Gaussian weighting, mirroring test-time
   augmentation on), from ``checkpoint_final.pth``; then again without mirroring. The predictor is
   set up with its ``manual_initialization`` (what nnU-Net's trainer itself uses for validation)
   because ``initialize_from_trained_model_folder`` looks the trainer class up by name inside the
   nnunetv2 package, where this script's subclass is not; the network is built by
   ``nnUNetTrainer.build_network_architecture``, which the subclass does not change.
6. **score**: both predictions with pixelwise's confusion matrix against pixelwise's decoding of the
   masks: mIoU, per-class IoU and Dice, mean Dice, pixel accuracy; then the JSON (written
   atomically) with versions, machine, plans, choices, times and scores.

nnU-Net's folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) are set under
``--work`` before nnunetv2 is imported; a run without ``--resume`` deletes this dataset's folders
there first. ``--resume`` reuses a finished conversion + preprocessing and a finished training (its
``checkpoint_final.pth`` and ``train_record.json``), so an interrupted prediction can be redone; an
interrupted training is started again (nnU-Net only writes ``checkpoint_latest.pth`` every 50
epochs).

Usage, in its own venv (``python3 -m venv .venv-nnunet && .venv-nnunet/bin/pip install
torch==2.14.1 torchvision==0.29.1 nnunetv2 -e .``)::

    .venv-nnunet/bin/python bench/nnunet_membrane.py            # 10.6 minutes
    .venv-nnunet/bin/python bench/nnunet_membrane.py --minutes 1.5 \\
        --work /tmp/nnunet_smoke --out /tmp/nnunet_smoke.json             # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "configs/data/membrane.yaml"
DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID:03d}_Membrane"
CONFIGURATION = "2d"
FOLD = 0
PLANS = "nnUNetPlans"
DEFAULT_ITERATIONS = 250  # nnUNetTrainer.num_iterations_per_epoch
DEFAULT_VAL_ITERATIONS = 50  # nnUNetTrainer.num_val_iterations_per_epoch
EPOCH_SHARE = 10  # an epoch may take at most 1/EPOCH_SHARE of the budget before iterations are cut
CALIBRATION_ITERATIONS = 3  # epoch 0's first iterations, timed to decide the iterations per epoch
VAL_ITERATION_COST = 1 / 3  # a validation iteration (forward only) relative to a training one


def log(msg: str) -> None:
    print(f"[nnunet_membrane {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def set_nnunet_paths(work: Path) -> dict[str, str]:
    """nnU-Net reads its folders from environment variables when it is imported."""
    paths = {
        "nnUNet_raw": str(work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
    }
    for key, value in paths.items():
        Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[key] = value
    return paths


# ---- 1. conversion -------------------------------------------------------------------------------


def convert(spec, raw: Path) -> dict:  # noqa: ANN001 - pixelwise's DatasetSpec
    """Write the labelled slices in nnU-Net's raw format; return the case lists of both splits."""
    import numpy as np
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from PIL import Image

    from pixelwise.data.dataset import load_pair
    from pixelwise.data.spec import resolve_split

    images, labels = raw / "imagesTr", raw / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    cases: dict[str, list[str]] = {}
    for split in ("train", "val"):
        samples, _ = resolve_split(spec, split)
        cases[split] = []
        for sample in samples:
            case = sample.image.stem
            image, mask = load_pair(sample, spec)  # mask: pixelwise's class indices
            if image.ndim == 3 and image.shape[2] != 1:
                raise SystemExit(f"{sample.image}: expected a grayscale image, got {image.shape}")
            if mask is None or not set(np.unique(mask).tolist()) <= {0, 1}:
                raise SystemExit(f"{sample.mask}: expected classes 0/1")
            shutil.copyfile(sample.image, images / f"{case}_0000.png")
            Image.fromarray((1 - mask).astype(np.uint8)).save(labels / f"{case}.png")
            cases[split].append(case)
        cases[split].sort(key=lambda c: (len(c), c))  # numeric order for "0".."29"
    overlap = set(cases["train"]) & set(cases["val"])
    if overlap:
        raise SystemExit(f"train and val share slices {sorted(overlap)}")
    names = [c.name for c in spec.classes]
    generate_dataset_json(
        str(raw),
        channel_names={0: "EM"},
        labels={"background": 0, names[0]: 1},
        num_training_cases=len(cases["train"]) + len(cases["val"]),
        file_ending=".png",
        dataset_name=DATASET_NAME,
        license="ISBI 2012 EM segmentation challenge data",
        converted_by="pixelwise bench/nnunet_membrane.py",
        description=f"ISBI 2012 EM membranes from {DATA.relative_to(REPO)}; label 0 = "
        f"{names[1]}, 1 = {names[0]}",
    )
    return cases


# ---- 2. planning and preprocessing ---------------------------------------------------------------


def plan_and_preprocess(num_processes: int) -> None:
    """``nnUNetv2_plan_and_preprocess -d 501 -c 2d --verify_dataset_integrity``, through its API."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    extract_fingerprint_dataset(
        DATASET_ID, num_processes=num_processes, check_dataset_integrity=True, clean=True
    )
    _, plans_identifier = plan_experiment_dataset(DATASET_ID)
    if plans_identifier != PLANS:
        raise SystemExit(f"nnU-Net's default planner wrote {plans_identifier}, not {PLANS}")
    preprocess_dataset(
        DATASET_ID, PLANS, configurations=(CONFIGURATION,), num_processes=(num_processes,)
    )


def write_split(preprocessed: Path, cases: dict) -> None:
    from batchgenerators.utilities.file_and_folder_operations import save_json

    save_json(
        [{"train": cases["train"], "val": cases["val"]}], str(preprocessed / "splits_final.json")
    )


# ---- 3. the trainer ------------------------------------------------------------------------------


def make_trainer_class():  # noqa: ANN201
    """nnUNetTrainer with a wall-time budget (imported late: nnU-Net reads its paths on import)."""
    import numpy as np
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainer_WallTime(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming
        """nnUNetTrainer whose ``num_epochs`` (and, when an epoch would exceed a tenth of the budget,
        iterations per epoch) are fitted to ``budget_seconds``, with a hard stop at the deadline."""

        budget_seconds: float = 600.0

        def __init__(
            self,
            plans: dict,
            configuration: str,
            fold: int,
            dataset_json: dict,
            device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
        ) -> None:
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.record: dict = {}

        def _set_num_epochs(self, num_epochs: int) -> None:
            self.num_epochs = num_epochs
            self.lr_scheduler.max_steps = num_epochs  # PolyLRScheduler was built with 1000

        def _choose_iterations(self, train_step_s: float) -> None:
            default_epoch_s = train_step_s * (
                DEFAULT_ITERATIONS + DEFAULT_VAL_ITERATIONS * VAL_ITERATION_COST
            )
            limit_s = self.budget_seconds / EPOCH_SHARE
            self.record["iteration_seconds_estimate"] = round(train_step_s, 3)
            self.record["default_epoch_seconds_estimate"] = round(default_epoch_s, 1)
            if default_epoch_s <= limit_s:
                self.record["iterations_lowered"] = False
                return
            per_iteration_s = train_step_s * (
                1 + DEFAULT_VAL_ITERATIONS / DEFAULT_ITERATIONS * VAL_ITERATION_COST
            )
            n = max(CALIBRATION_ITERATIONS, math.floor(limit_s / per_iteration_s))
            self.num_iterations_per_epoch = n
            self.num_val_iterations_per_epoch = max(
                1, round(n * DEFAULT_VAL_ITERATIONS / DEFAULT_ITERATIONS)
            )
            self.record["iterations_lowered"] = True
            self.print_to_log_file(
                f"An epoch of {DEFAULT_ITERATIONS} iterations would take about "
                f"{default_epoch_s:.0f} s, more than 1/{EPOCH_SHARE} of the {self.budget_seconds:.0f}"
                f" s budget: {n} training and {self.num_val_iterations_per_epoch} validation "
                "iterations per epoch"
            )

        def run_training(self) -> None:  # noqa: C901, PLR0912, PLR0915 - one loop, kept whole
            t_setup = time.perf_counter()
            self.on_train_start()
            self.record["setup_seconds"] = round(time.perf_counter() - t_setup, 2)
            start = time.perf_counter()
            deadline = start + self.budget_seconds
            train_steps: list[float] = []
            val_steps: list[float] = []
            epoch_seconds: list[float] = []
            lrs: list[float] = []
            iterations_done = val_iterations_done = full_epochs = 0
            stopped = False

            def pace(steps: list[float], fallback: float) -> float:
                recent = steps[1:][-20:] if len(steps) > 1 else steps
                return statistics.median(recent) if recent else fallback

            while self.current_epoch < self.num_epochs and not stopped:
                t_epoch = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                lrs.append(float(self.optimizer.param_groups[0]["lr"]))
                train_outputs = []
                i = 0
                while i < self.num_iterations_per_epoch:
                    if time.perf_counter() + pace(train_steps, 0.0) > deadline:
                        stopped = True
                        break
                    t = time.perf_counter()
                    train_outputs.append(self.train_step(next(self.dataloader_train)))
                    train_steps.append(time.perf_counter() - t)
                    i += 1
                    iterations_done += 1
                    if self.current_epoch == 0 and i == CALIBRATION_ITERATIONS:
                        self._choose_iterations(statistics.mean(train_steps[1:]))
                if train_outputs:
                    self.on_train_epoch_end(train_outputs)
                if stopped:
                    break
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = []
                    for _ in range(self.num_val_iterations_per_epoch):
                        guess = pace(train_steps, 0.0) * VAL_ITERATION_COST
                        if time.perf_counter() + pace(val_steps, guess) > deadline:
                            stopped = True
                            break
                        t = time.perf_counter()
                        val_outputs.append(self.validation_step(next(self.dataloader_val)))
                        val_steps.append(time.perf_counter() - t)
                        val_iterations_done += 1
                    if val_outputs:
                        self.on_validation_epoch_end(val_outputs)
                if not val_outputs:
                    break
                self.on_epoch_end()  # increments current_epoch
                full_epochs += 1
                epoch_seconds.append(time.perf_counter() - t_epoch)
                if self.current_epoch == 1:
                    warmup_excess = max(0.0, train_steps[0] - pace(train_steps, train_steps[0]))
                    epoch_s = max(1e-3, epoch_seconds[0] - warmup_excess)
                    left_s = deadline - time.perf_counter()
                    n = 1 + max(0, round(left_s / epoch_s))
                    self._set_num_epochs(n)
                    self.record["epoch_seconds_estimate"] = round(epoch_s, 2)
                    self.print_to_log_file(
                        f"Epoch 0 took {epoch_seconds[0]:.1f} s ({epoch_s:.1f} s without warm-up):"
                        f" num_epochs = {n} to end the poly schedule at the deadline"
                    )
            train_seconds = time.perf_counter() - start
            t_end = time.perf_counter()
            self.on_train_end()
            self.record.update(
                train_seconds=round(train_seconds, 2),
                budget_seconds=round(self.budget_seconds, 2),
                train_end_seconds=round(time.perf_counter() - t_end, 2),
                stopped_by_deadline=stopped,
                num_epochs=self.num_epochs,
                full_epochs_done=full_epochs,
                iterations_per_epoch=self.num_iterations_per_epoch,
                val_iterations_per_epoch=self.num_val_iterations_per_epoch,
                iterations_done=iterations_done,
                val_iterations_done=val_iterations_done,
                epochs_done=round(iterations_done / self.num_iterations_per_epoch, 3),
                images_seen=iterations_done * self.batch_size,
                train_step_seconds_median=round(pace(train_steps, float("nan")), 3),
                train_step_seconds_first=round(train_steps[0], 3) if train_steps else None,
                val_step_seconds_median=round(pace(val_steps, float("nan")), 3),
                epoch_seconds=[round(s, 2) for s in epoch_seconds],
                lrs=[float(np.format_float_positional(lr, 6)) for lr in lrs],
                final_train_loss=_last(self.logger.get_value("train_losses", step=None)),
                final_pseudo_dice=_last(self.logger.get_value("mean_fg_dice", step=None)),
            )

    return nnUNetTrainer_WallTime


def _last(values: list) -> float | None:
    return round(float(values[-1]), 5) if values else None


def describe_training(trainer) -> dict:  # noqa: ANN001 - an nnUNetTrainer
    """What nnU-Net planned and built: patch, batch, network, loss, optimiser, augmentation."""
    cm = trainer.configuration_manager
    rotation, dummy_2d, initial_patch, mirror_axes = (
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    )
    transforms = []
    compose = getattr(getattr(trainer.dataloader_train, "generator", None), "transforms", None)
    for t in getattr(compose, "transforms", []) or []:
        inner = getattr(t, "transform", None)
        name = type(t).__name__
        if inner is not None:
            name += f"({type(inner).__name__}, p={getattr(t, 'apply_probability', '?')})"
        transforms.append(name)
    network = trainer.network
    loss = trainer.loss
    inner_loss = getattr(loss, "loss", loss)
    return {
        "configuration": CONFIGURATION,
        "plans": PLANS,
        "planner": "ExperimentPlanner (nnU-Net's default)",
        "patch_size": list(cm.patch_size),
        "batch_size": int(cm.batch_size),
        "spacing": list(cm.spacing),
        "median_image_size": list(cm.median_image_size_in_voxels),
        "normalization": list(cm.normalization_schemes),
        "network": {
            "class": cm.network_arch_class_name,
            "kwargs": cm.network_arch_init_kwargs,
            "parameters": sum(p.numel() for p in network.parameters()),
            "deep_supervision": bool(trainer.enable_deep_supervision),
        },
        "loss": {
            "class": type(loss).__name__,
            "inner": type(inner_loss).__name__,
            "deep_supervision_weights": [
                round(float(w), 5) for w in getattr(loss, "weight_factors", [])
            ],
            "batch_dice": bool(cm.batch_dice),
        },
        "optimizer": {
            "class": type(trainer.optimizer).__name__,
            "initial_lr": trainer.initial_lr,
            "momentum": trainer.optimizer.defaults.get("momentum"),
            "nesterov": trainer.optimizer.defaults.get("nesterov"),
            "weight_decay": trainer.weight_decay,
            "schedule": "PolyLRScheduler, exponent 0.9, stepped per epoch",
        },
        "oversample_foreground_percent": trainer.oversample_foreground_percent,
        "augmentation": {
            "rotation_radians": [float(x) for x in rotation] if rotation is not None else None,
            "mirror_axes": list(mirror_axes) if mirror_axes is not None else None,
            "dummy_2d": bool(dummy_2d),
            "initial_patch_size": [int(x) for x in initial_patch],
            "transforms": transforms,
        },
    }


def train(budget_seconds: float) -> tuple[dict, dict]:
    """Train fold 0 of ``2d`` on the CPU for ``budget_seconds``; return (record, plans summary)."""
    import multiprocessing

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    torch.set_num_threads(multiprocessing.cpu_count())  # what nnUNetv2_train -device cpu does
    trainer_class = make_trainer_class()
    base = Path(str(nnUNet_preprocessed)) / DATASET_NAME
    plans = load_json(str(base / f"{PLANS}.json"))
    plans["continue_training"] = False  # what nnU-Net's get_trainer_from_args adds
    dataset_json = load_json(str(base / "dataset.json"))
    trainer = trainer_class(plans, CONFIGURATION, FOLD, dataset_json, device=torch.device("cpu"))
    trainer.budget_seconds = budget_seconds
    trainer.run_training()
    record = dict(trainer.record)
    record.update(
        trainer=type(trainer).__name__,
        torch_threads=torch.get_num_threads(),
        augmentation_processes=get_allowed_n_proc_DA(),
        output_folder=trainer.output_folder,
        log_file=trainer.log_file,
    )
    return record, describe_training(trainer)


# ---- 4. prediction and scoring -------------------------------------------------------------------


def make_predictor(model_dir: Path):  # noqa: ANN201
    """nnUNetPredictor with its defaults on the CPU, loaded with ``checkpoint_final.pth``."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = load_json(str(model_dir / "dataset.json"))
    plans_manager = PlansManager(load_json(str(model_dir / "plans.json")))
    checkpoint = torch.load(
        model_dir / f"fold_{FOLD}" / "checkpoint_final.pth",
        map_location=torch.device("cpu"),
        weights_only=False,
    )
    cm = plans_manager.get_configuration(checkpoint["init_args"]["configuration"])
    network = nnUNetTrainer.build_network_architecture(
        plans_manager,
        cm,
        determine_num_input_channels(plans_manager, cm, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    network.load_state_dict(checkpoint["network_weights"])
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)  # its defaults
    predictor.manual_initialization(
        network,
        plans_manager,
        cm,
        [checkpoint["network_weights"]],
        dataset_json,
        checkpoint["trainer_name"],
        checkpoint["inference_allowed_mirroring_axes"],
    )
    return predictor


def predict(predictor, raw: Path, cases: list[str], out: Path, processes: int) -> float:  # noqa: ANN001
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    predictor.predict_from_files(
        [[str(raw / "imagesTr" / f"{c}_0000.png")] for c in cases],
        [str(out / c) for c in cases],
        save_probabilities=False,
        overwrite=True,
        num_processes_preprocessing=processes,
        num_processes_segmentation_export=processes,
    )
    return time.perf_counter() - t


def score(spec, cases: list[str], pred_dir: Path) -> dict:  # noqa: ANN001
    """pixelwise's confusion matrix over the split, from nnU-Net's written predictions."""
    import numpy as np
    import torch
    from PIL import Image

    from pixelwise.data.dataset import load_pair
    from pixelwise.data.spec import resolve_split
    from pixelwise.metrics import ConfusionMatrix

    samples = {s.image.stem: s for s in resolve_split(spec, "val")[0]}
    cmat = ConfusionMatrix(len(spec.classes))
    for case in cases:
        _, target = load_pair(samples[case], spec)
        pred = 1 - np.asarray(Image.open(pred_dir / f"{case}.png")).astype(np.int64)  # to classes
        cmat.update(
            torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(target.astype(np.int64))
        )
    s = cmat.scores()
    return {
        "num_images": len(cases),
        "miou": round(s.miou, 6),
        "mean_dice": round(s.mean_dice, 6),
        "pixel_accuracy": round(s.pixel_accuracy, 6),
        "mean_accuracy": round(s.mean_accuracy, 6),
        "per_class": [
            {
                "name": c.name,
                "iou": round(float(s.iou[k]), 6),
                "dice": round(float(s.dice[k]), 6),
                "accuracy": round(float(s.accuracy[k]), 6),
                "support": int(s.support[k]),
            }
            for k, c in enumerate(spec.classes)
        ],
        "confusion_matrix": cmat.matrix.tolist(),
    }


# ---- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:  # noqa: C901, PLR0915 - the steps in order
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.6, help="training wall time (default 10.6)")
    p.add_argument("--work", type=Path, default=REPO / "runs/nnunet_membrane")
    p.add_argument("--out", type=Path, default=REPO / "docs/results/nnunet_membrane.json")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse a finished preprocessing and a finished training under --work",
    )
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error("--minutes must be positive")
    work = args.work.resolve()
    paths = set_nnunet_paths(work)  # before nnunetv2 is imported anywhere

    import torch

    from pixelwise._atomic import write_text_atomic
    from pixelwise.data.spec import load_dataset_spec

    cpus = os.cpu_count() or 1
    raw = work / "nnUNet_raw" / DATASET_NAME
    preprocessed = work / "nnUNet_preprocessed" / DATASET_NAME
    model_dir = (
        work / "nnUNet_results" / DATASET_NAME / f"nnUNetTrainer_WallTime__{PLANS}__{CONFIGURATION}"
    )
    record_file = work / "train_record.json"
    done_marker = preprocessed / ".pixelwise_preprocessed"
    spec = load_dataset_spec(DATA)
    times: dict[str, float] = {}

    if not args.resume:
        for folder in (raw, preprocessed, model_dir, work / "predictions"):
            if folder.exists():
                shutil.rmtree(folder)
        record_file.unlink(missing_ok=True)

    t = time.perf_counter()
    log(f"[1/6] convert {spec.root} -> {raw}")
    cases = convert(spec, raw)
    times["convert_seconds"] = round(time.perf_counter() - t, 2)
    log(
        f"      {len(cases['train'])} train + {len(cases['val'])} val slices, {times['convert_seconds']} s"
    )

    if args.resume and done_marker.exists():
        times.update(json.loads(done_marker.read_text()))
        log(
            f"[2/6] plan + preprocess: reused (--resume); it took {times['plan_preprocess_seconds']} s"
        )
    else:
        log(
            f"[2/6] plan + preprocess (integrity check, fingerprint, ExperimentPlanner, {CONFIGURATION})"
        )
        t = time.perf_counter()
        plan_and_preprocess(num_processes=cpus)
        times["plan_preprocess_seconds"] = round(time.perf_counter() - t, 2)
        done_marker.write_text(
            json.dumps({"plan_preprocess_seconds": times["plan_preprocess_seconds"]})
        )
        log(f"      {times['plan_preprocess_seconds']} s")

    log(
        f"[3/6] split: one fold, train = {len(cases['train'])} slices "
        f"({cases['train'][0]}..{cases['train'][-1]}), val = {cases['val']}"
    )
    write_split(preprocessed, cases)

    budget = args.minutes * 60
    final_ckpt = model_dir / f"fold_{FOLD}" / "checkpoint_final.pth"
    if args.resume and record_file.exists() and final_ckpt.exists():
        saved = json.loads(record_file.read_text())
        record, plans_summary = saved["record"], saved["plans"]
        log(f"[4/6] train: reused (--resume), budget {record['budget_seconds'] / 60:g} min")
    else:
        log(f"[4/6] train fold {FOLD} of {CONFIGURATION} on the CPU for {args.minutes} min")
        t = time.perf_counter()
        record, plans_summary = train(budget)
        record["train_call_seconds"] = round(time.perf_counter() - t, 2)
        write_text_atomic(
            record_file, json.dumps({"record": record, "plans": plans_summary}, indent=2) + "\n"
        )
    log(
        f"      {record['train_seconds']} s of training: {record['iterations_done']} iterations "
        f"({record['iterations_per_epoch']}/epoch, {record['full_epochs_done']} full epochs of "
        f"{record['num_epochs']} planned), setup {record['setup_seconds']} s"
    )

    log("[5/6] predict the val slices with nnUNetPredictor (mirroring on, then off)")
    predictor = make_predictor(model_dir)
    val = cases["val"]
    processes = min(cpus, len(val))
    predictions = {}
    for name, mirroring in (("mirroring", True), ("no_mirroring", False)):
        predictor.use_mirroring = mirroring
        out_dir = work / "predictions" / name
        seconds = predict(predictor, raw, val, out_dir, processes)
        times[f"predict_{name}_seconds"] = round(seconds, 2)
        predictions[name] = out_dir
        log(f"      {name}: {seconds:.1f} s")

    log("[6/6] score with pixelwise.metrics.ConfusionMatrix")
    scores = {name: score(spec, val, d) for name, d in predictions.items()}
    for name, s in scores.items():
        log(
            f"      {name}: mIoU {100 * s['miou']:.2f}%, mean Dice {100 * s['mean_dice']:.2f}%, "
            f"pixel acc {100 * s['pixel_accuracy']:.2f}%, IoU "
            + ", ".join(f"{c['name']} {100 * c['iou']:.2f}" for c in s["per_class"])
        )

    result = {
        "benchmark": "nnU-Net v2 (2d) on the ISBI membranes, fixed training wall time, CPU",
        "issue": 20,
        "dataset": {
            "spec": str(DATA.relative_to(REPO)),
            "train_slices": cases["train"],
            "val_slices": val,
            "nnunet_dataset": DATASET_NAME,
            "label_mapping": {"mask 0 (membrane)": 1, "mask 255 (cell)": 0},
        },
        "versions": {
            "nnunetv2": version("nnunetv2"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "pixelwise": version("pixelwise"),
        },
        "machine": {
            "cpu_count": cpus,
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
        },
        "minutes": round(record["budget_seconds"] / 60, 4),
        "choices": {
            "iterations_per_epoch_default": DEFAULT_ITERATIONS,
            "rule_iterations": f"keep {DEFAULT_ITERATIONS} unless an epoch would take more than "
            f"1/{EPOCH_SHARE} of the budget; then an epoch of ~1/{EPOCH_SHARE} of it, validation "
            f"iterations in nnU-Net's {DEFAULT_ITERATIONS}:{DEFAULT_VAL_ITERATIONS} proportion",
            "rule_epochs": "after epoch 0: num_epochs = 1 + round(time left / epoch time), so the"
            " poly schedule ends at the deadline; hard stop before any iteration that would end"
            " after it",
            "calibration_iterations": CALIBRATION_ITERATIONS,
            "checkpoint_scored": "checkpoint_final.pth",
            "training_time": "epochs only (their per-epoch validation, plot and checkpoint_best"
            " included), like pixelwise's epoch_seconds; setup, preprocessing and prediction apart",
        },
        "training": record,
        "plans": plans_summary,
        "times": {
            **times,
            "train_seconds": record["train_seconds"],
            "train_setup_seconds": record["setup_seconds"],
            "train_end_seconds": record["train_end_seconds"],
        },
        "scores": scores,
        "prediction": {
            "predictor": "nnUNetPredictor defaults: tile_step_size 0.5, Gaussian, device cpu",
            "mirroring_axes": predictor.allowed_mirroring_axes,
        },
        "nnunet_paths": paths,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
