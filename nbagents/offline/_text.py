"""Text normalisation shared by recognition, phrase lists and word error rates.

Recognisers output lower-case words without punctuation, and spell numbers out; written text says
"Order 427, please!". ``words`` maps both to the same list, so phrase lists can be written naturally
and transcripts can be compared with what was said.
"""

from __future__ import annotations

import re

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_TOKEN = re.compile(r"[0-9]+|[a-z]+(?:'[a-z]+)*")


def number_words(n: int) -> list[str]:
    """``427`` -> ``["four", "hundred", "twenty", "seven"]`` (0 up to 999,999,999)."""
    if n < 0 or n >= 1_000_000_000:
        raise ValueError(f"numbers from 0 to 999,999,999 can be spelled out (got {n})")
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    for size, name in ((1_000_000, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + [name] + (number_words(n % size) if n % size else [])
    raise AssertionError(n)


def words(text: str) -> list[str]:
    """Lower-case words of ``text``: punctuation dropped, numbers spelled out, hyphenated words split."""
    out: list[str] = []
    for token in _TOKEN.findall(text.lower().replace("’", "'")):
        if token.isdigit():
            # "007" and "427" as a speaker reads them: long digit strings digit by digit
            out += number_words(int(token)) if len(token) <= 4 and not token.startswith("0") else [_ONES[int(d)] for d in token]
        else:
            out.append(token)
    return out


def word_error_rate(references: str | list[str], hypotheses: str | list[str]) -> float:
    """Word error rate of ``hypotheses`` against ``references`` (one string or parallel lists of them).

    (substitutions + deletions + insertions) / reference words, after ``words`` normalisation, summed
    over all pairs (so long sentences weigh more, as in the usual corpus WER). 0.0 is perfect; it can
    exceed 1.0 when the recogniser inserts words.
    """
    if isinstance(references, str):
        references = [references]
    if isinstance(hypotheses, str):
        hypotheses = [hypotheses]
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses; give one per reference")
    errors = total = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = words(ref), words(hyp)
        errors += _edit_distance(r, h)
        total += len(r)
    if total == 0:
        raise ValueError("the references hold no words")
    return errors / total


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[:], i
        for k, y in enumerate(b, 1):
            row[k] = min(prev[k] + 1, row[k - 1] + 1, prev[k - 1] + (x != y))
    return row[-1]
