"""``pixelwise auto`` (issue 20): fingerprint a dataset, plan a recipe from it, optionally search
over candidate recipes (:func:`run_search`), then train, evaluate, bundle and report
(:func:`run_auto`).

After nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based
biomedical image segmentation", Nature Methods 18, 2021): a dataset fingerprint plus fixed rules
instead of hand-tuning. See docs/auto.md.

    from pixelwise.auto import fingerprint, plan
    fp = fingerprint("configs/data/membrane.yaml")
    p = plan(fp, budget_seconds=1800, device="cpu")
    p.write("auto.yaml")          # pixelwise train auto.yaml --out runs/auto
"""

from .fingerprint import Fingerprint, default_splits, fingerprint
from .plan import (
    Plan,
    epochs_for_budget,
    lite_weights_available,
    measure_step_seconds,
    plan,
    plan_batch,
    plan_crop,
)
from .run import AutoResult, DeadlineStop, bundle_name_for, parse_duration, run_auto
from .search import Candidate, PruneOnValidation, candidates, final_plan, reschedule, run_search

__all__ = [
    "AutoResult",
    "Candidate",
    "DeadlineStop",
    "Fingerprint",
    "Plan",
    "PruneOnValidation",
    "candidates",
    "default_splits",
    "epochs_for_budget",
    "final_plan",
    "fingerprint",
    "lite_weights_available",
    "measure_step_seconds",
    "plan",
    "plan_batch",
    "plan_crop",
    "reschedule",
    "bundle_name_for",
    "parse_duration",
    "run_auto",
    "run_search",
]
