"""The ``oodlens`` command: ``oodlens demo [NAME]`` (every module in ``bench/demos``), ``oodlens bench CONFIG``, ``oodlens methods``.

Errors print as one line (``oodlens: error: ...``) with exit status 2; ``--traceback`` shows the full trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .bench.demos import DEFAULT_DEMO, available_demos, demo_entry
from .errors import OODLensError



def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oodlens", description="Out-of-distribution detection and benchmarks.")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demos = available_demos()
    width = max(map(len, demos), default=0) + 2
    listing = "\n".join(f"  {name:{width}s}{line}" for name, line in demos.items())
    demo = sub.add_parser("demo", help="run a built-in benchmark end to end and print its tables",
                          description="Run a built-in benchmark on data that ships with the package's dependencies.",
                          epilog=f"demos:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("name", nargs="?", default=DEFAULT_DEMO, choices=sorted(demos), metavar="NAME",
                      help=f"which demo (default: {DEFAULT_DEMO}); listed below")
    demo.add_argument("--cache", default=".oodlens_cache", help="folder for cached models and features")
    demo.add_argument("--out", default=None, help="also write the tables (Markdown, HTML, CSV) to this folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--detectors", default=None, help="comma-separated detector names (default: all that apply)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--threads", type=int, default=1,
                      help="torch CPU threads (default 1: the demo's small models run fastest on one)")
    demo.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    bench = sub.add_parser("bench", help="run a benchmark from a config file naming feature files",
                           description="Run a benchmark on your own model's features. CONFIG is a JSON or TOML file; "
                                       "see the README for its fields.")
    bench.add_argument("config", help="path to the benchmark config (JSON or TOML)")
    bench.add_argument("--out", default=None, help="write the tables (Markdown, HTML, CSV) to this folder")
    bench.add_argument("--detectors", default=None, help="comma-separated detector names (overrides the config)")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    bench.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    ext = sub.add_parser("extract", help="run a pretrained model over data on disk and write a features file",
                         description="Run a model over a folder of images (class sub-folders give labels), a text file "
                                     "(one input per line) or a feature file, and write a safetensors features file "
                                     "that 'oodlens bench' reads. Offline: give local weights; set HF_HUB_OFFLINE=1.")
    ext.add_argument("model", help="minilm | mobilenet_v2 | st:<folder> | hf:<folder> | torchvision:<name> | "
                                   "timm:<name> | open_clip:<arch> | a local model folder | module:function "
                                   "| '-' (feature files only: convert)")
    ext.add_argument("data", help="folder of images, .txt file of lines, or .safetensors / .npy / .npz features")
    ext.add_argument("-o", "--out", required=True, help="the features file to write (.safetensors)")
    ext.add_argument("--weights", default=None, help="local weights file for torchvision / timm / open_clip / "
                                                     "module:function models")
    ext.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cpu)")
    ext.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default 32)")
    ext.add_argument("--save-head", default=None, help="also write the classifier's last linear layer (weight, bias)"
                                                       " here, for 'head = ...' in a bench config")
    ext.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ext.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    methods = sub.add_parser("methods", help="list the registered detectors and what each needs")
    methods.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _call(target: str, args: argparse.Namespace) -> int:
    module, func = target.split(":")
    return int(getattr(importlib.import_module(module), func)(args) or 0)


def _list_methods() -> int:
    """Each registered detector: its name, what it reads and needs, then the first paragraph of its docstring,
    wrapped to the terminal (never cut)."""
    import shutil
    import textwrap

    from .detectors import available_detectors, get_detector

    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    for name in available_detectors():
        cls = get_detector(name)
        needs = [k for k, flag in (("labels", cls.needs_labels), ("head", cls.needs_head), ("model", cls.needs_model)) if flag]
        feats = ", ".join(cls().required_features())
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
        para = " ".join(doc.split("\n\n", 1)[0].split())
        print(f"{name}  (reads: {feats or '-'}; needs: {', '.join(needs) or '-'})")
        print(textwrap.fill(para or "(no description)", width, initial_indent="    ", subsequent_indent="    ",
                            break_on_hyphens=False))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .encoders.files import extract_to_file

    print(extract_to_file(args.model, args.data, args.out, weights=args.weights, device=args.device,
                          batch_size=args.batch_size, progress=not args.no_progress, save_head=args.save_head))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "demo":
            import torch

            torch.set_num_threads(max(1, args.threads))
            return _call(demo_entry(args.name), args)
        if args.command == "bench":
            return _call("oodlens.bench.config:run_config", args)
        if args.command == "extract":
            return _extract(args)
        if args.command == "methods":
            return _list_methods()
    except (OODLensError, FileNotFoundError) as e:
        if getattr(args, "traceback", False):
            raise
        print(f"oodlens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oodlens: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
