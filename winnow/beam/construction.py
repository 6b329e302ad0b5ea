"""Memoise two pure look-ups that Beam repeats while it builds, translates and starts a pipeline.

Beam 2.77 asks ``inspect.signature`` for every method of a DoFn each time it checks whether the
DoFn is stateful (``userstate.get_dofn_specs``), which happens several times per ParDo while the graph
is applied, translated to the runner API and turned into bundle processors: about 85,000 calls
for the default run's 910 transforms. Every transform applied also builds a fresh options view,
and each view builds and runs an ``argparse`` parser (about 4,000 of them). Together that was
about a sixth of the CPU of the default sample run on the in-memory runner, all of it fixed per
run, none of it per document.

Both answers depend only on their argument: a function's signature on the function (a bound
method's on its function), and a view on the options object and the view's class (every view shares
the options' value store). ``memoised_construction`` answers repeated questions from a memo while
it is active and restores Beam's own functions on exit, so code outside a winnow run sees Beam
unchanged.
"""

from __future__ import annotations

import inspect
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import core, ptransform, util
from apache_beam.typehints import decorators

# The modules that bound Beam's get_signature by name (``from ... import get_signature``).
_SIGNATURE_USERS = (decorators, core, ptransform, util)
_lock = threading.Lock()
_depth = 0  # nested memoised_construction blocks; the outermost installs and restores
_saved: dict[str, Any] = {}  # Beam's own functions while the memo is in place


def _signature_key(func: Any) -> tuple[str, Any] | None:
    """What a signature depends on: the function itself, or a bound method's function (the bound
    signature drops the first parameter whatever the instance). Other callables are not memoised."""
    if isinstance(func, types.FunctionType):
        return ("function", func)
    if isinstance(func, types.MethodType) and isinstance(func.__func__, types.FunctionType):
        return ("method", func.__func__)
    return None


def _memoised_signature(original: Callable[[Any], inspect.Signature]) -> Callable[[Any], inspect.Signature]:
    memo: dict[tuple[str, Any], inspect.Signature] = {}

    def get_signature(func: Any) -> inspect.Signature:
        key = _signature_key(func)
        if key is None:
            return original(func)
        found = memo.get(key)
        if found is None:
            found = memo[key] = original(func)
        return found

    return get_signature


def _memoised_view_as(original: Callable[..., Any]) -> Callable[..., Any]:
    memo: dict[tuple[int, type], tuple[PipelineOptions, Any]] = {}  # the options are held: ids stay unique

    def view_as(self: PipelineOptions, cls: type) -> Any:
        key = (id(self), cls)
        found = memo.get(key)
        if found is None:
            found = memo[key] = (self, original(self, cls))
        return found[1]

    return view_as


@contextmanager
def memoised_construction() -> Iterator[None]:
    """Answer Beam's repeated signature and options-view look-ups from a memo inside this block."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            originals = {module: module.get_signature for module in _SIGNATURE_USERS}
            original_view_as = PipelineOptions.view_as
            signature = _memoised_signature(decorators.get_signature)
            for module in _SIGNATURE_USERS:
                module.get_signature = signature
            PipelineOptions.view_as = _memoised_view_as(original_view_as)  # type: ignore[method-assign]
            _saved.update(originals=originals, view_as=original_view_as)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for module, function in _saved["originals"].items():
                    module.get_signature = function
                PipelineOptions.view_as = _saved["view_as"]  # type: ignore[method-assign]
                _saved.clear()
