"""Installs nnugen: diffusion models for medical images on top of nnU-Net v2.

Besides the packages, installing puts one start-up file, ``nnugen_ext_trainer.pth``, into site-packages. Its one line
adds the folder of nnugen's trainer re-exports (``nnugen/nnunet_ext``) to the environment variable
``nnUNet_extTrainer`` that nnU-Net 2.8 reads, so the unmodified ``nnUNetv2_train`` / ``nnUNetv2_predict`` find
nnugen's trainers with no manual step. The line touches ``os.environ`` only; it imports neither nnugen nor torch.
"""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_FILE = "nnugen_ext_trainer.pth"


class BuildPyWithPth(build_py):
    """build_py that also places the start-up .pth file at the root of the wheel (regular and editable installs)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, PTH_FILE)
        os.makedirs(self.build_lib, exist_ok=True)
        shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_FILE), target)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH_FILE)]


class EditableWheelWithPth(editable_wheel):
    """``pip install -e .``: editable wheels take only their own path hooks from build_py, so the start-up file is
    added to the wheel's root here, next to setuptools' own ``__editable__`` files."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH_FILE),
                        os.path.join(installation_dir, PTH_FILE))


setup(
    name="nnugen",
    version="0.1.0",
    description="Diffusion segmentation, generation and anomaly segmentation inside nnU-Net v2",
    long_description=open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # every package under nnugen/ (found, so a folder without __init__.py is not half-listed), plus the two
    # top-level folders mapped into the nnugen namespace
    packages=[*find_packages(include=["nnugen", "nnugen.*", "nnugen_planner", "nnugen_planner.*"]),
              "nnugen.entrypoints", "nnugen.templates"],
    package_dir={"nnugen.entrypoints": "entrypoints", "nnugen.templates": "templates"},
    package_data={"nnugen.templates": ["*.yaml", "*.py.txt"]},
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "torch>=2.6",
        "monai>=1.5,<1.7",
        # imported by nnugen itself, not only through nnU-Net
        "numpy",
        "scipy",
        "scikit-learn",
        "batchgenerators>=0.25",
        "opensimplex>=0.4.5",
        "pyyaml",
        "matplotlib",
        "tqdm",
        "torchinfo",
        "SimpleITK",
        "imageio",
    ],
    extras_require={
        "test": ["pytest", "ruff", "nilearn", "pybids>=0.16", "hypothesis", "diffusers", "nvidia-physicsnemo>=2.2.2"],
        "bids": ["pybids>=0.16"],
        # spatially partitioned training (nnugen/networks/spatial_partition.py): PhysicsNeMo's ShardTensor
        "partition": ["nvidia-physicsnemo>=2.2.2"],
        "real": ["nilearn"],
    },
    entry_points={
        "console_scripts": [
            "nnugen_plan=nnugen.entrypoints.plan:main",
            "nnugen_check=nnugen.entrypoints.check:main",
            "nnugen_evaluate=nnugen.entrypoints.evaluate:main",
            "nnugen_train=nnugen.entrypoints.train:main",
            "nnugen_predict=nnugen.entrypoints.predict:main",
            "nnugen_sample=nnugen.entrypoints.sample:main",
            "nnugen_demo=nnugen.entrypoints.demo:main",
            "nnugen_convert_bids=nnugen.entrypoints.convert_bids:main",
        ],
    },
)
