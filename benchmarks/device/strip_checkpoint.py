"""Drop the optimiser state from an nnU-Net checkpoint (inference needs the weights and nnugen's extra state)."""
import sys

import torch

from nnugen.folders.checkpoint_files import load_nnunet_checkpoint

checkpoint = load_nnunet_checkpoint(sys.argv[1], torch.device("cpu"))
for key in ("optimizer_state", "grad_scaler_state"):
    checkpoint.pop(key, None)
torch.save(checkpoint, sys.argv[2])
