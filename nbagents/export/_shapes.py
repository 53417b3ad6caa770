"""What a credential looks like without following any code: its name, its shape, and the text forms that
set one (``NAME=value``, ``--api-secret value``).

Shapes (chosen from what LiveKit itself generates, and measured on random samples):

- API key: ``API`` followed by exactly 12 letters and digits (livekit-server's ``generate-keys`` and LiveKit
  Cloud's keys, e.g. ``APITCL53pSLyZaR``), not a word: the 12 contain a digit or no run of 5+ lowercase
  letters (``"APIConnectionEr"`` is not a key). Catches ~98 % of random keys.
- API secret: 32–64 characters of ``[A-Za-z0-9_-]`` standing alone — not next to ``+``, ``/`` or a
  trailing ``=``, which make it a piece of base64 (an embedded image) — (livekit-server's secrets are 32
  random bytes in base62, ~43 characters; nbagents' own are ``token_urlsafe(32)``), with at least one digit, five
  uppercase and five lowercase letters, spread the way random text is: at least a quarter of the
  uppercase letters are not followed by a lowercase one, and at most 65 % of the lowercase letters are
  (identifiers such as ``getUserMediaStreamTrackAudioLevel2ForTheMic`` fail both). Catches ~98.5 % of
  43-character secrets, ~97 % of 32-character ones; hex digests, UUIDs, CamelCase and snake_case names,
  sentences and URLs do not match. A secret a person typed (``"my-secret"``) has no shape: only the data
  flow finds it.
- Access token: a JWT (``eyJ…​.eyJ…​.signature``): a token signed with the secret, valid until it expires.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# What a finding is, for the messages: which environment variable should carry it instead.
KEY, SECRET, TOKEN = "API key", "API secret", "access token"
ENV_FOR_KIND = {KEY: "LIVEKIT_API_KEY", SECRET: "LIVEKIT_API_SECRET", TOKEN: "a token minted at run time"}

_TOKEN_CHARS = "A-Za-z0-9_\\-"
# Base64 neighbours (+ /) mean the run is a piece of a longer blob (an embedded image, say), not a secret.
_ALONE_BEFORE = r"(?<![A-Za-z0-9_\-+/])"
_ALONE_AFTER = r"(?![A-Za-z0-9_\-+/])"
_SECRET_AFTER = r"(?![A-Za-z0-9_\-+/=])"  # and no base64 padding after it
_KEY_RE = re.compile(_ALONE_BEFORE + r"API([A-Za-z0-9]{12})" + _ALONE_AFTER)
_SECRET_RE = re.compile(_ALONE_BEFORE + f"[{_TOKEN_CHARS}]{{32,64}}" + _SECRET_AFTER)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{16,}")


def _looks_random(text: str) -> bool:
    if not any(c.isdigit() for c in text):
        return False
    upper = [i for i, c in enumerate(text) if c.isupper()]
    lower = [i for i, c in enumerate(text) if c.islower()]
    if len(upper) < 5 or len(lower) < 5:
        return False

    def followed_by_lower(positions: list[int]) -> float:
        return sum(1 for i in positions if i + 1 < len(text) and text[i + 1].islower()) / len(positions)

    return 1 - followed_by_lower(upper) >= 0.25 and followed_by_lower(lower) <= 0.65


def _key_tail_is_random(tail: str) -> bool:
    return any(c.isdigit() for c in tail) or max((len(run) for run in re.findall("[a-z]+", tail)), default=0) < 5


@dataclass(frozen=True)
class ShapeHit:
    start: int
    end: int
    kind: str

    def describe(self) -> str:
        return {
            KEY: "looks like a LiveKit API key (API and 12 random letters and digits)",
            SECRET: "looks like a LiveKit API secret (a long random string of letters and digits)",
            TOKEN: "looks like an access token (a signed JWT)",
        }[self.kind]


def find_shapes(text: str) -> list[ShapeHit]:
    """Every substring of ``text`` shaped like a LiveKit key, secret or access token."""
    hits = [ShapeHit(m.start(), m.end(), TOKEN) for m in _JWT_RE.finditer(text)]
    inside_jwt = [(h.start, h.end) for h in hits]
    for m in _KEY_RE.finditer(text):
        if _key_tail_is_random(m.group(1)):
            hits.append(ShapeHit(m.start(), m.end(), KEY))
    for m in _SECRET_RE.finditer(text):
        if any(a <= m.start() < b for a, b in inside_jwt):
            continue
        if _looks_random(m.group(0)):
            hits.append(ShapeHit(m.start(), m.end(), SECRET))
    return sorted(hits, key=lambda h: h.start)


# -- names ------------------------------------------------------------------------------------------------

def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


_TOKEN_NAMES = {("access", "token"), ("auth", "token"), ("api", "token"), ("bearer", "token"), ("refresh", "token"),
                ("id", "token")}


def credential_name(name: str) -> str | None:
    """The kind of credential a Python name, attribute, keyword or dict key holds, judged by the name alone.

    ``api_key``/``api_secret`` and anything ending so (``LIVEKIT_API_KEY``, ``openai_api_key``), a name whose
    last word is ``secret`` or ``password`` (``client_secret``), ``LIVEKIT_*`` names with a key, secret or
    token word, and ``access_token``-like names. Not ``token`` alone nor ``*_key`` alone: ``eos_token`` and
    ``CACHE_KEY`` are ordinary names.
    """
    words = _words(name)
    if not words:
        return None
    if words[-1] in ("secret", "password", "passwd", "apisecret") or words[-2:] == ["api", "secret"]:
        return SECRET
    if words[-1] == "apikey" or words[-2:] == ["api", "key"]:
        return KEY
    if tuple(words[-2:]) in _TOKEN_NAMES or words[-1] == "jwt":
        return TOKEN
    if words[0] == "livekit" and len(words) > 1:
        for word in words[1:]:
            if word in ("secret", "secrets"):
                return SECRET
            if word in ("key", "keys"):
                return KEY
            if word == "token":
                return TOKEN
    return None


def credential_env(name: str) -> str | None:
    """The kind of credential an environment variable holds: what ``credential_name`` says, and the
    environment's convention of ``*_KEY``/``*_KEYS``/``*_TOKEN`` names (``OPENAI_API_KEY``, ``HF_TOKEN``,
    ``LIVEKIT_KEYS``) — a convention that holds for environment variables, not for Python names."""
    kind = credential_name(name)
    if kind:
        return kind
    words = _words(name)
    if words and words[-1] in ("key", "keys"):
        return KEY
    if words and words[-1] == "token":
        return TOKEN
    return None


def credential_text_name(name: str) -> str | None:
    """A name in free text (``NAME=value``): environment conventions for UPPER_CASE names, Python ones else."""
    return credential_env(name) if name.isupper() else credential_name(name)


# -- text that sets a credential ------------------------------------------------------------------------------

_VALUE = r"(?P<value>[A-Za-z0-9_\-+/=.~:@]+)"
_ASSIGNMENT_RE = re.compile(
    r"(?<![A-Za-z0-9_])(?:export\s+|set\s+|-e\s+)?(?P<quote>[\"']?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P=quote)"
    r"(?P<sep>\s*[=:]\s*|\s+(?=[^=:\s]))[\"']?" + _VALUE
)
_NOT_VALUES = frozenset({"none", "null", "nil", "true", "false", "undefined"})
_FLAG_RE = re.compile(r"--api[-_](?P<which>key|secret)(?:=|\s+)[\"']?" + _VALUE)


def _placeholder(value: str, after: str) -> bool:
    """``...``, ``xxx``, ``<your secret>``, ``your-api-key``, ``$LIVEKIT_API_SECRET``, ``{secret}``, ``%s``,
    ``None``, a variable's name (``CLIENT_SECRET``) or the start of an expression (``os.environ[...]``,
    ``get_secret()``) are not values."""
    if value[0] in "$<{%(" or after[:1] in ("(", "[", "{", "$", "<") or value.lower() in _NOT_VALUES:
        return True
    core = value.strip(".:")
    if not core or set(core.lower()) <= set("x*._-") or core.lower().startswith("your"):
        return True
    # CLIENT_SECRET, YOUR_API_KEY: the name of a variable (code in a docstring), not its value
    return bool(re.fullmatch(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+", core))


@dataclass(frozen=True)
class TextHit:
    start: int
    end: int
    name: str
    kind: str
    value: str


def find_text_credentials(text: str, *, spaced_assignments: bool = False) -> list[TextHit]:
    """``NAME=value`` / ``NAME: value`` lines (.env files, shells, YAML, ``%env``) that give a credential
    variable a concrete value, and ``--api-key``/``--api-secret`` command-line flags. With
    ``spaced_assignments``, ``NAME value`` counts too (``%env NAME value``)."""
    hits = []
    for m in _ASSIGNMENT_RE.finditer(text):
        separator = m.group("sep")
        if "=" not in separator and ":" not in separator and not spaced_assignments:
            continue
        if ":" in separator and not (m.group("quote") or m.group("name").isupper()):
            continue  # "api_key: the key to use" is prose (a docstring); YAML/JSON names are UPPER or quoted
        kind = credential_text_name(m.group("name"))
        value = m.group("value").rstrip(".,;:")
        if kind and value and not _placeholder(value, text[m.end():m.end() + 1]):
            hits.append(TextHit(m.start("value"), m.start("value") + len(value), m.group("name"), kind, value))
    for m in _FLAG_RE.finditer(text):
        value = m.group("value")
        if not _placeholder(value, text[m.end():m.end() + 1]):
            kind = KEY if m.group("which") == "key" else SECRET
            hits.append(TextHit(m.start("value"), m.end("value"), f"--api-{m.group('which')}", kind, value))
    return hits


def iter_credentials_in_text(text: str, *, spaced_assignments: bool = False) -> Iterator[tuple[int, str, str]]:
    """(offset, kind, description) of every credential ``text`` shows, by shape or by a text form."""
    for hit in find_shapes(text):
        yield hit.start, hit.kind, hit.describe()
    for t in find_text_credentials(text, spaced_assignments=spaced_assignments):
        yield t.start, t.kind, f"gives {t.name} a value"


def mask(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``…`` (for error messages and labels)."""
    for hit in reversed(find_shapes(text)):
        text = text[: hit.start] + "…" + text[hit.end :]
    return text
