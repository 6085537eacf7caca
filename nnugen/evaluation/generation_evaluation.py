"""A folder of synthetic images against a folder of real ones (``nnugen_evaluate --generated SYN --real imagesTr``):
MS-SSIM diversity of each set (diversity.py), Fréchet distance and Gaussian MMD on features of the dataset's own
trained nnU-Net encoder when one is given (feature_distances.py, encoder_features.py), and PSNR / SSIM of
reconstructions against the real case of the same name (reconstruction.py).

Files follow nnU-Net's raw naming: case ``CASE`` is ``CASE_0000<ending>`` ... one file per channel of dataset.json's
``channel_names``, read with nnU-Net's reader. ``nnugen_sample``'s plain output (``case_0000_0000<ending>`` images
beside ``case_0000<ending>`` label maps) and its ``--as-dataset`` output (``imagesTr/``) both work: a file whose name
(without ending) is itself a case of the folder is that case's label map, not an image.

Conventions: both sets are centre-cropped to the smallest shape among all their images (MS-SSIM and the features
need one shape); the intensity range of MS-SSIM, PSNR and SSIM is the real set's ``max - min``. Features are computed
on the images as the files hold them (nnU-Net's normalisation and axis order, ``transpose_forward``, applied; not
resampled to the plan's spacing): give images at the plan's spacing, as ``nnugen_sample`` writes them. Everything is
read, checked (shape, geometry, NaN) and computed before anything is written."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnugen.evaluation.case_checks import check_image_files, check_same_geometry

Features = Callable[[np.ndarray], np.ndarray]
"""``features(images)``: ``(N, C, *spatial)`` images in the files' intensities -> ``(N, F)`` vectors."""


def find_images(folder: Path, file_ending: str, channels: int) -> dict[str, list[Path]]:
    """``{case: [channel files]}`` of nnU-Net's ``CASE_XXXX<ending>`` files in ``folder`` (or its ``imagesTr``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist; pass an existing folder")
    if (folder / "imagesTr").is_dir() and not any(p.name.endswith(file_ending) for p in folder.iterdir()):
        folder = folder / "imagesTr"  # a raw dataset, e.g. nnugen_sample --as-dataset
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
    stems = {p.name[: -len(file_ending)]: p for p in folder.iterdir()
             if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith(".")}

    def parse(names) -> dict[str, dict[int, Path]]:
        found: dict[str, dict[int, Path]] = {}
        for stem in names:
            if match := pattern.match(stem):
                found.setdefault(match["case"], {})[int(match["channel"])] = stems[stem]
        return found

    # 'case_0000<ending>' beside 'case_0000_0000<ending>' is the label map of case_0000, not channel 0 of 'case'
    found = parse(stem for stem in stems if stem not in parse(stems))
    if not found:
        raise ValueError(f"no images CASE_0000{file_ending} in {folder}; check the folder and the file ending")
    for case, files in found.items():
        if set(files) != set(range(channels)):
            raise ValueError(f"{case} in {folder} has channel file(s) {', '.join(f'_{c:04d}' for c in sorted(files))}"
                             f", dataset.json names {channels} channel(s) (_0000 to _{channels - 1:04d}); write "
                             "every channel, numbered from _0000")
    return {case: [found[case][c] for c in range(channels)] for case in sorted(found)}


def read_cases(cases: dict[str, list[Path]], reader_writer, what: str) -> tuple[list[np.ndarray], list[dict]]:
    """Arrays ``(C, *spatial)`` (float32) and nnU-Net reader properties, checked for NaN, in case order."""
    arrays, properties = [], []
    for case, files in cases.items():
        check_image_files(files, f"{what} case {case}:")
        array, props = reader_writer.read_images([str(f) for f in files])
        arrays.append(array.astype(np.float32))
        properties.append(props)
    return arrays, properties


def centre_crop(arrays: list[np.ndarray]) -> np.ndarray:
    """``(N, C, *common)``: every ``(C, *spatial)`` array cropped, centred, to the smallest shape among them."""
    shape = np.min([a.shape for a in arrays], axis=0)
    crops = []
    for array in arrays:
        start = [(n - s) // 2 for n, s in zip(array.shape, shape)]
        crops.append(array[tuple(slice(b, b + s) for b, s in zip(start, shape))])
    return np.stack(crops)


def _spatial(images: np.ndarray) -> np.ndarray:
    """``(N, C, 1, y, x)`` (a 2D image as nnU-Net reads it) -> ``(N, C, y, x)``; 3D unchanged."""
    return images[:, :, 0] if images.ndim == 5 and images.shape[2] == 1 else images


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def reconstruction_scores(real: dict[str, np.ndarray], real_properties: dict[str, dict],
                          reconstructions: dict[str, list[Path]], reader_writer, data_range: float) -> dict:
    """PSNR (dB) and SSIM of each reconstruction against the real case of the same name, and their means (PSNR of a
    perfect reconstruction is infinite: ``null``, left out of the mean and counted in ``identical``)."""
    import torch

    from nnugen.evaluation.reconstruction import psnr, ssim

    missing = [case for case in reconstructions if case not in real]
    if missing:
        raise ValueError(f"reconstruction {missing[0]} has no real case of that name; reconstruct cases of the real "
                         "folder, named as they are")
    per_case = []
    for case, files in reconstructions.items():
        check_image_files(files, f"reconstruction case {case}:")
        array, properties = reader_writer.read_images([str(f) for f in files])
        if array.shape != real[case].shape:
            raise ValueError(f"{case}: reconstruction shape {array.shape} differs from the real image's "
                             f"{real[case].shape}; reconstruct the whole image")
        check_same_geometry(real_properties[case], properties, case, "reconstruction")
        x = torch.from_numpy(_spatial(array[None].astype(np.float32)))
        y = torch.from_numpy(_spatial(real[case][None]))
        per_case.append({"case": case, "psnr_db": _finite_or_none(float(psnr(x, y, data_range)[0])),
                         "ssim": float(ssim(x, y, data_range)[0])})
    finite = [e["psnr_db"] for e in per_case if e["psnr_db"] is not None]
    return {"cases": len(per_case), "psnr_db_mean": float(np.mean(finite)) if finite else None,
            "identical": len(per_case) - len(finite), "ssim_mean": float(np.mean([e["ssim"] for e in per_case])),
            "per_case": per_case}


def evaluate_generation(generated_folder: Path, real_folder: Path, dataset_json: dict, file_ending: str | None = None,
                        features: Features | None = None, features_note: str = "",
                        reconstruction_folder: Path | None = None, memo: dict | None = None) -> dict:
    """The ``generation_summary.json`` content; reads and checks everything, writes nothing. ``memo``, one dict shared
    by the calls of one ``nnugen_evaluate --generated A B ...``, keeps the real set's MS-SSIM for the next call."""
    import torch
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    from nnugen.evaluation.diversity import mean_pairwise_ms_ssim
    from nnugen.evaluation.feature_distances import frechet_distance, gaussian_mmd

    file_ending = file_ending or dataset_json.get("file_ending")
    if not file_ending or "channel_names" not in dataset_json:
        raise ValueError("dataset.json needs 'channel_names' and 'file_ending' (or pass -fe); pass the dataset's "
                         "dataset.json with -djfile")
    channels = len(dataset_json["channel_names"])
    generated_cases = find_images(Path(generated_folder), file_ending, channels)
    real_cases = find_images(Path(real_folder), file_ending, channels)
    for what, cases in (("generated", generated_cases), ("real", real_cases)):
        if len(cases) < 2:
            raise ValueError(f"the {what} folder holds {len(cases)} image(s); diversity and feature distances need at "
                             "least 2 per set")
    reader_writer = determine_reader_writer_from_dataset_json({**dataset_json, "file_ending": file_ending},
                                                              str(next(iter(real_cases.values()))[0]),
                                                              verbose=False)()
    generated, _ = read_cases(generated_cases, reader_writer, "generated")
    real, real_properties = read_cases(real_cases, reader_writer, "real")
    dimensions = {a.ndim for a in generated + real}
    if len(dimensions) != 1:
        raise ValueError("generated and real images differ in their number of axes; compare images of one kind")
    everything = centre_crop(generated + real)
    synthetic_set, real_set = everything[:len(generated)], everything[len(generated):]
    data_range = float(np.max([a.max() for a in real]) - np.min([a.min() for a in real])) or 1.0
    memo = {} if memo is None else memo
    real_key = ("ms_ssim", str(real_folder), tuple(everything.shape[1:]))
    if real_key not in memo:
        memo[real_key] = mean_pairwise_ms_ssim(torch.from_numpy(_spatial(real_set)), data_range)
    result = {
        "generated_folder": str(generated_folder), "real_folder": str(real_folder), "file_ending": file_ending,
        "cases": {"generated": len(generated), "real": len(real)},
        "crop_shape": [int(n) for n in everything.shape[2:]], "data_range": data_range,
        "conventions": {
            "crop": "both sets centre-cropped to the smallest shape among all images",
            "ms_ssim": "mean MS-SSIM over all pairs of a set (Wang et al. 2003, MONAI); lower = more diverse",
            "frechet": "Fréchet distance of Gaussians fitted to the encoder features (Heusel et al. 2017; as MONAI's)",
            "gaussian_mmd": "biased MMD^2, Gaussian kernel, median-distance bandwidth (Gretton et al. 2012)",
            "data_range": "real set's max - min, for MS-SSIM, PSNR and SSIM",
        },
        "ms_ssim": {"generated": mean_pairwise_ms_ssim(torch.from_numpy(_spatial(synthetic_set)), data_range),
                    "real": memo[real_key]},
        "features": None,
        "features_note": features_note,
        "reconstructions": None,
    }
    if features is not None:
        vectors = torch.from_numpy(np.asarray(features(everything), dtype=np.float64))
        fake, true = vectors[:len(generated)], vectors[len(generated):]
        result["features"] = {"dimensions": int(vectors.shape[1]),
                              "frechet": frechet_distance(true, fake), "gaussian_mmd": gaussian_mmd(true, fake)}
    if reconstruction_folder is not None:
        reconstructions = find_images(Path(reconstruction_folder), file_ending, channels)
        result["reconstructions"] = reconstruction_scores(dict(zip(real_cases, real)),
                                                          dict(zip(real_cases, real_properties)), reconstructions,
                                                          reader_writer, data_range)
    return result


def encoder_features(encoder, configuration: str) -> Features:
    """Features of a trained nnU-Net's encoder (an ``EncoderFeatures``, encoder_features.py): each image normalised
    as nnU-Net's preprocessing does and put in its axis order (``transpose_forward``) first."""
    import json

    import torch

    from nnugen.evaluation.encoder_features import nnunet_normalised

    plans = json.loads((Path(encoder.fold_folder).parent / "plans.json").read_text(encoding="utf-8"))
    forward = [int(i) for i in plans["transpose_forward"]]

    def features(images: np.ndarray) -> np.ndarray:
        normalised = np.stack([nnunet_normalised(image, plans, configuration) for image in images])
        if normalised.ndim == 5:
            normalised = normalised.transpose([0, 1, *(i + 2 for i in forward)])
        if configuration.startswith("2d"):
            normalised = _spatial(normalised)
        return encoder.features(torch.from_numpy(np.ascontiguousarray(normalised))).numpy()

    return features


def generation_table(result: dict) -> str:
    """A few lines: cases, MS-SSIM of both sets, Fréchet / MMD (or why not), reconstruction PSNR / SSIM."""

    def number(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    cases = result["cases"]
    lines = [f"{cases['generated']} generated vs {cases['real']} real image(s), cropped to "
             f"{'x'.join(map(str, result['crop_shape']))}",
             f"{'metric':<34} {'value':>10}",
             f"{'MS-SSIM among generated':<34} {number(result['ms_ssim']['generated']):>10}",
             f"{'MS-SSIM among real':<34} {number(result['ms_ssim']['real']):>10}"]
    if result["features"] is not None:
        lines += [f"{'Frechet distance (encoder)':<34} {number(result['features']['frechet']):>10}",
                  f"{'Gaussian MMD^2 (encoder)':<34} {number(result['features']['gaussian_mmd'], 6):>10}"]
    else:
        lines.append(f"no Frechet distance / MMD: {result['features_note']}")
    if result["reconstructions"] is not None:
        rec = result["reconstructions"]
        lines += [f"{'reconstruction PSNR dB, mean':<34} {number(rec['psnr_db_mean'], 2):>10}",
                  f"{'reconstruction SSIM, mean':<34} {number(rec['ssim_mean']):>10}"]
    return "\n".join(lines)
