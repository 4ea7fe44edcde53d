"""The Monitor: a fitted detector (or several) and its calibration wrapped for a service — per input a prediction,
score, p-value, OOD degree, flag and plain reading; batch screening with FDR control; save / load without pickle."""

from .monitor import Monitor

__all__ = ["Monitor"]
