"""Files: HDF5 artifacts and checkpoints (artifacts), trace readers (readers)."""
