"""Which string literals of a notebook's code are credentials: follow every literal through the code to the
places that take a LiveKit key, secret or token.

The analysis is an abstract interpretation of the cells as one module (the notebook's namespace), flow-
insensitive and run to a fixed point: a name, an attribute (by attribute name), a function parameter or a
function's return value stands for every literal that may reach it, anywhere in the notebook. Dicts, tuples
and lists keep their constant keys and positions, so ``creds["secret"]`` or ``key, secret = pair`` follow
the right element. Literals pass through f-strings, ``+``/``%``, ``str.format``/``join``, string methods,
``str()``/``bytes()``/base64, ``or``/``if``-``else``, walrus, unpacking, ``global``, default values, calls to
the notebook's own functions and methods (arguments to parameters, ``return`` back) and class bodies.
Reading the environment (``os.environ[...]``, ``os.getenv(name)``) carries no literal; a default does
(``os.getenv("LIVEKIT_API_SECRET", "secret")``). Calls the analysis does not know return nothing.

Where a literal becomes a credential (a *sink*):
- the key/secret parameters of livekit-api's ``AccessToken``, ``TokenVerifier``, ``LiveKitAPI`` and the
  service clients (``RoomService``, ``EgressService``, ...), by position or keyword; ``LiveKitAPI(token=)``;
  nbagents' ``Credentials(url, key, secret)`` and ``sim.join(credentials=(url, key, secret))``;
- any keyword argument, parameter default, variable, attribute or dict key named like a credential
  (``api_key``, ``api_secret``, ``LIVEKIT_API_SECRET``, ``client_secret``... see ``_shapes.credential_name``);
- the environment: ``os.environ[NAME] = ``, ``os.environ.update/setdefault``, ``os.environ |=``,
  ``os.putenv``, ``dotenv.set_key`` and ``env=`` mappings, for a credential variable name
  (``LIVEKIT_API_SECRET``, ``*_API_KEY``, ``*_TOKEN``... see ``_shapes.credential_env``);
- ``%env NAME value`` and argument lists that follow ``--api-key``/``--api-secret``.
A literal without a letter or digit is never a credential (the empty string makes livekit-api read the
environment; separators and padding hold nothing), nor one with spaces inside: keys, secrets and tokens
are one word, a sentence is a description.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nbagents.export import _shapes
from nbagents.export._shapes import KEY, SECRET, TOKEN

# livekit-api's constructors: position -> parameter (livekit-api 1.x signatures).
_SERVICE = {2: "api_key", 3: "api_secret"}  # (session, url, api_key, api_secret)
LIVEKIT_POSITIONAL_SINKS: dict[str, dict[int, str]] = {
    "AccessToken": {0: "api_key", 1: "api_secret"},
    "TokenVerifier": {0: "api_key", 1: "api_secret"},
    "LiveKitAPI": {1: "api_key", 2: "api_secret"},
    "RoomService": _SERVICE,
    "EgressService": _SERVICE,
    "IngressService": _SERVICE,
    "SipService": _SERVICE,
    "AgentDispatchService": _SERVICE,
    "ConnectorService": _SERVICE,
}
NBAGENTS_POSITIONAL_SINKS: dict[str, dict[int, str]] = {"Credentials": {1: "api_key", 2: "api_secret"}}
_KIND_OF_PARAM = {"api_key": KEY, "api_secret": SECRET, "token": TOKEN}

_ENVIRON = frozenset({"os.environ", "os.environb", "environ"})
_ENV_READS = frozenset({"os.getenv", "getenv", "os.environ.get", "environ.get", "os.getenvb"})
_TRANSPARENT_FUNCTIONS = frozenset({
    "str", "bytes", "bytearray", "b64decode", "b64encode", "urlsafe_b64decode", "urlsafe_b64encode",
    "b32decode", "b16decode", "unhexlify", "a2b_hex", "fromhex", "dedent", "format", "repr",
})
_STRING_METHODS = frozenset({
    "strip", "lstrip", "rstrip", "lower", "upper", "casefold", "title", "capitalize", "swapcase", "encode",
    "decode", "replace", "removeprefix", "removesuffix", "zfill", "ljust", "rjust", "center", "expandtabs",
    "split", "rsplit", "splitlines", "partition", "rpartition", "translate", "copy", "items", "values",
})
_COMBINING_METHODS = frozenset({"format", "format_map", "join"})


@dataclass(frozen=True)
class Source:
    """A string literal (or the credential-looking part of one) in an analysed unit; lines are 1-based."""

    unit: int
    line: int
    col: int
    value: str


@dataclass(frozen=True)
class Finding:
    source: Source
    kind: str  # _shapes.KEY / SECRET / TOKEN
    how: str  # completes "a literal ..."
    sink_unit: int | None = None
    sink_line: int | None = None


class Val:
    """What a value may hold: literals at unknown positions, and known fields (dict keys, tuple indices)."""

    __slots__ = ("lits", "fields")

    def __init__(self, lits: Iterable[Source] = (), fields: dict[Any, Val] | None = None) -> None:
        self.lits = frozenset(lits)
        self.fields = fields or {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Val) and self.lits == other.lits and self.fields == other.fields

    __hash__ = None  # type: ignore[assignment]

    def join(self, other: Val) -> Val:
        if not other.lits and not other.fields:
            return self
        if not self.lits and not self.fields:
            return other
        fields = dict(self.fields)
        for key, value in other.fields.items():
            fields[key] = fields[key].join(value) if key in fields else value
        return Val(self.lits | other.lits, fields)

    def flat(self) -> frozenset[Source]:
        out = set(self.lits)
        for value in self.fields.values():
            out |= value.flat()
        return frozenset(out)

    def flattened(self) -> Val:
        return Val(self.flat()) if self.fields else self

    def bounded(self, depth: int = 4) -> Val:
        """Fields nested deeper than ``depth`` folded into literals: values built in a loop
        (``x = {"a": x}``) stay finite, so the analysis reaches its fixed point."""
        if not self.fields:
            return self
        if depth == 0:
            return Val(self.flat())
        return Val(self.lits, {k: v.bounded(depth - 1) for k, v in self.fields.items()})

    def get(self, key: Any) -> Val:
        """The value at a constant key or index (literals of unknown position included)."""
        own = Val(self.lits)
        return own.join(self.fields[key]) if key in self.fields else own


EMPTY = Val()


class _Scope:
    def __init__(self, kind: str, parent: _Scope | None, function: ast.AST | None = None) -> None:
        self.kind = kind  # "module", "function" or "class"
        self.parent = parent
        self.function = function
        self.names: dict[str, Val] = {}
        self.global_names: set[str] = set()
        self.nonlocal_names: set[str] = set()


def _const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class DataFlow:
    """Run over units (each an ``ast.Module``, numbered by the caller) that share one module namespace."""

    MAX_PASSES = 25

    def __init__(self) -> None:
        self.module = _Scope("module", None)
        self.scopes: dict[int, _Scope] = {}
        self.attrs: dict[str, Val] = {}
        self.returns: dict[int, Val] = {}
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.methods: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.imports: dict[str, str] = {}
        self.user_defined: set[str] = set()
        self.findings: dict[tuple[Source, str], Finding] = {}
        self.changed = False
        self.unit = 0

    # -- driving -------------------------------------------------------------------------------------

    def run(self, units: list[tuple[int, ast.Module]]) -> list[Finding]:
        for unit, tree in units:
            self.unit = unit
            self._declare(tree)
        for _ in range(self.MAX_PASSES):
            self.changed = False
            for unit, tree in units:
                self.unit = unit
                self._block(tree.body, self.module)
            if not self.changed:
                break
        for unit, tree in units:
            self.unit = unit
            self._literal_shapes(tree)
        return list(self.findings.values())

    def _declare(self, tree: ast.Module) -> None:
        """Imports, functions and classes first, so calls resolve whatever the cell order."""
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._import(node)
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
                self.user_defined.add(node.name)
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.methods.setdefault(item.name, []).append(item)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)
                self.user_defined.add(node.name)

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    self.imports[root] = root
        elif node.level == 0 and node.module:
            for alias in node.names:
                if alias.name != "*":
                    self.imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    # -- findings ------------------------------------------------------------------------------------

    def _source(self, node: ast.AST, value: str) -> Source:
        return Source(self.unit, getattr(node, "lineno", 1), getattr(node, "col_offset", 0), value)

    def _add(self, finding: Finding) -> None:
        self.findings.setdefault((finding.source, finding.kind), finding)

    def _sink(self, value: Val, kind: str, how: str, at: ast.AST) -> None:
        for source in value.flat():
            self._add(Finding(source, kind, how, self.unit, getattr(at, "lineno", None)))

    def _env_sink(self, names: Iterable[str], value: Val, at: ast.AST) -> None:
        for name in names:
            kind = _shapes.credential_env(name)
            if kind:
                self._sink(value, kind, f"sets the environment variable {name}", at)

    def _env_mapping_sink(self, mapping: Val, at: ast.AST) -> None:
        for key, value in mapping.fields.items():
            if isinstance(key, str):
                self._env_sink([key], value, at)

    def _literal_shapes(self, tree: ast.Module) -> None:
        """Literals that look like a credential, or whose text sets one (``"LIVEKIT_API_SECRET=..."``)."""
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, (str, bytes)):
                continue
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            for hit in _shapes.find_shapes(text):
                self._add(Finding(self._source(node, text[hit.start:hit.end]), hit.kind, hit.describe()))
            for t in _shapes.find_text_credentials(text):
                self._add(Finding(self._source(node, t.value), t.kind, f"gives {t.name} a value in its text"))

    # -- names ---------------------------------------------------------------------------------------

    def _store_scope(self, scope: _Scope, name: str) -> _Scope:
        if name in scope.global_names:
            return self.module
        if name in scope.nonlocal_names:
            outer = scope.parent
            while outer is not None and (outer.kind == "class" or name not in outer.names) and outer.parent:
                outer = outer.parent
            return outer or self.module
        return scope

    def _lookup(self, scope: _Scope, name: str) -> Val:
        if name in scope.global_names:
            return self.module.names.get(name, EMPTY)
        current: _Scope | None = scope
        first = True
        while current is not None:
            if (first or current.kind != "class") and name in current.names:
                return current.names[name]
            first = False
            current = current.parent
        return EMPTY

    def _join_into(self, table: dict, key: Any, value: Val) -> None:
        old = table.get(key, EMPTY)
        new = old.join(value).bounded()
        if new != old:
            table[key] = new
            self.changed = True

    def _qualname(self, node: ast.AST) -> tuple[str | None, bool]:
        """The dotted name a callee resolves to through the notebook's imports, and whether it resolved."""
        if isinstance(node, ast.Name):
            if node.id in self.imports:
                return self.imports[node.id], True
            return node.id, False
        if isinstance(node, ast.Attribute):
            base, resolved = self._qualname(node.value)
            return (f"{base}.{node.attr}", resolved) if base else (None, False)
        return None, False

    def _names_of(self, node: ast.AST | None, scope: _Scope) -> set[str]:
        """The strings an expression may be (for environment variable names given through a variable)."""
        if node is None:
            return set()
        const = _const_str(node)
        if const is not None:
            return {const}
        return {s.value for s in self._eval(node, scope).flat()}

    # -- statements ----------------------------------------------------------------------------------

    def _block(self, body: list[ast.stmt], scope: _Scope) -> None:
        for stmt in body:
            self._stmt(stmt, scope)

    def _function_scope(self, node: ast.AST, parent: _Scope, kind: str = "function") -> _Scope:
        scope = self.scopes.get(id(node))
        if scope is None:
            scope = self.scopes[id(node)] = _Scope(kind, parent, node if kind == "function" else None)
        return scope

    def _parameters(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, scope: _Scope,
                    inner: _Scope) -> None:
        args = node.args
        positional = args.posonlyargs + args.args
        for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
            self._bind_parameter(arg.arg, self._eval(default, scope), inner, default)
        for arg, default in zip(args.kwonlyargs, args.kw_defaults):
            if default is not None:
                self._bind_parameter(arg.arg, self._eval(default, scope), inner, default)

    def _bind_parameter(self, name: str, value: Val, inner: _Scope, at: ast.AST) -> None:
        self._join_into(inner.names, name, value)
        kind = _shapes.credential_name(name)
        if kind:
            self._sink(value, kind, f"is the value of the parameter `{name}`", at)

    def _stmt(self, stmt: ast.stmt, scope: _Scope) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in stmt.decorator_list:
                self._eval(decorator, scope)
            inner = self._function_scope(stmt, scope)
            self._parameters(stmt, scope, inner)
            self._store_scope(scope, stmt.name).names.setdefault(stmt.name, EMPTY)
            self._block(stmt.body, inner)
        elif isinstance(stmt, ast.ClassDef):
            for expr in [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]:
                self._eval(expr, scope)
            self._block(stmt.body, self._function_scope(stmt, scope, "class"))
        elif isinstance(stmt, ast.Return):
            if stmt.value is not None:
                value = self._eval(stmt.value, scope)
                function = self._enclosing_function(scope)
                if function is not None:
                    self._join_into(self.returns, id(function), value)
        elif isinstance(stmt, ast.Assign):
            value = self._eval(stmt.value, scope)
            for target in stmt.targets:
                self._bind(target, value, scope, stmt)
        elif isinstance(stmt, ast.AugAssign):
            value = self._eval(stmt.value, scope)
            qual, _ = self._qualname(stmt.target)
            if qual in _ENVIRON:
                self._env_mapping_sink(value, stmt)
                return
            self._bind(stmt.target, self._eval_target(stmt.target, scope).join(value).flattened(), scope, stmt)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self._bind(stmt.target, self._eval(stmt.value, scope), scope, stmt)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self._bind(stmt.target, Val(self._eval(stmt.iter, scope).flat()), scope, stmt)
            self._block(stmt.body, scope)
            self._block(stmt.orelse, scope)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self._eval(item.context_expr, scope)
            self._block(stmt.body, scope)
        elif isinstance(stmt, ast.Global):
            scope.global_names.update(stmt.names)
        elif isinstance(stmt, ast.Nonlocal):
            scope.nonlocal_names.update(stmt.names)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            self._import(stmt)
        else:  # if/while/try/match/expr/raise/assert/delete...: every expression, every nested block
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self._eval(child, scope)
                elif isinstance(child, ast.stmt):
                    self._stmt(child, scope)
                elif isinstance(child, (ast.excepthandler, ast.match_case)):
                    for grandchild in ast.iter_child_nodes(child):
                        if isinstance(grandchild, ast.stmt):
                            self._stmt(grandchild, scope)
                        elif isinstance(grandchild, ast.expr):
                            self._eval(grandchild, scope)

    def _enclosing_function(self, scope: _Scope) -> ast.AST | None:
        current: _Scope | None = scope
        while current is not None and current.kind != "function":
            current = current.parent
        return current.function if current else None

    def _eval_target(self, target: ast.expr, scope: _Scope) -> Val:
        return self._eval(target, scope) if isinstance(target, (ast.Name, ast.Attribute, ast.Subscript)) else EMPTY

    def _bind(self, target: ast.expr, value: Val, scope: _Scope, at: ast.AST) -> None:
        if isinstance(target, ast.Name):
            store = self._store_scope(scope, target.id)
            self._join_into(store.names, target.id, value)
            if store.kind == "class":
                self._join_into(self.attrs, target.id, value)
            kind = _shapes.credential_name(target.id)
            if kind:
                self._sink(value, kind, f"is assigned to `{target.id}`", at)
        elif isinstance(target, ast.Attribute):
            self._eval(target.value, scope)
            self._join_into(self.attrs, target.attr, value)
            kind = _shapes.credential_name(target.attr)
            if kind:
                self._sink(value, kind, f"is assigned to the attribute `{target.attr}`", at)
        elif isinstance(target, ast.Subscript):
            qual, _ = self._qualname(target.value)
            if qual in _ENVIRON:
                self._env_sink(self._names_of(target.slice, scope), value, at)
                return
            self._eval(target.slice, scope)
            key = target.slice.value if isinstance(target.slice, ast.Constant) else None
            if isinstance(key, str):
                kind = _shapes.credential_name(key)
                if kind:
                    self._sink(value, kind, f"is stored under the key {key!r}", at)
            if isinstance(target.value, ast.Name):
                store = self._store_scope(scope, target.value.id)
                container = Val(fields={key: value}) if key is not None else value.flattened()
                self._join_into(store.names, target.value.id, container)
            else:
                self._eval(target.value, scope)
        elif isinstance(target, (ast.Tuple, ast.List)):
            starred = False
            for index, element in enumerate(target.elts):
                if isinstance(element, ast.Starred):
                    starred = True
                    self._bind(element.value, value.flattened(), scope, at)
                elif starred or index not in value.fields:
                    self._bind(element, value.flattened() if not value.fields else value.get(index), scope, at)
                else:
                    self._bind(element, value.get(index), scope, at)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, value.flattened(), scope, at)

    # -- expressions ---------------------------------------------------------------------------------

    def _eval(self, node: ast.expr, scope: _Scope) -> Val:  # noqa: C901 - one case per expression type
        if isinstance(node, ast.Constant):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if isinstance(text, str) and any(c.isalnum() for c in text) and len(text.split()) == 1:
                return Val({self._source(node, text)})
            # "" makes livekit-api read the environment; "-" or b"\0" hold nothing; a key, secret or token is
            # one word, so a literal with spaces in it is text ("Your API key from the dashboard")
            return EMPTY
        if isinstance(node, ast.JoinedStr):
            out = EMPTY
            for part in node.values:
                out = out.join(self._eval(part, scope).flattened())
            return out
        if isinstance(node, ast.FormattedValue):
            return self._eval(node.value, scope)
        if isinstance(node, ast.Name):
            return self._lookup(scope, node.id) if isinstance(node.ctx, ast.Load) else EMPTY
        if isinstance(node, ast.Attribute):
            self._eval(node.value, scope)
            return self.attrs.get(node.attr, EMPTY)
        if isinstance(node, ast.Subscript):
            qual, _ = self._qualname(node.value)
            if qual in _ENVIRON:
                self._eval(node.slice, scope)
                return EMPTY
            container = self._eval(node.value, scope)
            self._eval(node.slice, scope)
            if isinstance(node.slice, ast.Constant) and container.fields:
                return container.get(node.slice.value)
            return container.flattened()
        if isinstance(node, ast.Dict):
            return self._dict(node, scope)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return self._sequence(node, scope)
        if isinstance(node, ast.BinOp):
            return self._eval(node.left, scope).flattened().join(self._eval(node.right, scope).flattened())
        if isinstance(node, ast.BoolOp):
            out = EMPTY
            for value in node.values:
                out = out.join(self._eval(value, scope))
            return out
        if isinstance(node, ast.IfExp):
            self._eval(node.test, scope)
            return self._eval(node.body, scope).join(self._eval(node.orelse, scope))
        if isinstance(node, ast.NamedExpr):
            value = self._eval(node.value, scope)
            self._bind(node.target, value, scope, node)
            return value
        if isinstance(node, (ast.Await, ast.Starred, ast.YieldFrom)):
            return self._eval(node.value, scope)
        if isinstance(node, ast.Yield):
            if node.value is not None:
                value = self._eval(node.value, scope)
                function = self._enclosing_function(scope)
                if function is not None:
                    self._join_into(self.returns, id(function), value)
            return EMPTY
        if isinstance(node, ast.Lambda):
            inner = self._function_scope(node, scope)
            self._parameters(node, scope, inner)
            self._join_into(self.returns, id(node), self._eval(node.body, inner))
            return EMPTY
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for generator in node.generators:
                self._bind(generator.target, Val(self._eval(generator.iter, scope).flat()), scope, node)
                for condition in generator.ifs:
                    self._eval(condition, scope)
            if isinstance(node, ast.DictComp):
                self._eval(node.key, scope)
                return Val(self._eval(node.value, scope).flat())
            return Val(self._eval(node.elt, scope).flat())
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        for child in ast.iter_child_nodes(node):  # Compare, UnaryOp, Slice...: evaluated for their calls
            if isinstance(child, ast.expr):
                self._eval(child, scope)
        return EMPTY

    def _dict(self, node: ast.Dict, scope: _Scope) -> Val:
        out = Val()
        lits: set[Source] = set()
        fields: dict[Any, Val] = {}
        for key_node, value_node in zip(node.keys, node.values):
            value = self._eval(value_node, scope)
            if key_node is None:  # {**other}
                lits |= value.lits
                for key, field_value in value.fields.items():
                    fields[key] = fields[key].join(field_value) if key in fields else field_value
                continue
            self._eval(key_node, scope)
            if isinstance(key_node, ast.Constant) and isinstance(key_node.value, (str, int)):
                key = key_node.value
                fields[key] = fields[key].join(value) if key in fields else value
                if isinstance(key, str):
                    kind = _shapes.credential_name(key)
                    if kind:
                        self._sink(value, kind, f"is the value of the key {key!r}", value_node)
            else:
                lits |= value.flat()
        return out.join(Val(lits, fields))

    def _sequence(self, node: ast.Tuple | ast.List | ast.Set, scope: _Scope) -> Val:
        lits: set[Source] = set()
        fields: dict[Any, Val] = {}
        positional = not isinstance(node, ast.Set)
        values = []
        for element in node.elts:
            value = self._eval(element, scope)
            values.append(value)
            if isinstance(element, ast.Starred):
                positional = False
                lits |= value.flat()
            elif positional:
                fields[len(fields)] = value
            else:
                lits |= value.flat()
        # ["lk", "token", "create", "--api-secret", SECRET]: a command line
        for flag_node, value in zip(node.elts, values[1:]):
            flag = _const_str(flag_node)
            if flag in ("--api-key", "--api-secret", "--api_key", "--api_secret"):
                self._sink(value, KEY if "key" in flag else SECRET, f"follows {flag} in a command line", flag_node)
        return Val(lits, fields)

    # -- calls ---------------------------------------------------------------------------------------

    def _call(self, node: ast.Call, scope: _Scope) -> Val:  # noqa: C901 - one case per known callee
        func = node.func
        receiver = self._eval(func.value, scope) if isinstance(func, ast.Attribute) else EMPTY
        if not isinstance(func, (ast.Name, ast.Attribute)):
            self._eval(func, scope)
        args: list[Val] = []
        positions_known = True
        positional: list[Val] = []
        for arg in node.args:
            value = self._eval(arg, scope)
            args.append(value)
            if isinstance(arg, ast.Starred):
                if positions_known and value.fields and not value.lits:
                    positional.extend(value.get(i) for i in range(len(value.fields)))
                positions_known = False
            elif positions_known:
                positional.append(value)
        keywords: dict[str, Val] = {}
        double_star: list[Val] = []
        for keyword in node.keywords:
            value = self._eval(keyword.value, scope)
            if keyword.arg is None:
                double_star.append(value)
            else:
                keywords[keyword.arg] = value
        qual, resolved = self._qualname(func)
        last = qual.rsplit(".", 1)[-1] if qual else (func.attr if isinstance(func, ast.Attribute) else None)
        shown = f"`{qual or last}(...)`"

        # keyword arguments named like credentials, whatever the callee
        for name, value in keywords.items():
            kind = _shapes.credential_name(name)
            if kind:
                self._sink(value, kind, f"is passed as {name}= to {shown}", node)
        for mapping in double_star:
            for key, value in mapping.fields.items():
                kind = _shapes.credential_name(key) if isinstance(key, str) else None
                if kind:
                    self._sink(value, kind, f"is passed as {key}= (in **kwargs) to {shown}", node)
        if "env" in keywords:
            self._env_mapping_sink(keywords["env"], node)

        # livekit-api's and nbagents' constructors, by position
        table = self._positional_sinks(qual, resolved)
        if table:
            for index, parameter in table.items():
                if index < len(positional):
                    self._sink(positional[index], _KIND_OF_PARAM[parameter],
                               f"reaches the {parameter} of {shown}", node)
                for mapping in double_star:
                    if parameter in mapping.fields:
                        self._sink(mapping.fields[parameter], _KIND_OF_PARAM[parameter],
                                   f"reaches the {parameter} of {shown}", node)
            if last == "LiveKitAPI" and "token" in keywords:
                self._sink(keywords["token"], TOKEN, f"is passed as token= to {shown}", node)
        if last == "join" and qual and qual.startswith(("nbagents.sim", "sim.")) and "credentials" in keywords:
            credentials = keywords["credentials"]
            self._sink(credentials.get(1), KEY, f"is the api_key in credentials= of {shown}", node)
            self._sink(credentials.get(2), SECRET, f"is the api_secret in credentials= of {shown}", node)

        # the environment
        if qual in ("os.putenv", "putenv") or (last == "setdefault" and self._is_environ(func)):
            if len(node.args) >= 2:
                self._env_sink(self._names_of(node.args[0], scope), args[1], node)
        elif last == "update" and self._is_environ(func):
            for value in args:
                self._env_mapping_sink(value, node)
            for name, value in keywords.items():
                self._env_sink([name], value, node)
        elif last == "set_key" and qual and (qual.startswith("dotenv") or not resolved) and len(node.args) >= 3:
            self._env_sink(self._names_of(node.args[1], scope), args[2], node)
        elif last == "run_line_magic" and len(node.args) == 2 and _const_str(node.args[0]) in ("env", "set_env"):
            text = _const_str(node.args[1]) or ""
            for hit in _shapes.find_text_credentials(text, spaced_assignments=True):
                self._add(Finding(self._source(node.args[1], hit.value), hit.kind, f"gives {hit.name} a value (%env)"))
        elif last == "setattr" and len(node.args) == 3:
            name = _const_str(node.args[1])
            if name:
                self._join_into(self.attrs, name, args[2])
                kind = _shapes.credential_name(name)
                if kind:
                    self._sink(args[2], kind, f"is assigned to the attribute `{name}`", node)

        # what the call returns
        if qual in _ENV_READS:
            return args[1] if len(args) > 1 else keywords.get("default", EMPTY)
        if isinstance(func, ast.Name) and func.id in self.functions:
            return self._call_user(self.functions[func.id], positional, keywords, double_star, skip_self=False)
        if isinstance(func, ast.Name) and func.id in self.classes:
            inits = [m for m in self.methods.get("__init__", []) if m in self.classes[func.id].body]
            self._call_user(inits, positional, keywords, double_star, skip_self=True)
            return EMPTY
        if isinstance(func, ast.Attribute):
            if func.attr in self.methods:
                return self._call_user(self.methods[func.attr], positional, keywords, double_star, skip_self=True)
            if func.attr in ("get", "pop", "setdefault") and not self._is_environ(func):
                key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                found = receiver.get(key) if key is not None else receiver.flattened()
                return found.join(args[1]) if len(args) > 1 else found
            if func.attr in _COMBINING_METHODS:
                out = receiver.flattened()
                for value in [*args, *keywords.values()]:
                    out = out.join(value.flattened())
                return out
            if func.attr in _STRING_METHODS:
                return receiver if func.attr in ("copy", "items", "values") else receiver.flattened()
        if last in _TRANSPARENT_FUNCTIONS and args:
            return args[0].flattened()
        return EMPTY

    def _is_environ(self, func: ast.AST) -> bool:
        return isinstance(func, ast.Attribute) and self._qualname(func.value)[0] in _ENVIRON

    def _positional_sinks(self, qual: str | None, resolved: bool) -> dict[int, str] | None:
        if not qual:
            return None
        root, last = qual.split(".", 1)[0], qual.rsplit(".", 1)[-1]
        if last in LIVEKIT_POSITIONAL_SINKS and (root == "livekit" or (not resolved and root not in self.user_defined)):
            return LIVEKIT_POSITIONAL_SINKS[last]
        if last in NBAGENTS_POSITIONAL_SINKS and resolved and root == "nbagents":
            return NBAGENTS_POSITIONAL_SINKS[last]
        return None

    def _call_user(self, definitions: list, positional: list[Val], keywords: dict[str, Val],
                   double_star: list[Val], *, skip_self: bool) -> Val:
        """Arguments flow to the parameters of the notebook's own function; its returns flow back."""
        out = EMPTY
        for definition in definitions:
            inner = self.scopes.get(id(definition))
            if inner is None:
                continue  # not visited yet (a later pass binds it)
            params = definition.args.posonlyargs + definition.args.args
            if skip_self and params:
                params = params[1:]
            for param, value in zip(params, positional):
                self._join_into(inner.names, param.arg, value)
            if definition.args.vararg is not None and len(positional) > len(params):
                rest = EMPTY
                for value in positional[len(params):]:
                    rest = rest.join(value.flattened())
                self._join_into(inner.names, definition.args.vararg.arg, rest)
            names = {p.arg for p in params + definition.args.kwonlyargs}
            for name, value in keywords.items():
                if name in names:
                    self._join_into(inner.names, name, value)
                elif definition.args.kwarg is not None:
                    self._join_into(inner.names, definition.args.kwarg.arg, Val(fields={name: value}))
            for mapping in double_star:
                for key, value in mapping.fields.items():
                    if key in names:
                        self._join_into(inner.names, key, value)
            out = out.join(self.returns.get(id(definition), EMPTY))
        return out


def analyse_units(units: list[tuple[int, ast.Module]]) -> list[Finding]:
    """Every credential among the literals of ``units`` (analysed as one namespace)."""
    return DataFlow().run(units)


__all__ = ["EMPTY", "DataFlow", "Finding", "Source", "Val", "analyse_units"]
