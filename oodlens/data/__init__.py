"""Data files shipped inside the package (see each file's licence beside it)."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def wordnet_nouns() -> tuple[str, ...]:
    """The 117 798 noun lemmas of WordNet 3.0 (``index.noun``; underscores as spaces), NegLabel's default lexicon.
    WordNet 3.0 Copyright 2006 by Princeton University; licence in ``oodlens/data/WORDNET-LICENSE``."""
    with resources.files(__name__).joinpath("wordnet_nouns.txt.gz").open("rb") as f:
        return tuple(gzip.decompress(f.read()).decode("utf-8").splitlines())
