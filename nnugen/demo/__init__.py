"""Demo data: procedural phantom scans written as nnU-Net v2 raw datasets, so that nothing has to be downloaded."""
