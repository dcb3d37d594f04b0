"""The package boundaries, read from the source: ``engine`` never imports ``presenter``, and
inference (every module of ``engine`` outside ``engine/data`` and ``engine/train``) never
imports the training-data code or the training code.

Every import counts: at the top, inside functions, under ``if TYPE_CHECKING:``, relative
ones, and ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
TRAINING_SIDE = ("engine.data", "engine.train")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. engine.facade
    target: str  # what it imports, e.g. engine.avatar
    where: str  # path:line


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def imports_of(path: Path) -> list[Import]:
    """Every module the file ``path`` under engine/ imports."""
    return imports_in(
        path.read_text(),
        module=module_name(path),
        is_package=path.name == "__init__.py",
        label=str(path.relative_to(ENGINE.parent)),
    )


def imports_in(source: str, *, module: str, is_package: bool, label: str) -> list[Import]:
    """Every module ``source`` (the text of ``module``) imports; for ``from X import y`` both
    X and X.y, as y may be a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=label)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and _imports_by_name(node):
            argument = node.args[0]
            assert isinstance(argument, ast.Constant)
            targets = [str(argument.value)]
        where = f"{label}:{getattr(node, 'lineno', 0)}"
        found.extend(Import(module, target, where) for target in targets if target)
    return found


def _imports_by_name(call: ast.Call) -> bool:
    """``importlib.import_module("...")``, ``import_module("...")`` or ``__import__("...")``."""
    function = call.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return (
        name in {"import_module", "__import__"}
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
    )


def engine_imports() -> list[Import]:
    return [found for path in sorted(ENGINE.rglob("*.py")) for found in imports_of(path)]


def is_inference(module: str) -> bool:
    return not any(is_within(module, package) for package in TRAINING_SIDE)


def test_the_scan_sees_every_kind_of_import() -> None:
    modules = {module_name(path) for path in ENGINE.rglob("*.py")}
    assert {"engine.facade", "engine.avatar", "engine.data.synth.rig"} <= modules
    assert is_inference("engine.facade") and is_inference("engine.speech.voices")
    assert not is_inference("engine.data.synth.default_avatar")
    assert not is_inference("engine.train.crop_projections")
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from engine.data.prep import dataset\n"
        "def f():\n    import presenter.cli\n    from ..train import generator\n"
        "    importlib.import_module('engine.data.synth.render')\n"
    )
    found = imports_in(source, module="engine.backends.probe", is_package=False, label="probe")
    targets = {one.target for one in found}
    assert {
        "engine.data.prep.dataset",
        "presenter.cli",
        "engine.train.generator",
        "engine.data.synth.render",
    } <= targets


def test_engine_never_imports_presenter() -> None:
    wrong = [found for found in engine_imports() if is_within(found.target, "presenter")]
    assert not wrong, "engine imports the application: " + ", ".join(
        f"{found.where} {found.target}" for found in wrong
    )


def test_inference_never_imports_data_or_training_code() -> None:
    wrong = [
        found
        for found in engine_imports()
        if is_inference(found.module)
        and any(is_within(found.target, package) for package in TRAINING_SIDE)
    ]
    assert not wrong, "inference imports training-side code: " + ", ".join(
        f"{found.where} {found.target}" for found in wrong
    )
