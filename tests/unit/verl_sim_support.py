"""The verl stand-in (examples/verl-sim) imported for a test module, then removed again.

The stand-in's top-level package is named ``verl``; the `sim` fixture puts it on ``sys.path``
only for the module that uses it and afterwards removes it and every ``verl*``/``mvp_marker``
module again, because other tests look for the real installed verl (through package metadata).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
SIM_DIR = REPO / "examples" / "verl-sim"


def _is_sim_module(name: str) -> bool:
    return name == "verl" or name.startswith("verl.") or name == "mvp_marker"


@pytest.fixture(scope="module")
def sim():
    saved = {name: mod for name, mod in sys.modules.items() if _is_sim_module(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(SIM_DIR))
    importlib.invalidate_caches()
    try:
        ns = SimpleNamespace(
            config=importlib.import_module("verl.trainer._sim.config"),
            inputs=importlib.import_module("verl.trainer._sim.inputs"),
            checkpoints=importlib.import_module("verl.trainer._sim.checkpoints"),
            flavors=importlib.import_module("verl.trainer._sim.flavors"),
            runner=importlib.import_module("verl.trainer._sim.runner"),
        )
        assert Path(ns.config.__file__).is_relative_to(SIM_DIR)
        yield ns
    finally:
        sys.path.remove(str(SIM_DIR))
        for name in [n for n in sys.modules if _is_sim_module(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        importlib.invalidate_caches()
