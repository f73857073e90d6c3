"""Evaluation metrics (torch-free): ImageNet-C mCE, the ImageNet-A/R 200-class slices, and
the Geirhos cue-conflict shape bias. The stages in ``pixmim.stages`` run the models."""
