"""Loss functions: pure functions of tensors and floats, importable with torch alone.

Each returns per-example values ``(B,)`` (reduction belongs to the trainer) and detached metrics.
"""

from alignment.losses.bco import (
    BCOLossOutput,
    DensityRatioClassifier,
    RewardShift,
    bco_loss,
    density_ratio_weights,
    fit_density_ratio_classifier,
)
from alignment.losses.ctrl import calibrated_reward, exp_transform, identity_transform, neg_exp_transform
from alignment.losses.d2o import D2OLossOutput, d2o_loss
from alignment.losses.dpo import (
    PreferenceLossOutput,
    dpo_loss,
    log_ratio,
    preference_margin,
    sigmoid_preference_loss,
)
from alignment.losses.ipo import ipo_loss
from alignment.losses.kto import (
    KTOLossOutput,
    kto_loss,
    kto_reference_point,
    kto_reference_point_from_sums,
    mismatched_indices,
)
from alignment.losses.spa import confidence_smoothed_dpo_loss

__all__ = [
    "BCOLossOutput",
    "D2OLossOutput",
    "DensityRatioClassifier",
    "KTOLossOutput",
    "PreferenceLossOutput",
    "RewardShift",
    "bco_loss",
    "calibrated_reward",
    "confidence_smoothed_dpo_loss",
    "d2o_loss",
    "density_ratio_weights",
    "dpo_loss",
    "exp_transform",
    "fit_density_ratio_classifier",
    "identity_transform",
    "ipo_loss",
    "kto_loss",
    "kto_reference_point",
    "kto_reference_point_from_sums",
    "log_ratio",
    "mismatched_indices",
    "neg_exp_transform",
    "preference_margin",
    "sigmoid_preference_loss",
]
