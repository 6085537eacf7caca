"""Finding and loading a trained generator for ``nnugen_sample``: its model folder (nnugen/folders/model_folder.py),
the task table's row for it (nnugen/tasks.py), the checkpoint in nnU-Net's format, and the network built by the
same builder nnU-Net's predictor reaches through the trainer (nnugen/models/model_builders.py). nnU-Net's predictor
itself is not used: generation has no input images to preprocess, tile or export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnugen import PLANS_IDENTIFIER
from nnugen.config import TaskSettings, configuration_name
from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import SAMPLING_TASKS, Task, task_named, task_settings


@dataclass(frozen=True)
class ModelFiles:
    """The files of one trained fold, resolved and checked to exist; plans and dataset.json already read."""

    folder: ModelFolder
    fold: str
    checkpoint: Path
    task: Task
    plans: dict
    dataset_json: dict

    @property
    def fold_folder(self) -> Path:
        return self.folder.fold(self.fold)

    @property
    def trainer_name(self) -> str:
        return self.task.trainer

    @property
    def configuration(self) -> str:
        return self.folder.configuration

    @property
    def model_folder(self) -> Path:
        return self.folder.path

    @property
    def dataset_name(self) -> str:
        return self.folder.dataset_name


def find_model_files(dataset: str, configuration: str, task: str, fold: str, checkpoint: str,
                     plans: str = PLANS_IDENTIFIER) -> ModelFiles:
    """Resolve ``nnUNet_results/DatasetX/<Trainer>__<plans>__<CONFIG>/fold_F/<checkpoint>`` and read the model
    folder's plans.json and dataset.json; one-line ValueErrors naming the missing path and what to do."""
    row = task_named(task, SAMPLING_TASKS)
    configuration = configuration_name(configuration)
    if fold != "all" and not str(fold).isdigit():
        raise ValueError(f"-f {fold}: a fold is an integer (0-4 for nnU-Net's 5 folds) or 'all'")
    train_hint = f"train it first: nnugen_train {dataset} {fold} {configuration} --task {task}"
    folder = ModelFolder.of(dataset, row.trainer, configuration, plans).require(train_hint)
    path = folder.checkpoint(fold, checkpoint)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; {train_hint} (or pick another -f / -chk)")
    plans_json = folder.plans()
    if configuration not in plans_json.get("configurations", {}):
        raise ValueError(f"configuration '{configuration}' is not in {folder.path / 'plans.json'}")
    return ModelFiles(folder, str(fold), path, row, plans_json, folder.dataset_json())


def generator_settings(files: ModelFiles) -> TaskSettings:
    """The generator's settings (mode, sampler, ...) from the model folder's plans, the task row's changes applied."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = PlansManager(files.plans).get_configuration(files.configuration).configuration
    row = files.task
    return task_settings(configuration, row.section, row.settings_changes, row.trainer, files.configuration)


def load_generator(files: ModelFiles, device):
    """The trained ``ImageGenerator`` in eval mode on ``device``, with the checkpoint's weights (EMA included).
    ValueError when the checkpoint was written by another trainer or does not fit the plans' network."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.config import section_of
    from nnugen.folders.checkpoint_files import load_nnunet_checkpoint
    from nnugen.models.model_builders import ModelSpec, build_model

    # nnU-Net's checkpoint format, loaded weights only (NumPy scalars allowed) onto the CPU
    checkpoint = load_nnunet_checkpoint(str(files.checkpoint), device=torch.device("cpu"))
    found = checkpoint.get("trainer_name")
    if found != files.trainer_name:
        raise ValueError(f"{files.checkpoint} was written by {found}, not {files.trainer_name}: it is not a model "
                         f"nnugen_sample can sample from with this --task")
    plans_manager = PlansManager(files.plans)
    configuration_manager = plans_manager.get_configuration(files.configuration)
    label_manager = plans_manager.get_label_manager(files.dataset_json)
    section = section_of(configuration_manager.configuration, files.configuration)
    spec = ModelSpec(generator_settings(files), section,
                     determine_num_input_channels(plans_manager, configuration_manager, files.dataset_json),
                     label_manager.num_segmentation_heads, tuple(configuration_manager.patch_size))
    network = build_model(files.task.section, spec)
    expected = network.state_dict().keys()
    weights = {k[7:] if k not in expected and k.startswith("module.") else k: v
               for k, v in checkpoint["network_weights"].items()}
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"the weights in {files.checkpoint} do not fit the network its plans.json describes "
                         f"({first}); was plans.json changed after training?") from None
    if files.task.section == "ldm":
        network = _latent_generator(network, files, section.task("autoencoder").autoencoder.decode_chunks, checkpoint)
    return network.to(device).eval()


def _latent_generator(latent_model, files: ModelFiles, decode_chunks, checkpoint: dict | None = None):
    """Wrap the latent denoiser with the frozen autoencoder (weights only) and the scale found in training: those the
    checkpoint carries, else (checkpoints of older versions) those ``latent.json`` names (models/latent_files.py)."""
    from nnugen.models.autoencoder_files import CHECKPOINT_KEY, autoencoder_from_entry, load_autoencoder
    from nnugen.models.latent_files import SCALE_KEY, TRAIN_AGAIN, read_latent_record
    from nnugen.models.latent_generator import LatentGenerator

    if checkpoint is not None and CHECKPOINT_KEY in checkpoint:
        autoencoder, _ = autoencoder_from_entry(checkpoint[CHECKPOINT_KEY], str(files.checkpoint), TRAIN_AGAIN)
        scale = checkpoint.get(SCALE_KEY)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"{files.checkpoint}: {SCALE_KEY} {scale!r} is not a scale factor > 0; {TRAIN_AGAIN}")
        return LatentGenerator(latent_model, autoencoder, float(scale), decode_chunks)
    record = read_latent_record(files.fold_folder)
    autoencoder, _ = load_autoencoder(record.autoencoder_folder)
    return LatentGenerator(latent_model, autoencoder, record.scale_factor, decode_chunks)
