"""Counterfactual anomaly segmentation: pseudo-healthy counterfactuals, anomaly maps, post-processing, thresholds,
metrics and the synthetic-lesion protocol. Pure math on torch / numpy / scipy; never imports nnunetv2."""

from nnugen.anomaly.anatomy_mask import anatomy_condition, split_anatomy
from nnugen.anomaly.anomaly_map import (
    REDUCTIONS,
    body_mask,
    ensemble_map,
    erode_mask,
    postprocess,
    remove_small_components,
    residual_map,
    seed_averaged_residuals,
    uncertainty,
    unpadded_box,
)
from nnugen.anomaly.case_scores import score_cases
from nnugen.anomaly.counterfactual import NOISES, check_strength, counterfactual, multi_strength_counterfactuals
from nnugen.anomaly.erosion_choice import choose_erosion
from nnugen.anomaly.filtered_noise import filtered_noise, filtered_noise_like
from nnugen.anomaly.healthy_cases import HEALTHY_CASES_FILE, healthy_cases_file, read_case_list
from nnugen.anomaly.map_postprocessing import (
    LOGIT_SCALE,
    OTHER_LABEL_LOGIT,
    MapPostprocessing,
    check_threshold,
    map_to_logits,
)
from nnugen.anomaly.metrics import (
    average_precision,
    dice,
    dice_at_threshold,
    image_auroc,
    per_volume_auprc,
    per_volume_dice,
    pixel_auprc,
    volume_score,
)
from nnugen.anomaly.partial_noise import partial_noise_like
from nnugen.anomaly.simplex_noise import simplex_noise, simplex_noise_like
from nnugen.anomaly.synthetic_lesions import (
    LESION_FAMILIES,
    TEST_FAMILIES,
    TUNING_FAMILIES,
    LesionFamily,
    insert_lesions,
)
from nnugen.anomaly.threshold import (
    THRESHOLD_RULES,
    ThresholdRecord,
    best_dice_threshold,
    choose_threshold,
    fpr_threshold,
)

__all__ = [
    "HEALTHY_CASES_FILE",
    "LESION_FAMILIES",
    "LOGIT_SCALE",
    "NOISES",
    "OTHER_LABEL_LOGIT",
    "REDUCTIONS",
    "TEST_FAMILIES",
    "THRESHOLD_RULES",
    "TUNING_FAMILIES",
    "LesionFamily",
    "MapPostprocessing",
    "ThresholdRecord",
    "anatomy_condition",
    "average_precision",
    "best_dice_threshold",
    "body_mask",
    "check_strength",
    "check_threshold",
    "choose_erosion",
    "choose_threshold",
    "counterfactual",
    "dice",
    "dice_at_threshold",
    "ensemble_map",
    "erode_mask",
    "filtered_noise",
    "filtered_noise_like",
    "fpr_threshold",
    "healthy_cases_file",
    "image_auroc",
    "insert_lesions",
    "map_to_logits",
    "multi_strength_counterfactuals",
    "partial_noise_like",
    "per_volume_auprc",
    "per_volume_dice",
    "pixel_auprc",
    "postprocess",
    "read_case_list",
    "remove_small_components",
    "residual_map",
    "score_cases",
    "seed_averaged_residuals",
    "simplex_noise",
    "simplex_noise_like",
    "split_anatomy",
    "uncertainty",
    "unpadded_box",
    "volume_score",
]
