"""``AnomalyThresholdHooks``: the anomaly trainer's final validation, which chooses the threshold.

The anomaly map of every validation case of the fold is computed with nnU-Net's own sliding window
(``nnUNetPredictor``, Gaussian weighting, the patch size) exactly as ``nnUNetv2_predict`` will compute it, then the
threshold by ``best_dice`` over the validation cases (lesion cases needed) or ``fpr`` over their healthy voxels (inside
the map's region, outside lesions). With ``anomaly.erode_search`` the maps are computed at every erosion of their
region 0..N from the same counterfactuals, and the erosion is chosen with the threshold by the validation Dice
(nnugen/anomaly/erosion_choice.py). The threshold (and the erosion) go into the model (``checkpoint_final.pth`` is
written again, atomically) and into ``threshold.json``; ``validation/`` gets the segmentations at that threshold,
nnU-Net's ``summary.json`` and ``anomaly_summary.json`` (pixel AUPRC pooled and per volume, Dice at the threshold,
image-level AUROC). Under DDP each rank computes the maps of its share of the cases and exports their
segmentations; rank 0 gathers the maps, chooses the threshold (sent to every rank's model) and writes the files, so
no rank waits in a collective for more than one share (NCCL's watchdog ends a rank that waits ten minutes).
``segmenter()`` and ``do_split`` are the anomaly trainer's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from nnugen.anomaly import ThresholdRecord, choose_erosion, choose_threshold, map_to_logits, score_cases
from nnugen.atomic_files import atomic_write_json
from nnugen.folders.model_folder import model_id as fold_model_id
from nnugen.models.compile_policy import predictor_compile_off
from nnugen.trainers.ddp import from_rank_zero, gather_on_rank_zero, rank_share
from nnugen.trainers.nnugen_generative_trainer import NnugenGenerativeTrainer

THRESHOLD_FILE = "threshold.json"
SUMMARY_FILE = "anomaly_summary.json"


class AnomalyThresholdHooks(NnugenGenerativeTrainer):
    def model_id(self) -> str:
        """Which model and fold ``threshold.json`` belongs to (folders/model_folder.py)."""
        return fold_model_id(self.__class__.__name__, self.plans_manager.plans_name, self.configuration_name,
                             self.fold)

    def validation_maps(self, keys: list[str], widest: int = 0) -> dict[str, tuple]:
        """{case: (map, label, healthy-voxel mask, properties)} in the preprocessed geometry, maps from nnU-Net's
        sliding window over the segmenter's ``map_view`` (the raw map that nnUNetv2_predict thresholds later). With
        ``widest`` > 0 each map is (widest + 1, *spatial), the map at every erosion of its region 0..widest from the
        same counterfactuals, each eroded per tile as in prediction (``erosion_search_view``)."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from nnugen.models.anomaly_views import packed_dataset_json

        segmenter = self.segmenter()
        segmenter.eval()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        view, dataset_json = segmenter.map_view(), self.dataset_json
        if widest:  # one result channel per erosion (nnU-Net's buffer has a channel per label)
            view, dataset_json = segmenter.erosion_search_view(widest), packed_dataset_json(dataset_json, widest + 1)
        with predictor_compile_off():  # the denoiser is compiled in place already (compile_policy.py)
            predictor.manual_initialization(view, self.plans_manager, self.configuration_manager, None, dataset_json,
                                            self.__class__.__name__, self.inference_allowed_mirroring_axes)
        dataset = self.dataset_class(self.preprocessed_dataset_folder, keys)
        cases = {}
        for key in dataset.identifiers:
            self.print_to_log_file(f"anomaly map of {key}")
            data, seg, _, properties = dataset.load_case(key)
            data = torch.from_numpy(np.ascontiguousarray(data[:]))
            maps = predictor.predict_sliding_window_return_logits(data).float().cpu().numpy()
            label = np.asarray(seg[:])[0]
            body = segmenter.body(data[None].to(self.device))
            healthy = label == 0  # -1 marks voxels outside nnU-Net's nonzero crop region
            if body is not None:
                healthy &= body[0, 0].cpu().numpy()
            cases[key] = (maps if widest else maps[1], label > 0, healthy, properties)
        return cases

    def erosion_search(self) -> int:
        """The widest erosion of the map's region the final validation tries (``anomaly.erode_search``, with the
        best_dice rule only); 0 = none tried, ``erode_region`` as set."""
        anomaly = self.settings.anomaly
        return anomaly.erode_search if anomaly.threshold_rule == "best_dice" else 0

    def choose_erosion(self, cases: dict, search: int) -> int:
        """The erosion 0..``search`` with the best validation Dice (erosion_choice.py); ``erode_region`` when no
        validation case has a lesion (the threshold then falls back to the fpr rule, which has no Dice to go by)."""
        labels = [c[1] for c in cases.values()]
        if not any(label.any() for label in labels):
            return self.settings.anomaly.erode_region
        voxels, dices = choose_erosion([c[0][:search + 1] for c in cases.values()], labels)
        self.print_to_log_file(f"erosion of the map's region chosen on validation: {voxels} voxels (best Dice for "
                               f"0..{search}: {', '.join(f'{d:.3f}' for d in dices)})")
        return voxels

    @staticmethod
    def with_erosion(cases: dict, voxels: int) -> dict:
        """The validation cases with the map at one erosion (of those ``validation_maps`` computed)."""
        return {key: (maps[voxels], *rest) for key, (maps, *rest) in cases.items()}

    def choose_threshold(self, cases: dict) -> ThresholdRecord:
        anomaly = self.settings.anomaly
        record = choose_threshold([c[0] for c in cases.values()], [c[1] for c in cases.values()],
                                  [c[2] for c in cases.values()], anomaly.threshold_rule, anomaly.target_fpr,
                                  self.model_id())
        if record.rule != anomaly.threshold_rule:
            self.print_to_log_file(f"no validation case of fold {self.fold} has a lesion: the threshold is chosen by "
                                   f"the fpr rule (target_fpr {anomaly.target_fpr}) instead of best_dice")
        return record

    def summary(self, cases: dict, record: ThresholdRecord) -> dict:
        """The threshold record and ``score_cases`` of the validation maps (small components removed as in
        prediction)."""
        scores = score_cases({k: c[0] for k, c in cases.items()}, {k: c[1] for k, c in cases.items()},
                             record.threshold, self.settings.anomaly.min_component_voxels)
        return {"model": record.model, "threshold": record.threshold, "rule": record.rule,
                "rule_value": record.value, **scores}

    def export_segmentations(self, cases: dict, threshold: float, folder: Path, save_probabilities: bool) -> None:
        """Segmentations at the threshold in the original geometry."""
        from nnunetv2.inference.export_prediction import export_prediction_from_logits

        segmenter = self.segmenter()
        for key, (anomaly, _, _, properties) in cases.items():
            kept = segmenter.postprocessing.without_small_components(torch.from_numpy(anomaly)[None, None], threshold)
            logits = map_to_logits(kept, threshold, segmenter.logit_scale, segmenter.num_classes)[0]
            export_prediction_from_logits(logits, properties, self.configuration_manager, self.plans_manager,
                                          self.dataset_json, str(folder / key), save_probabilities)

    def evaluate_segmentations(self, folder: Path, number_of_cases: int) -> None:
        """nnU-Net's summary.json (Dice per label) of the exported segmentations."""
        from nnunetv2.configuration import default_num_processes
        from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder

        metrics = compute_metrics_on_folder(
            os.path.join(self.preprocessed_dataset_folder_base, "gt_segmentations"), str(folder),
            str(folder / "summary.json"), self.plans_manager.image_reader_writer_class(),
            self.dataset_json["file_ending"], self.label_manager.foreground_labels, self.label_manager.ignore_label,
            num_processes=max(1, min(default_num_processes, number_of_cases)), chill=True)
        self.print_to_log_file("Validation Dice at the threshold (nnU-Net summary.json):",
                               metrics["foreground_mean"]["Dice"])
        from nnugen.evaluation.surface_distances import write_validation_distances

        write_validation_distances(self)  # HD95 / NSD beside summary.json, as every nnugen validation
        from nnugen.folders.portable_paths import make_validation_portable

        make_validation_portable(self.output_folder)  # export copies summary.json (portable_paths.py)

    def perform_actual_validation(self, save_probabilities: bool = False):
        _, val_keys = self.do_split()
        keys = list(val_keys)
        mine = rank_share(keys)  # every rank computes and exports a share: none waits on rank 0 computing them all
        search = self.erosion_search()
        self.segmenter().set_erosion(-1)  # the plans' erosion until one is chosen below
        widest = max(search, self.settings.anomaly.erode_region) if search else 0
        share = self.validation_maps(mine, widest) if mine else {}
        cases = gather_on_rank_zero(share, keys)  # all maps on rank 0, None elsewhere

        def choose() -> tuple[ThresholdRecord, int | None]:
            voxels = self.choose_erosion(cases, search) if search else None
            return self.choose_threshold(cases if voxels is None else self.with_erosion(cases, voxels)), voxels

        record, voxels = from_rank_zero(choose)
        if voxels is not None:
            self.segmenter().set_erosion(voxels)
            share = self.with_erosion(share, voxels)
            cases = None if cases is None else self.with_erosion(cases, voxels)
        self.segmenter().set_threshold(record.threshold)  # on every rank, so each rank's model is the final one
        folder = Path(self.output_folder)
        validation = folder / "validation"
        if self.local_rank == 0:
            self.current_epoch -= 1  # as on_train_end: the checkpoint stores current_epoch + 1
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_final.pth"))
            self.current_epoch += 1
            record.save(folder / THRESHOLD_FILE)
            self.print_to_log_file(f"anomaly threshold {record.threshold:.6g} ({record.rule}: {record.value:.4g}) on "
                                   f"{len(cases)} validation cases, written to checkpoint_final.pth and "
                                   f"{THRESHOLD_FILE}")
        validation.mkdir(parents=True, exist_ok=True)
        self.export_segmentations(share, record.threshold, validation, save_probabilities)
        if self.is_ddp:
            dist.barrier()  # every share exported before rank 0 scores the folder
        if self.local_rank != 0:
            return
        summary = {**self.summary(cases, record), **({"erode_region": voxels} if voxels is not None else {})}
        atomic_write_json(validation / SUMMARY_FILE, summary)
        self.print_to_log_file(f"pixel AUPRC {summary['pixel_auprc']}, Dice at the threshold "
                               f"{summary['dice_at_threshold']}, image AUROC {summary['image_auroc']}")
        self.evaluate_segmentations(validation, len(cases))
