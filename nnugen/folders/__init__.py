"""Where nnugen's files are: a dataset's folders (``dataset_folders``), nnU-Net's model folders (``model_folder``) and
the checkpoints in them (``checkpoint_files``). Below the trainers, the predictor and the CLIs, which all read model
folders through it; torch is imported only where a checkpoint is read."""
