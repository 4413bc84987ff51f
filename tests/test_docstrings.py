"""Every public function, method and class of fedkit has a NumPy-style docstring that documents its parameters.

"Public" is what the docs site documents (docs/_ext/fedkit_docs.py): every module without a ``_``-prefixed
part, and in each the functions and classes it defines whose names have no leading ``_``; in each such
class, the methods, class/static methods and properties it defines itself (``__call__`` counts, other
dunders do not). The docstring is parsed with numpydoc's own parser (``numpydoc.docscrape``), the one the
docs build renders it with. Each must

- exist (a method without one may inherit its base's: ``inspect.getdoc``, as autodoc shows it);
- list in ``Parameters`` every parameter of the signature, each with a description. Never ``self``/``cls``;
  ``*args``/``**kwargs`` listed or named somewhere in the text. A class's parameters are those of
  ``cls(...)``: its ``__init__``, or a dataclass's / NamedTuple's fields, documented under ``Parameters``
  like any constructor's (not ``Attributes``); a dataclass field's ``metadata={"help": ...}`` counts (the
  docs render it as the parameter's entry: RunConfig). A Protocol, and a class whose constructor is
  Python's own (an exception's message), has no constructor parameters to list;
- list nothing the signature does not have (stale docs after a rename).

Entries carry no type (``name``, then the indented description): the rendered signature shows the
annotations. A method with the same name and parameters as a method of a protocol in ``CONTRACTS`` (every
strategy's ``aggregate``, every engine's ``fit``...) may leave the contract's parameters to the contract's
docstring. The other exemptions are data (``EXEMPT``), each with its reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

numpydoc_docscrape = pytest.importorskip(
    "numpydoc.docscrape", reason="the docs extra is not installed (make setup installs it)"
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_ext"))
fedkit_docs = pytest.importorskip("fedkit_docs", reason="the docs extra is not installed (make setup installs it)")

FLARE_CALLBACK = "NVIDIA FLARE calls it with the arguments its base class fixes (FLContext, Signal...)"
EXEMPT: dict[str, str] = {
    "fedkit.remote.controller.FedkitController.start_controller": FLARE_CALLBACK,
    "fedkit.remote.controller.FedkitController.stop_controller": FLARE_CALLBACK,
    "fedkit.remote.controller.FedkitController.process_result_of_unknown_task": FLARE_CALLBACK,
    "fedkit.remote.controller.FedkitController.control_flow": FLARE_CALLBACK,
    "fedkit.remote.executor.FedkitExecutor.execute": FLARE_CALLBACK,
}
"""Qualified name -> why its parameters need not be listed (its docstring is still required)."""

CONTRACTS: dict[str, str] = {
    "fedkit.tracking.base.RunStore": "the local store keeps rounds, checkpoints and audit records as the contract says",
    "fedkit.tracking.base.RoundStore": "the local store and the remote relay take rounds and audit records alike",
    "fedkit.strategies.base.Strategy": "every strategy's init / aggregate / local_term take the contract's arguments",
    "fedkit.engines.base.Engine": "the simulation and remote engines' fit / evaluate take the contract's arguments",
    "fedkit.engines.simulation.Trainer": "the vectorized and per-silo trainers implement one contract",
    "fedkit.tracking.base.Tracker": "the local store and the remote tracker receive the same calls",
    "fedkit.tracking.base.Backend": "every remote backend is built and told events the same way",
    "fedkit.privacy.identity.Signer": "an Ed25519 key and a site certificate sign the same way",
    "fedkit.privacy.identity.Verifier": "pinned keys and the federation's CA check signatures the same way",
}
"""Protocols whose methods document the parameters once for every implementation.

A method of the same name and the same parameters as a contract's method counts a parameter its own
docstring does not list as documented there (it still needs its own docstring, saying what it does).
"""

DUNDERS_CHECKED = frozenset({"__call__"})
"""Dunder methods whose parameters a user passes by hand; the others (``__len__``, ``__eq__``...) say nothing new."""


@dataclasses.dataclass(frozen=True)
class Documented:
    """One public callable or class, the docstring it shows and the signature its docstring must match."""

    path: str
    obj: Any
    doc: str
    signature: inspect.Signature | None
    is_class: bool
    help_fields: frozenset[str] = frozenset()
    contract: str = ""


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin or a class whose constructor has no readable signature
        return None


def _constructor(cls: type) -> inspect.Signature | None:
    """What a caller passes to ``cls(...)``; None for a Protocol and when the constructor is Python's own."""
    if getattr(cls, "_is_protocol", False) or not any(
        klass.__module__.startswith("fedkit") and ("__init__" in vars(klass) or "__new__" in vars(klass))
        for klass in cls.__mro__
    ):
        return None
    return _signature(cls)


def _own_members(cls: type) -> Iterator[tuple[str, Any, Callable[..., Any] | None]]:
    """``(name, member, callable whose signature counts)`` for what ``cls`` defines itself."""
    for name, raw in vars(cls).items():
        if name.startswith("_") and name not in DUNDERS_CHECKED:
            continue
        if isinstance(raw, property):
            yield name, raw, None
        elif isinstance(raw, staticmethod | classmethod) or inspect.isfunction(raw):
            yield name, raw, getattr(cls, name)


def _class_doc(cls: type) -> str:
    """The class's own docstring (a class never silently shows its base's, which documents other parameters)."""
    doc = cls.__dict__.get("__doc__")
    if not doc or (dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}(")):
        return ""  # dataclasses write their signature as __doc__ when there is none
    return inspect.cleandoc(doc)


def _help_fields(cls: type) -> frozenset[str]:
    if not dataclasses.is_dataclass(cls):
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("help"))


def public_objects() -> list[Documented]:
    """Every public function, class, method and property of the fedkit package, in module order."""
    modules = sorted(
        set(fedkit_docs.public_modules()) | {obj.__module__ for obj in fedkit_docs.public_names().values()}
    )
    found: list[Documented] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            path = f"{module_name}.{name}"
            if inspect.isclass(obj):
                found.append(Documented(path, obj, _class_doc(obj), _constructor(obj), True, _help_fields(obj)))
                for member_name, member, function in _own_members(obj):
                    member_doc = inspect.getdoc(member if function is None else function) or ""
                    signature = None if function is None else _signature(function)
                    found.append(Documented(f"{path}.{member_name}", member, member_doc, signature, False))
            elif inspect.isfunction(obj):
                found.append(Documented(path, obj, inspect.getdoc(obj) or "", _signature(obj), False))
    contracts = _contract_methods(found)
    return [_with_contract(item, contracts) for item in found]


def _names(signature: inspect.Signature | None) -> tuple[str, ...]:
    return tuple(signature.parameters) if signature is not None else ()


def _contract_methods(found: list[Documented]) -> dict[tuple[str, tuple[str, ...]], Documented]:
    """``(method name, parameter names)`` -> the contract method that documents them."""
    return {
        (item.path.rsplit(".", 1)[1], _names(item.signature)): item
        for item in found
        if item.path.rsplit(".", 1)[0] in CONTRACTS
    }


def _with_contract(item: Documented, contracts: dict[tuple[str, tuple[str, ...]], Documented]) -> Documented:
    if item.is_class or item.path.rsplit(".", 1)[0] in CONTRACTS:
        return item
    match = contracts.get((item.path.rsplit(".", 1)[1], _names(item.signature)))
    return dataclasses.replace(item, contract=match.doc) if match is not None else item


def _listed(doc: str) -> dict[str, str]:
    """Names in the ``Parameters`` section mapped to their descriptions (``a, b : int`` lists two)."""
    parsed = numpydoc_docscrape.NumpyDocString(doc)
    out: dict[str, str] = {}
    for entry in parsed["Parameters"]:
        for name in entry.name.split(","):
            out[name.strip().lstrip("*")] = " ".join(entry.desc).strip()
    return out


def problems(item: Documented) -> list[str]:
    """What is wrong with one object's docstring (empty when nothing is)."""
    if not item.doc.strip():
        return ["has no docstring"]
    try:
        listed = _listed(item.doc)
    except ValueError as exc:  # numpydoc's error for a malformed or repeated section
        return [f"docstring does not parse as NumPy style: {exc}"]
    if item.signature is None:
        return []
    out = []
    params = [p for p in item.signature.parameters.values() if p.name not in {"self", "cls"}]
    names = {p.name for p in params}
    documented = {**_listed(item.contract), **listed} if item.contract else listed
    if item.path not in EXEMPT:
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and (p.name in documented or p.name in item.doc):
                continue
            if p.name in item.help_fields and p.name not in documented:
                continue
            if p.name not in documented:
                out.append(f"parameter {p.name!r} is not in its Parameters section")
            elif not documented[p.name]:
                out.append(f"parameter {p.name!r} has no description")
    out += [f"documents {name!r}, which its signature does not have" for name in listed if name not in names]
    return out


@pytest.fixture(scope="module")
def items() -> list[Documented]:
    """The package's public objects, found once."""
    return public_objects()


def test_the_checker_sees_the_public_api(items: list[Documented]) -> None:
    paths = {item.path for item in items}
    for expected in ["fedkit.api.run", "fedkit.config.RunConfig", "fedkit.result.RunResult.history"]:
        assert expected in paths
    assert not any("._" in path.replace(".__call__", "") for path in paths)


def test_every_exemption_names_a_public_object_and_gives_a_reason(items: list[Documented]) -> None:
    paths = {item.path for item in items}
    for path, reason in EXEMPT.items():
        assert path in paths, f"{path} is exempt but is no public object any more: drop it from EXEMPT"
        assert len(reason.split()) >= 4, f"say why {path} is exempt"


def test_every_contract_is_a_public_protocol_and_gives_a_reason(items: list[Documented]) -> None:
    classes = {item.path: item.obj for item in items if item.is_class}
    for path, reason in CONTRACTS.items():
        assert getattr(classes.get(path), "_is_protocol", False), f"{path} in CONTRACTS is no public Protocol"
        assert len(reason.split()) >= 4, f"say why {path} documents its implementations"


def test_every_public_function_and_class_documents_its_parameters(items: list[Documented]) -> None:
    failures = [f"{item.path}: {problem}" for item in items for problem in problems(item)]
    assert not failures, f"{len(failures)} docstring problems:\n" + "\n".join(failures)


SECTION = "Summary.\n\nParameters\n----------\n"
CASES = {
    "missing": ("Summary.", ["parameter 'x' is not in its Parameters section"]),
    "undescribed": (SECTION + "x\n", ["parameter 'x' has no description"]),
    "stale": (SECTION + "x\n    The x.\ny\n    Gone.\n", ["documents 'y', which its signature does not have"]),
    "complete": (SECTION + "x\n    The x.\n", []),
    "typed": (SECTION + "x : int\n    The x.\n", []),
    "absent": ("", ["has no docstring"]),
}


def _f(x: int) -> int:
    return x


def _g(x: int, **options: Any) -> int:
    return x


@pytest.mark.parametrize(("doc", "expected"), CASES.values(), ids=CASES.keys())
def test_the_checker_catches_missing_empty_and_stale_parameters(doc: str, expected: list[str]) -> None:
    assert problems(Documented("f", _f, doc, inspect.signature(_f), False)) == expected


def test_keyword_arguments_are_documented_when_the_text_names_them() -> None:
    named = "Summary; other keyword ``options`` go to the backend.\n\n" + SECTION[10:] + "x\n    The x.\n"
    assert problems(Documented("g", _g, named, inspect.signature(_g), False)) == []
    silent = SECTION + "x\n    The x.\n"
    assert problems(Documented("g", _g, silent, inspect.signature(_g), False)) == [
        "parameter 'options' is not in its Parameters section"
    ]


def test_a_contract_documents_the_parameters_of_its_implementations() -> None:
    contract = SECTION + "x\n    The x.\n"
    own = "Summary of this implementation."
    assert problems(Documented("f", _f, own, inspect.signature(_f), False, contract=contract)) == []
    assert problems(Documented("f", _f, own, inspect.signature(_f), False)) == [
        "parameter 'x' is not in its Parameters section"
    ]
