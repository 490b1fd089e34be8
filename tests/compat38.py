"""A static check that a Python file runs on Python 3.8 with the standard library only.

``scripts/hbc_mini.py`` promises Python 3.8+ and no third-party packages; this
module is how the tests hold it to that. It parses the source with
``feature_version=(3, 8)`` (new syntax: ``match``, ``except*``, ...) and walks
the tree for what the 3.8 parser accepts but the 3.8 runtime does not have:
imports outside the 3.8 standard library, methods and functions added later
(``str.removeprefix``, ``math.lcm``...), new keyword arguments (``zip(strict=)``),
``dict | dict`` and ``int | str`` at run time, ``list[int]`` generics outside
annotations, and relaxed decorators. Annotations are skipped only when the file
has ``from __future__ import annotations`` (they are never evaluated then).
"""

from __future__ import annotations

import ast
import sys

__all__ = ["problems"]

# Standard-library modules that did not exist in 3.8.
NEW_MODULES = {"zoneinfo": "3.9", "graphlib": "3.9", "tomllib": "3.11", "_zoneinfo": "3.9"}

# Attribute names that only exist from a later version (on the types that matter here).
NEW_ATTRIBUTES = {
    "removeprefix": "str.removeprefix (3.9)",
    "removesuffix": "str.removesuffix (3.9)",
    "waitstatus_to_exitcode": "os.waitstatus_to_exitcode (3.9)",
    "pidfd_open": "os.pidfd_open (3.9)",
    "to_thread": "asyncio.to_thread (3.9)",
    "randbytes": "random.randbytes (3.9)",
    "is_relative_to": "PurePath.is_relative_to (3.9)",
    "with_stem": "PurePath.with_stem (3.9)",
    "unparse": "ast.unparse (3.9)",
    "lcm": "math.lcm (3.9)",
    "nextafter": "math.nextafter (3.9)",
    "ulp": "math.ulp (3.9)",
    "pairwise": "itertools.pairwise (3.10)",
    "bit_count": "int.bit_count (3.10)",
    "freedesktop_os_release": "platform.freedesktop_os_release (3.10)",
    "stdlib_module_names": "sys.stdlib_module_names (3.10)",
    "orig_argv": "sys.orig_argv (3.10)",
    "batched": "itertools.batched (3.12)",
    "TaskGroup": "asyncio.TaskGroup (3.11)",
    "cbrt": "math.cbrt (3.11)",
    "exp2": "math.exp2 (3.11)",
    "TypeAlias": "typing.TypeAlias (3.10)",
    "ParamSpec": "typing.ParamSpec (3.10)",
    "Concatenate": "typing.Concatenate (3.10)",
    "TypeGuard": "typing.TypeGuard (3.10)",
    "Self": "typing.Self (3.11)",
    "Never": "typing.Never (3.11)",
    "assert_never": "typing.assert_never (3.11)",
    "Annotated": "typing.Annotated (3.9)",
}
NEW_QUALIFIED = {("functools", "cache"): "functools.cache (3.9)"}
NEW_NAMES = {"anext": "anext() (3.10)", "aiter": "aiter() (3.10)",
             "ExceptionGroup": "ExceptionGroup (3.11)",
             "BaseExceptionGroup": "BaseExceptionGroup (3.11)",
             "EncodingWarning": "EncodingWarning (3.10)"}
# (callable's last name, keyword) pairs added later.
NEW_KEYWORDS = {
    ("zip", "strict"): "zip(strict=) (3.10)",
    ("dataclass", "slots"): "dataclass(slots=) (3.10)",
    ("dataclass", "kw_only"): "dataclass(kw_only=) (3.10)",
    ("Popen", "process_group"): "Popen(process_group=) (3.11)",
    ("run", "process_group"): "subprocess.run(process_group=) (3.11)",
    ("glob", "root_dir"): "glob(root_dir=) (3.10)",
    ("glob", "include_hidden"): "glob(include_hidden=) (3.11)",
    ("basicConfig", "encoding"): "logging.basicConfig(encoding=) (3.9)",
    ("bisect", "key"): "bisect(key=) (3.10)",
    ("bisect_left", "key"): "bisect_left(key=) (3.10)",
    ("bisect_right", "key"): "bisect_right(key=) (3.10)",
    ("insort", "key"): "insort(key=) (3.10)",
}
# Subscriptable at run time only from 3.9 (PEP 585): builtins, and these classes
# unless they come from ``typing`` (whose aliases always were).
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
CLASS_GENERICS = {"Queue", "SimpleQueue", "Popen", "CompletedProcess", "OrderedDict",
                  "defaultdict", "Counter", "deque", "ChainMap", "Pattern", "Match",
                  "PathLike", "Future", "Task", "Callable", "Iterable", "Iterator",
                  "Mapping", "Sequence", "MutableMapping", "Generator", "Awaitable"}
TYPE_NAMES = {"int", "str", "float", "bool", "bytes", "list", "dict", "tuple", "set",
              "frozenset", "type", "object"}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_dict(node: ast.AST) -> bool:
    return isinstance(node, ast.Dict | ast.DictComp) or (
        isinstance(node, ast.Call) and _name(node.func) == "dict")


def _is_type(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name) and node.id in TYPE_NAMES:
        return True
    if isinstance(node, ast.Subscript):
        return True
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and (
        _is_type(node.left) or _is_type(node.right))


def _plain_decorator(node: ast.AST) -> bool:
    """3.8 decorators: a dotted name, optionally called once (PEP 614 relaxed it in 3.9)."""
    if isinstance(node, ast.Call):
        node = node.func
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


class _Checker(ast.NodeVisitor):
    def __init__(self, lazy_annotations: bool) -> None:
        self.lazy = lazy_annotations
        self.found: list[str] = []
        self.imported_from: dict[str, str] = {}

    def report(self, node: ast.AST, text: str) -> None:
        self.found.append(f"line {getattr(node, 'lineno', '?')}: {text}")

    # Annotations are not evaluated under `from __future__ import annotations`.
    def visit_arg(self, node: ast.arg) -> None:
        if node.annotation is not None and not self.lazy:
            self.visit(node.annotation)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if not self.lazy:
            self.visit(node.annotation)
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            if not _plain_decorator(decorator):
                self.report(decorator, "decorator expression (3.9)")
            self.visit(decorator)
        self.visit(node.args)
        if node.returns is not None and not self.lazy:
            self.visit(node.returns)
        for statement in node.body:
            self.visit(statement)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            if not _plain_decorator(decorator):
                self.report(decorator, "decorator expression (3.9)")
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.report(node, "relative import (a single file has no package)")
        elif node.module:
            self._module(node, node.module)
            for alias in node.names:
                self.imported_from[alias.asname or alias.name] = node.module

    def _module(self, node: ast.AST, dotted: str) -> None:
        top = dotted.split(".", maxsplit=1)[0]
        if top in NEW_MODULES:
            self.report(node, f"module {top} ({NEW_MODULES[top]})")
        elif top != "__future__" and top not in sys.stdlib_module_names:
            self.report(node, f"module {top} is not in the standard library")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in NEW_ATTRIBUTES:
            self.report(node, NEW_ATTRIBUTES[node.attr])
        owner = _name(node.value)
        if owner is not None and (owner, node.attr) in NEW_QUALIFIED:
            self.report(node, NEW_QUALIFIED[owner, node.attr])
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in NEW_NAMES:
            self.report(node, NEW_NAMES[node.id])

    def visit_Call(self, node: ast.Call) -> None:
        callee = _name(node.func)
        for keyword in node.keywords:
            if (callee, keyword.arg) in NEW_KEYWORDS:
                self.report(node, NEW_KEYWORDS[callee, keyword.arg])
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.BitOr):
            if _is_dict(node.left) or _is_dict(node.right):
                self.report(node, "dict | dict (3.9)")
            elif _is_type(node.left) or _is_type(node.right):
                self.report(node, "X | Y union of types at run time (3.10)")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.op, ast.BitOr) and _is_dict(node.value):
            self.report(node, "dict |= dict (3.9)")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        value = node.value
        if isinstance(value, ast.Name):
            generic = value.id in BUILTIN_GENERICS or (
                value.id in CLASS_GENERICS and value.id in self.imported_from
                and self.imported_from[value.id] != "typing")
        else:
            generic = isinstance(value, ast.Attribute) and value.attr in CLASS_GENERICS \
                and _name(value.value) != "typing"
        if generic:
            self.report(node, f"{_name(value)}[...] at run time (3.9)")
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        if type(node).__name__ in ("Match", "TryStar", "TypeAlias"):
            self.report(node, f"{type(node).__name__} statement (3.10+)")
        super().generic_visit(node)


def problems(source: str, filename: str = "<source>") -> list[str]:
    """Every reason ``source`` would not run on Python 3.8 with the stdlib; [] if none."""
    try:
        tree = ast.parse(source, filename, feature_version=(3, 8))
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax Python 3.8 does not have: {e.msg}"]
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body)
    checker = _Checker(lazy)
    checker.visit(tree)
    return checker.found
