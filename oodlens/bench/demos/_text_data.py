"""Texts for ``oodlens demo text``, from the YAML dialogues of the ``chatterbot-corpus`` wheel (one sample = one
conversation, its lines joined):

* ID: seven English topics (ai, emotion, literature, money, science, sports, movies), split train / val / test;
* near-OOD: the held-out English topics (psychology, computers, history, food, politics, gossip, humor, health);
* covariate shift: the same seven ID topics in Italian (the corpus's translations);
* far-OOD: word salad (the ID test texts' words shuffled across texts) and random letter strings.
"""

from __future__ import annotations

import os
import random
import string
from dataclasses import dataclass, field

from ...errors import OODLensError

#: ID topic -> the class name in the zero-shot prompts
ID_TOPICS = {"ai": "artificial intelligence", "emotion": "emotions and feelings", "literature": "literature and books",
             "money": "money and finance", "science": "science", "sports": "sports", "movies": "movies and films"}
NEAR_TOPICS = ("psychology", "computers", "history", "food", "politics", "gossip", "humor", "health")
COVARIATE_LANGUAGE = "italian"
FRACTIONS = (0.5, 0.2)  # train, validation; the rest is the ID test split


@dataclass
class TextSplits:
    texts: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, list[int]] = field(default_factory=dict)  # ID splits (and the covariate set): topic index
    kinds: dict[str, str] = field(default_factory=dict)  # test set -> near / covariate / far


def corpus_folder() -> str:
    try:
        import chatterbot_corpus
    except ImportError:
        raise OODLensError("the text demo needs the chatterbot-corpus wheel: pip install chatterbot-corpus") from None
    return os.path.join(os.path.dirname(chatterbot_corpus.__file__), "data")


def read_topic(language: str, topic: str) -> list[str]:
    """One text per conversation of ``<language>/<topic>.yml`` (lines joined with spaces)."""
    import yaml

    path = os.path.join(corpus_folder(), language, f"{topic}.yml")
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    out = []
    for conv in doc.get("conversations") or []:
        lines = [str(x) for x in (conv if isinstance(conv, list) else [conv])]
        text = " ".join(" ".join(lines).split())
        if text:
            out.append(text)
    return out


def _random_text(rng: random.Random) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(rng.randint(5, 25)))


def _word_salad(texts: list[str], rng: random.Random) -> list[str]:
    words = [w for t in texts for w in t.split()]
    rng.shuffle(words)
    out, i = [], 0
    for t in texts:
        n = len(t.split())
        out.append(" ".join(words[i:i + n]))
        i += n
    return out


def load_text_splits(seed: int = 0) -> TextSplits:
    """The demo's splits, deterministic for a seed (stratified by topic)."""
    rng = random.Random(seed)
    s = TextSplits()
    for name in ("train", "val", "test"):
        s.texts[name], s.labels[name] = [], []
    seen: set[str] = set()
    for k, topic in enumerate(ID_TOPICS):
        texts = [t for t in dict.fromkeys(read_topic("english", topic)) if t not in seen]  # no text in two splits
        seen.update(texts)
        rng.shuffle(texts)
        a = round(FRACTIONS[0] * len(texts))
        b = a + round(FRACTIONS[1] * len(texts))
        for name, part in (("train", texts[:a]), ("val", texts[a:b]), ("test", texts[b:])):
            s.texts[name] += part
            s.labels[name] += [k] * len(part)
    near = dict.fromkeys(t for topic in NEAR_TOPICS for t in read_topic("english", topic))
    s.texts["near: held-out topics"] = [t for t in near if t not in seen]
    cov, cov_y = [], []
    for k, topic in enumerate(ID_TOPICS):
        part = read_topic(COVARIATE_LANGUAGE, topic)
        cov += part
        cov_y += [k] * len(part)
    s.texts["covariate: same topics in Italian"], s.labels["covariate: same topics in Italian"] = cov, cov_y
    s.texts["far: word salad"] = _word_salad(s.texts["test"], rng)
    s.texts["far: random letters"] = [_random_text(rng) for _ in range(len(s.texts["test"]))]
    s.kinds = {"near: held-out topics": "near", "covariate: same topics in Italian": "covariate",
               "far: word salad": "far", "far: random letters": "far"}
    return s
