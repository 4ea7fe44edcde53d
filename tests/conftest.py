"""Test-wide settings: one torch thread (the suite runs many tiny ops, where thread wake-ups dominate)."""

import torch

torch.set_num_threads(1)
