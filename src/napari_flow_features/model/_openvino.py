"""OpenVINO and NNCF imported without their usage telemetry.

OpenVINO's model converter (``openvino.tools.ovc``, imported by ``import openvino``) and NNCF send
anonymous usage data to Google Analytics through the ``openvino-telemetry`` package unless the user
has opted out (OpenVINO's documentation: "collected by default"). Each event is sent from a forked
child process (``multiprocessing.Process``, so that an offline ``urlopen`` cannot hang the caller),
and the first one writes a client id and usage counts to ``~/intel/``. Our processes start no child
process and use no network, so:

- :func:`import_openvino` and :func:`import_nncf` import those packages while ``openvino_telemetry``
  cannot be imported (``sys.modules["openvino_telemetry"] = None`` for the duration of the import).
  Both packages then bind their own documented fallback, a telemetry stub that does nothing
  (``openvino.tools.ovc.telemetry_stub``; NNCF's ``NNCFTelemetryStub``). The entry is restored
  afterwards, so other code in the process imports ``openvino_telemetry`` as before.
- :func:`converter_without_telemetry` covers a process that imported OpenVINO itself before us: for
  the duration of our ``convert_model`` call the converter's telemetry module is the stub.

The user's consent file (``~/intel/openvino_telemetry``, set with ``opt_in_out``) is neither read
nor written: other OpenVINO programs of the user behave as they chose.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from typing import Any

TELEMETRY_MODULE = "openvino_telemetry"
#: Modules of OpenVINO's converter that hold the telemetry module as their global ``tm``.
_CONVERTER_MODULES = ("openvino.tools.ovc.telemetry_utils", "openvino.tools.ovc.convert_impl")
_STUB_MODULE = "openvino.tools.ovc.telemetry_stub"


@contextlib.contextmanager
def telemetry_unimportable() -> Iterator[None]:
    """Make ``import openvino_telemetry`` fail inside the block, then restore what was there."""
    missing = object()
    saved = sys.modules.get(TELEMETRY_MODULE, missing)
    sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if saved is missing:
            sys.modules.pop(TELEMETRY_MODULE, None)
        else:
            sys.modules[TELEMETRY_MODULE] = saved  # type: ignore[assignment]


def import_openvino() -> Any:
    """Import ``openvino`` (and its converter) with the converter's telemetry stubbed.

    Returns
    -------
    module
        The ``openvino`` package.
    """
    with telemetry_unimportable():
        import openvino as ov

        with contextlib.suppress(ImportError):
            import openvino.tools.ovc  # binds the converter's telemetry module now
    return ov


def import_nncf() -> Any:
    """Import NNCF with its telemetry stubbed (after OpenVINO, the same way).

    Returns
    -------
    module
        The ``nncf`` package.
    """
    import_openvino()
    with telemetry_unimportable():
        import nncf
    return nncf


@contextlib.contextmanager
def converter_without_telemetry() -> Iterator[None]:
    """Run ``ov.convert_model`` with the telemetry stub, even if OpenVINO was imported before us."""
    stub = sys.modules.get(_STUB_MODULE) or importlib.import_module(_STUB_MODULE)
    swapped: list[tuple[Any, Any]] = []
    for name in _CONVERTER_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "tm", stub) is not stub:
            swapped.append((module, module.tm))
            module.tm = stub  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in swapped:
            module.tm = original
