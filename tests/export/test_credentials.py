"""Credentials never reach an exported script.

Every case is a real notebook file, exported through the real `nbagents export` command (a subprocess) and
through the nbconvert exporter that `jupyter nbconvert --to nbagents` loads from its entry point; the notebooks
that must export are also converted together by one real `jupyter nbconvert` run.

- REFUSED: a credential in code the worker would run (or on the %%agent line the script copies): exit 1,
  every cell and line named, the advice to read
  LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET from the environment, no script written, and the
  credential itself never echoed in the message.
- HIDDEN: a credential in what the script only shows (notebook-only code kept as comments, magics, shell
  lines, %%bash bodies, comments): the export succeeds, the value is nowhere in the script, a placeholder
  says what was left out.
- KEPT: ordinary strings, environment reads and placeholders that are not credentials export unchanged.
"""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbconvert.exporters import get_exporter
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from nbagents.export import ExportError
from nbagents.export._shapes import KEY, SECRET, TOKEN, find_shapes

BIN = Path(sys.executable).parent

# A key and a secret shaped like the ones livekit-server's generate-keys and LiveKit Cloud hand out (made up
# for these tests), a secret a person typed (no shape: only the data flow can find it), and the dev pair.
GENERATED_KEY = "APIMYHi0YeoR6RO"
GENERATED_SECRET = "hW5XFniSjGPolymNHmlTDS8c9hpR55QA5eyV5Ph1QQf"
TYPED_SECRET = "my-dev-secret-42"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInZpZGVvIjp7InJvb20iOiJkZW1vIn19"
    ".c2lnbmF0dXJlLW9mLXRoZS10ZXN0LXRva2Vu"
)

HEAD = "import os\nfrom livekit import api\nfrom nbagents import JobContext"
AGENT = "%%agent --room demo\nasync def entrypoint(ctx: JobContext):\n    await ctx.connect()"


@dataclass(frozen=True)
class Case:
    cells: tuple  # code cell sources (a (source, [tags]) pair for a tagged cell); cell 1 is markdown
    refused: tuple = ()  # (cell, line, kind) the message must name, in this order
    hidden: tuple = ()  # values that must not be in the script (the export succeeds)
    kept: tuple = ()  # text that must be in the script unchanged


def secret_values(case: Case) -> list[str]:
    found = [GENERATED_KEY, GENERATED_SECRET, TYPED_SECRET, JWT, *case.hidden]
    return [v for v in found if any(v in (c if isinstance(c, str) else c[0]) for c in case.cells)]


REFUSED = {
    # -- the six forms of issue 12 (exported unchanged before) and their relatives ----------------------------
    "AccessToken-positional": Case(
        (HEAD, f'token = api.AccessToken("devkey", "{TYPED_SECRET}").with_identity("alice").to_jwt()', AGENT),
        refused=((3, 1, KEY), (3, 1, SECRET)),
    ),
    "LiveKitAPI-positional": Case(
        (HEAD, f'def rooms():\n    return api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "{TYPED_SECRET}")', AGENT),
        refused=((3, 2, KEY), (3, 2, SECRET)),
    ),
    "module-constant-LIVEKIT_API_SECRET": Case(
        (HEAD, f'LIVEKIT_URL = "ws://127.0.0.1:7880"\nLIVEKIT_API_SECRET = "{TYPED_SECRET}"', AGENT),
        refused=((3, 2, SECRET),),
    ),
    "token-minted-in-the-entrypoint": Case(
        (HEAD, "%%agent --room demo\nasync def entrypoint(ctx: JobContext):\n    await ctx.connect()\n"
               f'    jwt = api.AccessToken("devkey", "{TYPED_SECRET}").with_identity("bot").to_jwt()'),
        refused=((3, 4, KEY), (3, 4, SECRET)),
    ),
    "TokenVerifier-in-a-nested-webhook-handler": Case(
        (HEAD, "def make_app():\n    def on_webhook(body, auth):\n"
               f'        receiver = api.WebhookReceiver(api.TokenVerifier("devkey", "{TYPED_SECRET}"))\n'
               "        return receiver.receive(body, auth)\n    return on_webhook", AGENT),
        refused=((3, 3, KEY), (3, 3, SECRET)),
    ),
    "service-client-positional": Case(
        (HEAD, "import aiohttp\nasync def list_rooms():\n    async with aiohttp.ClientSession() as session:\n"
               f'        rooms = api.RoomService(session, "http://127.0.0.1:7880", "devkey", "{TYPED_SECRET}")\n'
               "        return await rooms.list_rooms(api.ListRoomsRequest())", AGENT),
        refused=((3, 4, KEY), (3, 4, SECRET)),
    ),
    "os.environ-item": Case(
        (HEAD, f'os.environ["LIVEKIT_API_SECRET"] = "{TYPED_SECRET}"', AGENT), refused=((3, 1, SECRET),)
    ),
    "api_secret-keyword-of-the-worker": Case(
        (HEAD, "from livekit.agents import WorkerOptions\n"
               f'options = WorkerOptions(entrypoint_fnc=None, api_key="devkey", api_secret="{TYPED_SECRET}")', AGENT),
        refused=((3, 2, KEY), (3, 2, SECRET)),
    ),
    # -- through the code -------------------------------------------------------------------------------
    "local-variables-f-string-and-concatenation": Case(
        (HEAD, 'key = "devkey"\nprefix = "my-dev"', AGENT,
         'def mint(identity):\n    secret = f"{prefix}-secret-" + "42"\n'
         "    return api.AccessToken(key, secret).with_identity(identity).to_jwt()"),
        refused=((3, 1, KEY), (3, 2, SECRET), (5, 2, SECRET)),
    ),
    "dict-and-double-star": Case(
        (HEAD, f'CREDS = {{"url": "ws://127.0.0.1:7880", "key": "devkey", "secret": "{TYPED_SECRET}"}}', AGENT,
         'def client():\n    return api.LiveKitAPI(**{"url": CREDS["url"], "api_key": CREDS["key"], '
         '"api_secret": CREDS["secret"]})'),
        refused=((3, 1, KEY), (3, 1, SECRET)),
    ),
    "tuple-unpacking": Case(
        (HEAD, f'url, key, secret = "ws://127.0.0.1:7880", "devkey", "{TYPED_SECRET}"', AGENT,
         "def client():\n    return api.LiveKitAPI(url, key, secret)"),
        refused=((3, 1, KEY), (3, 1, SECRET)),
    ),
    "function-argument-defaults": Case(
        (HEAD, f'def mint(identity, key="devkey", secret="{TYPED_SECRET}"):\n'
               "    return api.AccessToken(key, secret).with_identity(identity).to_jwt()", AGENT),
        refused=((3, 1, KEY), (3, 1, SECRET)),
    ),
    "function-arguments-at-a-call": Case(
        (HEAD, "def mint(identity, key, secret):\n    return api.AccessToken(key, secret).with_identity(identity)",
         AGENT, f'def bot_token():\n    return mint("bot", "devkey", "{TYPED_SECRET}").to_jwt()'),
        refused=((5, 2, KEY), (5, 2, SECRET)),
    ),
    "attribute-assignment-and-method": Case(
        (HEAD, "class Minter:\n    def __init__(self):\n        self.key = 'devkey'\n"
               f"        self.signing = '{TYPED_SECRET}'\n"
               "    def mint(self, who):\n        return api.AccessToken(self.key, self.signing).with_identity(who)",
         AGENT),
        refused=((3, 3, KEY), (3, 4, SECRET)),
    ),
    "class-body-constants": Case(
        (HEAD, f'class Settings:\n    KEY = "devkey"\n    SIGNING = "{TYPED_SECRET}"', AGENT,
         "def verifier():\n    return api.TokenVerifier(Settings.KEY, Settings.SIGNING)"),
        refused=((3, 2, KEY), (3, 3, SECRET)),
    ),
    "environment-setdefault-putenv-update": Case(
        (HEAD, 'os.environ.setdefault("LIVEKIT_API_KEY", "devkey")\n'
               f'os.putenv("LIVEKIT_API_SECRET", "{TYPED_SECRET}")\n'
               f'os.environ.update({{"LIVEKIT_API_SECRET": "{TYPED_SECRET}"}})', AGENT),
        refused=((3, 1, KEY), (3, 2, SECRET), (3, 3, SECRET)),
    ),
    "dotenv-set_key-and-dotenv-text": Case(
        (HEAD, "import io\nimport dotenv\n"
               f'dotenv.set_key(".env", "LIVEKIT_API_SECRET", "{TYPED_SECRET}")\n'
               f'dotenv.load_dotenv(stream=io.StringIO("LIVEKIT_API_KEY=devkey\\nLIVEKIT_API_SECRET={TYPED_SECRET}"))',
         AGENT),
        refused=((3, 3, SECRET), (3, 4, KEY), (3, 4, SECRET)),
    ),
    "getenv-fallback-to-the-dev-pair": Case(
        (HEAD, 'KEY = os.getenv("LIVEKIT_API_KEY", "devkey")\nSIGNING = os.environ.get("LIVEKIT_API_SECRET") or "secret"',
         AGENT, "def mint():\n    return api.AccessToken(KEY, SIGNING)"),
        refused=((3, 1, KEY), (3, 2, SECRET)),
    ),
    "lk-command-line-in-a-subprocess": Case(
        (HEAD, "import subprocess\ndef token():\n    return subprocess.run(['lk', 'token', 'create', "
               f"'--api-key', 'devkey', '--api-secret', '{TYPED_SECRET}', '--join'], capture_output=True)", AGENT),
        refused=((3, 3, KEY), (3, 3, SECRET)),
    ),
    "placeholders-and-the-dev-pair-are-credentials-too": Case(
        (HEAD, 'def viewer_token():\n    return api.AccessToken("YOUR_API_KEY", "YOUR_API_SECRET").to_jwt()\n\n'
               'def admin():\n    return api.LiveKitAPI("ws://127.0.0.1:7880", "devkey", "secret")', AGENT),
        refused=((3, 2, KEY), (3, 2, SECRET), (3, 5, KEY), (3, 5, SECRET)),
    ),
    "a-credential-option-on-the-agent-line": Case(
        ("from nbagents import JobContext",
         "%%agent --room demo --api-secret my-dev-secret-42\nasync def entrypoint(ctx: JobContext):\n    pass"),
        refused=((3, 1, SECRET),),
    ),
    "kept-constant-used-by-a-skipped-cell": Case(
        (HEAD, f'DEV_SIGNING = "{TYPED_SECRET}"', AGENT,
         ('print(api.AccessToken("devkey", DEV_SIGNING).to_jwt())', ["nbagents-skip"])),
        refused=((3, 1, SECRET),),
    ),
    # -- by shape alone (no code says what they are) ------------------------------------------------------
    "generated-key-and-secret-in-a-plain-dict": Case(
        (HEAD, f'SETTINGS = {{"primary": "{GENERATED_KEY}", "signing": "{GENERATED_SECRET}"}}', AGENT),
        refused=((3, 1, KEY), (3, 1, SECRET)),
    ),
    "access-token-literal": Case(
        (HEAD, "from livekit import rtc", AGENT,
         f'async def join_as_bot():\n    room = rtc.Room()\n    await room.connect("ws://127.0.0.1:7880", "{JWT}")'),
        refused=((5, 3, TOKEN),),
    ),
    "generated-secret-in-a-docstring": Case(
        (HEAD, f'def helper():\n    """Signs with {GENERATED_SECRET}."""\n    return 1', AGENT),
        refused=((3, 2, SECRET),),
    ),
    "generated-key-in-the-agent-cell-options": Case(
        ("from nbagents import JobContext",
         f"%%agent --room {GENERATED_KEY}\nasync def entrypoint(ctx: JobContext):\n    await ctx.connect()"),
        refused=((3, None, KEY),),
    ),
}

HIDDEN = {
    "notebook-only-sim-join-with-credentials": Case(
        (HEAD, "from nbagents import sim", AGENT,
         'async with sim.join("demo", "alice", credentials=("ws://127.0.0.1:7880", "devkey", '
         f'"{TYPED_SECRET}")) as alice:\n    await alice.play_tone()'),
        hidden=("devkey", TYPED_SECRET),
    ),
    "magics-and-shell-lines": Case(
        (f"%env LIVEKIT_API_SECRET={TYPED_SECRET}\n%env LIVEKIT_API_KEY {GENERATED_KEY}\n"
         f"!lk token create --api-key devkey --api-secret {TYPED_SECRET} --join --room demo", HEAD, AGENT),
        hidden=(TYPED_SECRET, GENERATED_KEY, "devkey"),
    ),
    "bash-and-writefile-bodies": Case(
        (f"%%bash\nexport LIVEKIT_API_SECRET={TYPED_SECRET}\nlivekit-server --dev &",
         f"%%writefile .env\nLIVEKIT_URL=ws://127.0.0.1:7880\nLIVEKIT_API_KEY={GENERATED_KEY}\n", HEAD, AGENT),
        hidden=(TYPED_SECRET, GENERATED_KEY),
    ),
    "comments-and-commented-out-code": Case(
        (HEAD, f"# staging: {GENERATED_KEY} / {GENERATED_SECRET}\n"
               f"ROOM = 'demo'  # lkapi = api.LiveKitAPI(url, 'devkey', '{TYPED_SECRET}')\n"
               "def helper():\n    # token = api.AccessToken(\n"
               f"    #     'devkey', '{TYPED_SECRET}')\n    return ROOM", AGENT),
        hidden=(GENERATED_KEY, GENERATED_SECRET, TYPED_SECRET),
        kept=("ROOM = 'demo'  # [nbagents] comment not shown", "def helper():", "    return ROOM"),
    ),
    "notebook-only-code-that-mints-a-token": Case(
        (HEAD.replace("JobContext", "JobContext, launch"), AGENT.replace("%%agent --room demo\n", ""),
         'job = launch(entrypoint, room="demo")\n'
         f'viewer = api.AccessToken("devkey", "{TYPED_SECRET}").with_grants(api.VideoGrants(room=job.room))'),
        hidden=(TYPED_SECRET,),
        kept=("# job = launch(entrypoint, room=\"demo\")",),
    ),
    "a-skipped-cell-is-not-written": Case(
        (HEAD, (f'os.environ["LIVEKIT_API_SECRET"] = "{TYPED_SECRET}"', ["nbagents-skip"]), AGENT),
        hidden=(TYPED_SECRET,),
    ),
}

KEPT = {
    "environment-reads": Case(
        (HEAD, 'URL = os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")\nKEY = os.environ["LIVEKIT_API_KEY"]\n'
               'SIGNING = os.getenv("LIVEKIT_API_SECRET")\nOPTIONAL = os.environ.get("LIVEKIT_API_KEY", "")',
         AGENT, "def mint(identity):\n    grants = api.VideoGrants(room_join=True, room='demo')\n"
                "    return api.AccessToken(KEY, SIGNING).with_identity(identity).with_grants(grants).to_jwt()\n\n"
                "def client():\n    return api.LiveKitAPI()\n\n"
                "def verifier():\n    return api.TokenVerifier(api_key='', api_secret='')"),
        kept=('os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")', "api.AccessToken(KEY, SIGNING)"),
    ),
    "ordinary-strings": Case(
        (HEAD, 'PROMPT = "You are a friendly voice assistant. Keep answers short."\n'
               'ATTRIBUTE_KEY = "user.language"\neos_token = "</s>"\nMODEL = "gpt-4o-mini"\n'
               'DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"\n'
               'TRACE = "123e4567-e89b-12d3-a456-426614174000"\n'
               'HANDLER = "getUserMediaStreamTrackAudioLevel2ForTheMic"\n'
               'PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="\n'
               'os.environ["TOKENIZERS_PARALLELISM"] = "false"\nos.environ["LIVEKIT_URL"] = "ws://127.0.0.1:7880"',
         AGENT),
        kept=('ATTRIBUTE_KEY = "user.language"', "getUserMediaStreamTrackAudioLevel2ForTheMic", "iVBORw0KGgo",
              'os.environ["LIVEKIT_URL"] = "ws://127.0.0.1:7880"'),
    ),
    "comments-without-values": Case(
        (HEAD, "# the worker reads LIVEKIT_API_KEY and LIVEKIT_API_SECRET from the environment\n"
               "# run: LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=<your secret> python agent.py start\n"
               "# api.AccessToken(os.environ['LIVEKIT_API_KEY'], SIGNING)\nx = 1", AGENT),
        kept=("# run: LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=<your secret> python agent.py start",
              "# api.AccessToken(os.environ['LIVEKIT_API_KEY'], SIGNING)"),
    ),
}


def write_notebook(case: Case, path: Path) -> Path:
    cells = [new_markdown_cell("# agent")]
    for cell in case.cells:
        source, tags = cell if isinstance(cell, tuple) else (cell, [])
        cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    nbformat.write(new_notebook(cells=cells), path)
    return path


@dataclass(frozen=True)
class Exported:
    notebook: Path
    done: subprocess.CompletedProcess
    script: str | None  # None when no file was written


def cli_export(notebook: Path) -> Exported:
    output = notebook.with_suffix(".py")
    done = subprocess.run([BIN / "nbagents", "export", notebook, "-o", output], capture_output=True, text=True)
    return Exported(notebook, done, output.read_text() if output.exists() else None)


@pytest.fixture
def exported(request, tmp_path) -> Exported:
    """The case's notebook (the test's parameter), exported by the real `nbagents export` command."""
    name = request.node.callspec.params["name"]
    return cli_export(write_notebook(ALL[name], tmp_path / f"{name}.ipynb"))


def nbconvert_export(notebook: Path) -> str:
    """The exporter `jupyter nbconvert --to nbagents` uses, loaded through nbconvert's entry-point lookup."""
    body, _resources = get_exporter("nbagents")().from_filename(str(notebook))
    return body


ALL = {**REFUSED, **HIDDEN, **KEPT}
KIND_WORDS = {KEY: "an API key", SECRET: "an API secret", TOKEN: "an access token"}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_credential_in_code_the_worker_runs_is_refused_naming_cell_and_line(name, exported):
    case, result = REFUSED[name], exported
    assert result.done.returncode == 1, result.done.stdout + result.done.stderr
    assert result.script is None
    message = result.done.stderr
    assert message.startswith("nbagents export: cell ")
    named = re.findall(r"^(?:nbagents export: )?cell (\d+)\b[^\n]*?(?:, line (\d+))?: ([^\n]*)", message, re.M)
    expected = [(cell, line, kind) for cell, line, kind in case.refused]
    assert len(named) == len(expected), message
    for (cell, line, text), (want_cell, want_line, kind) in zip(named, expected):
        assert int(cell) == want_cell, message
        if want_line is not None:
            assert int(line) == want_line, message
        assert KIND_WORDS[kind] in text or kind.lower() in text.lower(), message
    assert "LIVEKIT_API_KEY" in message and "LIVEKIT_API_SECRET" in message and "environment" in message
    for value in secret_values(case):
        assert value not in message, f"the message echoes the credential {value!r}"

    with pytest.raises(ExportError) as info:
        nbconvert_export(result.notebook)
    assert f"nbagents export: {info.value}\n" == message


@pytest.mark.parametrize("name", list(HIDDEN) + list(KEPT))
def test_what_the_worker_does_not_run_is_exported_without_the_credential(name, exported):
    case, result = ALL[name], exported
    assert result.done.returncode == 0, result.done.stderr
    script = result.script
    assert script is not None and script == nbconvert_export(result.notebook)
    compile(script, "agent.py", "exec")
    for value in case.hidden:
        assert value not in script
    assert not find_shapes(script)
    if name in HIDDEN and name != "a-skipped-cell-is-not-written":
        assert "not shown" in script
    for text in case.kept:
        assert text in script


def test_jupyter_nbconvert_writes_the_same_scripts_and_refuses_the_same_notebooks(tmp_path):
    """One real `jupyter nbconvert --to nbagents` run over every notebook that exports, and one that is refused."""
    names = [*HIDDEN, *KEPT]
    notebooks = {name: write_notebook(ALL[name], tmp_path / f"{name}.ipynb") for name in names}
    out = tmp_path / "out"
    done = subprocess.run(
        [BIN / "jupyter", "nbconvert", "--to", "nbagents", "--output-dir", out, *notebooks.values()],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    for name, notebook in notebooks.items():
        script = (out / f"{name}.py").read_text()
        assert script == nbconvert_export(notebook)
        for value in ALL[name].hidden:
            assert value not in script

    refused = write_notebook(REFUSED["AccessToken-positional"], tmp_path / "refused.ipynb")
    done = subprocess.run([BIN / "jupyter", "nbconvert", "--to", "nbagents", "--output-dir", out, refused],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "cell 3, line 1: an API key is written as a literal" in done.stderr
    assert TYPED_SECRET not in done.stderr
    assert not (out / "refused.py").exists()


# -- the shape test on its own ---------------------------------------------------------------------------------

ORDINARY = [
    "You are a friendly voice assistant. Keep answers short.", "user.language", "gpt-4o-mini", "</s>",
    "wss://my-project-a1b2c3.livekit.cloud", "https://example.com/a/VeryLongPathSegmentWithMixedCase123456",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "123e4567-e89b-12d3-a456-426614174000",
    "ThisIsAVeryLongCamelCaseIdentifier2024", "getUserMediaStreamTrackAudioLevel2ForTheMic",
    "HTTPServerErrorRetryPolicyV2ForXMLAPIs1", "Mozilla5WindowsNTWin64x64AppleWebKit537",
    "test_hook_past_the_timeout_is_cut_off_and_the_process_killed_in_time", "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE",
    "APIConnectionError", "APIStatusErrorX", "RM_a1B2c3D4e5F6", "PA_xYz123AbC456", "nbagents-demo-3fa9c1",
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
]


def test_the_shape_test_finds_generated_credentials_and_leaves_ordinary_text_alone():
    rng = random.Random(20240612)  # fixed: the rates below are of these samples, not a chance
    base62 = string.ascii_letters + string.digits
    urlsafe = base62 + "-_"
    secrets_43 = ["".join(rng.choice(base62) for _ in range(43)) for _ in range(2000)]
    secrets_urlsafe = ["".join(rng.choice(urlsafe) for _ in range(43)) for _ in range(2000)]
    keys = ["API" + "".join(rng.choice(base62) for _ in range(12)) for _ in range(2000)]

    def found(values: list[str], kind: str) -> float:
        return sum(1 for v in values if [h.kind for h in find_shapes(f'x = "{v}"')] == [kind]) / len(values)

    assert found(secrets_43, SECRET) >= 0.97  # livekit-server generate-keys: 32 bytes in base62
    assert found(secrets_urlsafe, SECRET) >= 0.97  # nbagents' embedded server: token_urlsafe(32)
    assert found(keys, KEY) >= 0.97
    assert [h.kind for h in find_shapes(JWT)] == [TOKEN]
    for text in ORDINARY:
        assert not find_shapes(text), text
    assert not find_shapes(" ".join(ORDINARY))
