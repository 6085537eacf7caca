"""Thin re-exports of nnugen's trainers for nnU-Net's trainer lookup. Installing nnugen adds this folder to
``nnUNet_extTrainer`` (see setup.py); nnU-Net imports every module here by its file name, so each module must
import cleanly and only re-export."""
