"""The package layout's import rules (docs/architecture.md), checked on the source with ``ast``.

Every ``import`` and ``from ... import`` counts, also those inside functions (the deferred ones
are still dependencies); relative imports are resolved against the module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "dynconn"

# folder -> the dynconn modules its modules may import (prefixes of the dotted name);
# everything else in dynconn is forbidden to them
ALLOWED = {
    # pure science: arrays in, arrays out; never config, files, console, runner or stages
    "methods": ("dynconn.methods.", "dynconn.errors."),
    # drawing: the science it plots, nothing that reads config or files
    "report": ("dynconn.report.", "dynconn.methods.", "dynconn.errors."),
    # stages never reach into the machinery that runs them, nor into the command line
    "stages": ("dynconn.stages.", "dynconn.methods.", "dynconn.io.", "dynconn.report.", "dynconn.config.",
               "dynconn.console.", "dynconn.errors.", "dynconn.__version__"),
}


def dynconn_imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every dynconn name a module imports; ``package`` is the module's
    package (``dynconn.methods``), against which relative imports are resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from ..methods import ntf" imports dynconn.methods.ntf; "from ..x import f", dynconn.x.f
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "dynconn" or name.startswith("dynconn.")]


def forbidden_imports(source: str, package: str, allowed: tuple[str, ...]) -> list[str]:
    return [f"line {line}: {name}" for line, name in sorted(dynconn_imports(source, package))
            if not any((name + ".").startswith(prefix) for prefix in allowed)]


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folder_imports_only_what_its_layer_may(folder):
    modules = sorted((PACKAGE_ROOT / folder).glob("*.py"))
    assert modules, f"dynconn/{folder}/ has no modules"
    problems = {}
    for path in modules:
        bad = forbidden_imports(path.read_text(), f"dynconn.{folder}", ALLOWED[folder])
        if bad:
            problems[f"dynconn/{folder}/{path.name}"] = bad
    assert not problems, f"imports that docs/architecture.md forbids: {problems}"


def test_the_checker_finds_each_kind_of_forbidden_import():
    source = (
        "import numpy as np\n"
        "from . import wsbm\n"                     # allowed: a sibling method
        "from ..errors import InputError\n"        # allowed
        "from ..config import Config\n"            # relative, two levels
        "from .. import console\n"                 # 'from .. import module'
        "import dynconn.runner.lock\n"             # absolute
        "def f():\n"
        "    from dynconn.io.artifacts import read_h5\n"  # deferred, inside a function
        "    from .. import __version__\n"          # the package root
    )
    bad = forbidden_imports(source, "dynconn.methods", ALLOWED["methods"])
    assert bad == ["line 4: dynconn.config.Config", "line 5: dynconn.console", "line 6: dynconn.runner.lock",
                   "line 8: dynconn.io.artifacts.read_h5", "line 9: dynconn.__version__"]
    assert dynconn_imports("from . import wsbm\n", "dynconn.methods") == [(1, "dynconn.methods.wsbm")]
