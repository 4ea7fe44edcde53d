"""Import every module in ``oodlens.detectors`` so each method registers itself (one file per method)."""

import importlib
import pkgutil

from .. import detectors as _pkg

for _info in sorted(pkgutil.iter_modules(_pkg.__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name not in ("base", "registry"):
        importlib.import_module(f"{_pkg.__name__}.{_info.name}")
