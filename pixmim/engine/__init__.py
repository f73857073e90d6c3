"""The shared training engine: one loop for pretraining, linear probe and fine-tune."""
