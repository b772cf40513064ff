"""The defense methods by name."""

from __future__ import annotations

from mosr.defenses.base import Method, options_from_dict
from mosr.defenses.circuit_breakers import CircuitBreakers
from mosr.defenses.mosr_method import Mosr
from mosr.defenses.repbend import RepBend
from mosr.defenses.sft import RefusalSft
from mosr.errors import MosrError

METHODS: dict[str, type[Method]] = {method.name: method for method in (CircuitBreakers, RepBend, RefusalSft, Mosr)}


def create_method(name: str, options: dict | None = None) -> Method:
    """Create a method by name with options given as a (possibly nested) dict."""
    if name not in METHODS:
        raise MosrError(f"unknown defense method {name!r}: choose from {', '.join(METHODS)}")
    method_class = METHODS[name]
    try:
        return method_class(options_from_dict(method_class.options_class, options))
    except (TypeError, ValueError) as error:
        # Options from YAML arrive untyped: "abc" where a number belongs fails in a comparison.
        raise MosrError(f"invalid options for {name}: {error}") from None
