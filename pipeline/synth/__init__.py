"""Synthetic domain translation: CycleGAN day <-> night (`pipeline.synth.cyclegan`)."""
