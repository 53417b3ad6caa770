"""Language models built from a list of expected phrases, for PocketSphinx.

``phrases_arpa`` writes a bigram model (ARPA text) whose vocabulary is the phrases' words: recognition
is biased to those word orders but can still produce other sequences of the same words (an order number
read digit by digit, two phrases run together). ``phrases_jsgf`` writes a grammar that accepts exactly
one of the phrases (``strict=True``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from nbagents.offline._text import words

#: Absolute discount taken from every seen bigram and given to the unigram back-off.
DISCOUNT = 0.5


def phrase_words(phrases: list[str]) -> list[list[str]]:
    """The phrases as normalised word lists; an error names an empty or non-string entry."""
    if isinstance(phrases, str):
        raise TypeError("phrases must be a list of strings, not one string (wrap it: phrases=[...])")
    out = []
    for i, phrase in enumerate(phrases):
        if not isinstance(phrase, str):
            raise TypeError(f"phrases[{i}] must be a string (got {type(phrase).__name__})")
        w = words(phrase)
        if not w:
            raise ValueError(f"phrases[{i}] = {phrase!r} holds no words")
        out.append(w)
    if not out:
        raise ValueError("phrases is empty; give at least one phrase, or None for open dictation")
    return out


def phrases_arpa(sentences: list[list[str]]) -> str:
    """A bigram ARPA model of ``sentences`` (absolute discounting, Katz-style back-off weights)."""
    unigrams: Counter[str] = Counter()
    bigrams: Counter[tuple[str, str]] = Counter()
    for sentence in sentences:
        tokens = ["<s>", *sentence, "</s>"]
        unigrams.update(tokens)
        bigrams.update(zip(tokens, tokens[1:]))
    vocab = sorted(unigrams)
    # add-one unigrams over the vocabulary (<s> is never predicted)
    predicted = [w for w in vocab if w != "<s>"]
    total = sum(unigrams[w] + 1 for w in predicted)
    p_uni = {w: (unigrams[w] + 1) / total for w in predicted}
    followers: dict[str, list[str]] = defaultdict(list)
    for a, b in bigrams:
        followers[a].append(b)
    history_count = Counter()
    for (a, _), c in bigrams.items():
        history_count[a] += c
    p_bi: dict[tuple[str, str], float] = {}
    backoff: dict[str, float] = {}
    for a, bs in followers.items():
        n = history_count[a]
        seen_mass = 0.0
        seen_uni = 0.0
        for b in bs:
            p = (bigrams[a, b] - DISCOUNT) / n + (DISCOUNT * len(bs) / n) * p_uni[b]
            p_bi[a, b] = p
            seen_mass += p
            seen_uni += p_uni[b]
        left, left_uni = max(1.0 - seen_mass, 1e-9), max(1.0 - seen_uni, 1e-9)
        backoff[a] = left / left_uni
    lines = ["\\data\\", f"ngram 1={len(vocab)}", f"ngram 2={len(p_bi)}", "", "\\1-grams:"]
    for w in vocab:
        prob = -99.0 if w == "<s>" else math.log10(p_uni[w])
        lines.append(f"{prob:.6f}\t{w}\t{math.log10(backoff.get(w, 1.0)):.6f}")
    lines += ["", "\\2-grams:"]
    for (a, b), p in sorted(p_bi.items()):
        lines.append(f"{math.log10(p):.6f}\t{a} {b}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def phrases_jsgf(sentences: list[list[str]]) -> str:
    """A JSGF grammar that accepts exactly one of ``sentences``."""
    alternatives = " | ".join(" ".join(s) for s in dict.fromkeys(tuple(s) for s in sentences))
    return f"#JSGF V1.0;\ngrammar phrases;\npublic <phrase> = {alternatives} ;\n"
