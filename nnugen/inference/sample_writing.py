"""Writing generated cases as files: where they sit in the world, how their arrays map to files, and the layout.

Samples come out in nnU-Net's preprocessed layout: the plan's ``spacing``, axes permuted by ``transpose_forward``
(2D configurations: one slice along the first permuted axis). Files are written in the dataset's own axis order
(``transpose_backward``), with the plan's spacing in that order, and the origin and direction of a reference case of
the dataset: a raw training image when ``nnUNet_raw`` has the dataset, else the geometry nnU-Net stored for a
preprocessed case (``properties["sitk_stuff"]`` in ``nnUNet_preprocessed/DatasetX/<data_identifier>/CASE.pkl``),
else the identity direction at the origin 0. 2D datasets (SimpleITKIO reads 2D files as ``(1, y, x)``) are written
as 2D images, as nnU-Net writes their predictions. Reading a written file with nnU-Net's SimpleITKIO and applying
``transpose_forward`` gives the sampled array and the plan's spacing back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIMPLEITK_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl")
"""File endings nnugen_sample writes (with SimpleITK, as nnU-Net's SimpleITKIO does)."""


@dataclass(frozen=True)
class ReferenceGeometry:
    """Origin and direction (SimpleITK order) of the dataset's images; ``dimension`` 2 for 2D datasets."""

    origin: tuple[float, ...]
    direction: tuple[float, ...]
    dimension: int
    source: str
    """Where the geometry came from, said in the log and in sampling.json."""


def reference_geometry(dataset: str, plans: dict) -> ReferenceGeometry:
    """The first of: a raw training image's header, a preprocessed case's stored geometry, identity at 0."""
    return _from_raw(dataset) or _from_preprocessed(dataset) or _identity(plans)


def _from_raw(dataset: str) -> ReferenceGeometry | None:
    import SimpleITK as sitk
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnugen.folders.dataset_folders import raw_folder

    folder = raw_folder(dataset)
    if folder is None or not (folder / "dataset.json").is_file():
        return None
    try:
        cases = get_filenames_of_train_images_and_targets(str(folder))
        case = sorted(cases)[0]
        reader = sitk.ImageFileReader()
        reader.SetFileName(cases[case]["images"][0])
        reader.ReadImageInformation()  # the header only
    except (IndexError, KeyError, OSError, RuntimeError):
        return None
    if reader.GetDimension() not in (2, 3):  # e.g. 4D files holding all channels: no plain 2D / 3D geometry
        return None
    return ReferenceGeometry(reader.GetOrigin(), reader.GetDirection(), reader.GetDimension(),
                             f"raw training image {cases[case]['images'][0]}")


def _from_preprocessed(dataset: str) -> ReferenceGeometry | None:
    root = os.environ.get("nnUNet_preprocessed")
    if not root:
        return None
    found = sorted((Path(root) / dataset).glob("*/*.pkl"))
    if not found:
        return None
    from batchgenerators.utilities.file_and_folder_operations import load_pickle

    # nnU-Net's own properties file of a case it preprocessed (nnU-Net reads it the same way)
    properties = load_pickle(str(found[0]))
    geometry = properties.get("sitk_stuff") if isinstance(properties, dict) else None
    if not geometry:
        return None
    return ReferenceGeometry(tuple(geometry["origin"]), tuple(geometry["direction"]), len(geometry["spacing"]),
                             f"preprocessed case {found[0]} (sitk_stuff)")


def _identity(plans: dict) -> ReferenceGeometry:
    dimension = 3 if "3d_fullres" in plans.get("configurations", {}) else 2  # nnU-Net plans 2D datasets as 2d only
    return ReferenceGeometry((0.0,) * dimension, tuple(np.eye(dimension).flatten().tolist()), dimension,
                             "none found (no raw or preprocessed case): identity direction at origin 0")


@dataclass(frozen=True)
class SampleGeometry:
    """The sampled array's layout (``shape``: preprocessed order, 2 or 3 axes) and the files' geometry."""

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    """Voxel size in the preprocessed (transposed) order of 3 axes; for 2D configurations the first entry is the
    slice thickness."""
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    reference: ReferenceGeometry

    @classmethod
    def from_plans(cls, plans: dict, configuration: dict, shape: tuple[int, ...],
                   reference: ReferenceGeometry) -> SampleGeometry:
        spacing = [float(s) for s in configuration["spacing"]]
        if len(spacing) == 2:
            spacing = [float(plans["original_median_spacing_after_transp"][0]), *spacing]
        return cls(tuple(shape), tuple(spacing), tuple(plans["transpose_forward"]),
                   tuple(plans["transpose_backward"]), reference)

    @property
    def file_shape(self) -> tuple[int, ...]:
        """The array shape of a written file as SimpleITK reads it ((z, y, x), or (y, x) for 2D files)."""
        return self.file_array(np.zeros(self.shape, dtype=np.uint8)).shape[3 - self.reference.dimension:]

    def file_array(self, volume: np.ndarray) -> np.ndarray:
        """(*shape) in preprocessed order -> (z, y, x) in the dataset's axis order ((1, y, x) for 2D files)."""
        if volume.shape != self.shape:
            raise ValueError(f"expected a volume of shape {self.shape}, got {volume.shape}")
        volume = volume[None] if volume.ndim == 2 else volume
        return np.ascontiguousarray(volume.transpose(self.transpose_backward))

    def model_array(self, array: np.ndarray) -> np.ndarray:
        """A file's array as SimpleITK reads it -> (*shape) in preprocessed order; ValueError if it does not fit."""
        volume = array[None] if array.ndim == 2 else array
        volume = volume.transpose(self.transpose_forward) if volume.ndim == 3 else volume
        if len(self.shape) == 2 and volume.ndim == 3 and volume.shape[0] == 1:
            volume = volume[0]
        if volume.shape != self.shape:
            raise ValueError(f"array shape {array.shape}, expected {self.file_shape}")
        return volume

    def properties(self) -> dict:
        """nnU-Net's SimpleITKIO properties (``sitk_stuff``) of the written files."""
        spacing = [self.spacing[i] for i in self.transpose_backward][3 - self.reference.dimension:]
        return {"sitk_stuff": {"spacing": tuple(reversed(spacing)), "origin": self.reference.origin,
                               "direction": self.reference.direction}}

    def write_image(self, volume: np.ndarray, path: Path, file_ending: str) -> None:
        """A float32 image (one channel, preprocessed order) written atomically in the dataset's geometry."""
        from nnugen.inference.image_writing import write_float_map

        write_float_map(self.file_array(volume.astype(np.float32)), path, self.properties(), file_ending)

    def write_label(self, volume: np.ndarray, path: Path, file_ending: str) -> None:
        """An integer label map (preprocessed order) written atomically with nnU-Net's SimpleITKIO.write_seg."""
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

        from nnugen.inference.image_writing import write_segmentation

        write_segmentation(SimpleITKIO(), self.file_array(volume), path, self.properties(), file_ending)

    def read_label(self, path: Path) -> np.ndarray:
        """A label map file -> (*shape) int array; ValueError naming the file and the shape expected."""
        import SimpleITK as sitk

        try:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError:
            raise ValueError(f"{path} does not read as an image; check the file") from None
        try:
            volume = self.model_array(array)
        except ValueError as error:
            raise ValueError(f"{path}: {error} (array order) for this model and --size; give label maps in that "
                             "shape, e.g. labels written by nnugen_sample") from None
        if not np.array_equal(volume, np.round(volume)):
            raise ValueError(f"{path} holds non-integer values; a label map holds the dataset's label values")
        return volume.astype(np.int64)


def output_layout(folder: Path, as_dataset: str | None) -> tuple[Path | None, Path, Path]:
    """(raw dataset folder or None, image folder, label folder) of an nnugen_sample output folder."""
    if not as_dataset:
        return None, folder, folder
    return folder / as_dataset, folder / as_dataset / "imagesTr", folder / as_dataset / "labelsTr"


class SampleWriter:
    """The output layout. Plain: ``OUT/case_0000_0000<ending>`` per image channel (nnU-Net's naming) and
    ``OUT/case_0000<ending>`` for the label map. ``as_dataset``: an nnU-Net raw dataset ``OUT/DatasetNNN_Name`` with
    imagesTr, labelsTr and a dataset.json written last (so an interrupted run leaves no dataset nnU-Net accepts).
    Either way ``OUT/previews/case_0000.png`` (+ .gif in 3D) and ``OUT/sampling.json``."""

    def __init__(self, folder: Path, dataset_json: dict, geometry: SampleGeometry, intensity,
                 as_dataset: str | None = None):
        self.folder, self.dataset_json, self.geometry, self.intensity = folder, dataset_json, geometry, intensity
        self.dataset_folder, self.images, self.labels = output_layout(folder, as_dataset)
        self.file_ending = dataset_json["file_ending"]

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete what killed runs left half-written in the output folders (``atomic_files.stale_temporaries``):
        nnU-Net's ``verify_dataset_integrity`` fails on a leftover file in imagesTr. Returns the files removed."""
        from nnugen.atomic_files import remove_stale_temporaries

        folders = {self.folder, self.folder / "previews", self.images, self.labels}
        return remove_stale_temporaries(*sorted(folders | ({self.dataset_folder} if self.dataset_folder else set())))

    def write_metadata(self, metadata: dict, name: str = "sampling.json") -> Path:
        from nnugen.atomic_files import atomic_write_json

        for folder in (self.folder, self.images, self.labels, self.folder / "previews"):
            folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / name, metadata)
        return self.folder / name

    def write_case(self, case: str, sample, image_channels: int, label_values: tuple[int, ...]) -> list[Path]:
        """``sample`` (C_image (+ K label one-hot), *shape) in [-1, 1] -> the image channels in the dataset's
        original units, the label map (argmax of the one-hot channels) when there is one, and the preview."""
        from nnugen.evaluation.previews import write_preview

        if not bool(sample.isfinite().all()):
            raise ValueError(f"{case}: the sample holds NaN or Inf values; nothing written for it (is the checkpoint "
                             "broken? try checkpoint_best.pth or another --sampler)")
        image = self.intensity.to_original(self.intensity.to_preprocessed(sample[None, :image_channels]))[0].numpy()
        if not np.isfinite(image).all():
            raise ValueError(f"{case}: the image is not finite in original units; check the plans' intensity map")
        written = []
        for c in range(image_channels):
            path = self.images / f"{case}_{c:04d}{self.file_ending}"
            self.geometry.write_image(image[c], path, self.file_ending)
            written.append(path)
        if sample.shape[0] > image_channels:
            label = np.asarray(label_values)[sample[image_channels:].argmax(0).numpy()]
            path = self.labels / f"{case}{self.file_ending}"
            self.geometry.write_label(label, path, self.file_ending)
            written.append(path)
        return written + write_preview(sample, image_channels, self.folder / "previews" / f"{case}.png")

    def case_complete(self, case: str, image_channels: int) -> bool:
        """Whether all of a case's files are there and read back (``output_complete``, as nnugen_predict's
        ``--continue_prediction`` asks): its image channels and its preview, which ``write_case`` writes last (after
        the label map), each atomically."""
        from nnugen.inference.image_writing import output_complete

        previews = [self.folder / "previews" / f"{case}.png"]
        if len(self.geometry.shape) == 3:
            previews.append(previews[0].with_suffix(".gif"))
        images = [self.images / f"{case}_{c:04d}{self.file_ending}" for c in range(image_channels)]
        return all(output_complete(path) for path in [*images, *previews])

    def finish(self, cases: list[str]) -> list[Path]:
        """dataset.json of the raw dataset (channel names and labels of the model's dataset), when writing one, once
        the label maps of all ``cases`` are there: a run split into parts writes it in the part that ends last."""
        if self.dataset_folder is None:
            return []
        from nnugen.inference.image_writing import output_complete

        if not all(output_complete(self.labels / f"{case}{self.file_ending}") for case in cases):
            return []
        from nnugen.folders.dataset_json import write_dataset_json

        # another part of this run may have written it already: the same bytes are left as they are
        return [write_dataset_json(self.dataset_folder, self.dataset_json["channel_names"], self.dataset_json["labels"],
                                   len(cases), self.file_ending, dataset_name=self.dataset_folder.name.split("_", 1)[1],
                                   description="synthetic cases written by nnugen_sample (see ../sampling*.json)",
                                   license="as the model's training data", converted_by="nnugen_sample")]
