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


_UNITS = {w: i for i, w in enumerate(_ONES)}
_TENS_VALUES = {w: 10 * i for i, w in enumerate(_TENS) if w != "_"}
_SCALES = {"thousand": 1000, "million": 1_000_000}


def digits(text: str) -> str:
    """``text`` with spelled-out numbers written as digits, as recognisers without formatting need.

    ``"order four hundred twenty seven please"`` -> ``"order 427 please"``; a run of single digits is
    read digit by digit (``"four two seven"`` -> ``"427"``, ``"oh"`` is not a digit). Other words, their
    case and the spacing between them are kept. Handy in ``ScriptedLLM`` rules: the offline STT spells
    numbers out, as the words are spoken.
    """
    tokens = re.split(r"(\s+)", text)
    out: list[str] = []
    run: list[str] = []  # number words seen in a row (separators dropped)

    def flush() -> None:
        if run:
            out.append(_number_text(run))
            run.clear()

    for token in tokens:
        if not token:
            continue
        if token.isspace():
            if not run:
                out.append(token)
            continue
        word = token.lower().replace("-", " ")
        parts = word.split()
        if parts and all(p in _UNITS or p in _TENS_VALUES or p == "hundred" or p in _SCALES for p in parts) and (
            run or parts[0] in _UNITS or parts[0] in _TENS_VALUES
        ):
            run.extend(parts)
            continue
        if run:
            flush()
            out.append(" ")
        out.append(token)
    flush()
    return "".join(out).rstrip() if text == text.rstrip() else "".join(out)


def _number_text(words_: list[str]) -> str:
    if len(words_) > 1 and all(w in _UNITS and _UNITS[w] < 10 for w in words_):
        return "".join(str(_UNITS[w]) for w in words_)  # read digit by digit
    total = current = 0
    for w in words_:
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _TENS_VALUES:
            current += _TENS_VALUES[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _SCALES[w]
            current = 0
    return str(total + current)
