"""Benchmarks: protocol (ID / near / far / covariate), runner with validation-only tuning, reports, built-in demos."""

from .protocol import Benchmark, TestSet
from .report import render_html, render_markdown, summary, write_reports
from .runner import BenchmarkResult, run_benchmark

__all__ = ["Benchmark", "BenchmarkResult", "TestSet", "render_html", "render_markdown", "run_benchmark", "summary",
           "write_reports"]
