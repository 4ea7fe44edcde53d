"""Training-time OOD methods and the seeded training loop they share (see docs/training.md)."""

from .abet import AbeTHead, abet_loss, abet_score

__all__ = ["AbeTHead", "abet_loss", "abet_score"]
