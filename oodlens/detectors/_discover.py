"""Import every module in ``oodlens.detectors`` so each method registers itself (one file per method)."""

import importlib
import os
import pkgutil

_PACKAGE = __name__.rpartition(".")[0]

for _info in sorted(pkgutil.iter_modules([os.path.dirname(__file__)]), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name not in ("base", "registry"):
        importlib.import_module(f"{_PACKAGE}.{_info.name}")
