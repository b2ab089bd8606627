"""The files of the xl package a chapter runs: what its cache key hashes.

A chapter's code cells import xl modules, which import others, at the top or inside functions
(every import statement of a module counts, wherever it is). Importing `xl.a.b` runs the package
`__init__.py` files on the way, so they count too. Also followed: Python code in a string constant
that a module starts in a subprocess (`python -c "from xl.transfer import _worker_main; ..."`), and
`"-m", "xl.x"` argument pairs. Not followed: modules named only at run time
(`importlib.import_module(name)`, a name built from variables); xl has none today.
"""
from __future__ import annotations

import ast
from pathlib import Path

import jupytext
from IPython.core.inputtransformer2 import TransformerManager

from xl.core import io

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def code_digest(nb_path: Path, package_dir: Path | None = None) -> str:
    """Hash of the xl files the notebook runs: their paths relative to the package and their bytes."""
    package_dir = package_dir or PACKAGE_DIR
    parts = []
    for path in chapter_files(nb_path, package_dir):
        parts += [path.relative_to(package_dir).as_posix(), path.read_bytes()]
    return io.digest(*parts)


def chapter_files(nb_path: Path, package_dir: Path | None = None) -> list[Path]:
    """The xl files a notebook imports, directly or through other xl modules, sorted."""
    package_dir = package_dir or PACKAGE_DIR
    modules = set()
    for cell in jupytext.read(nb_path).cells:
        if cell.cell_type != "code":
            continue
        try:  # IPython magics (%matplotlib, !pip) to plain Python first
            tree = ast.parse(TransformerManager().transform_cell(cell.source))
        except SyntaxError:  # the run will report it; meanwhile assume the cell may use anything
            return sorted(package_dir.rglob("*.py"))
        modules |= imported_modules(tree, package_dir.name)
    return sorted(_closure(modules, package_dir))


def module_files(module: str, package_dir: Path) -> list[Path]:
    """The files importing `module` runs from the package: each package's __init__.py, then the module."""
    parts = module.split(".")
    if parts[0] != package_dir.name:
        return []
    files = []
    for depth in range(1, len(parts) + 1):
        folder = package_dir.joinpath(*parts[1:depth])
        candidates = [folder / "__init__.py", folder.with_suffix(".py")] if depth > 1 else [folder / "__init__.py"]
        found = next((f for f in candidates if f.is_file()), None)
        if found is None:  # a name inside the module, not a module: `from xl.a import b` with b a function
            break
        files.append(found)
    return files


def imported_modules(tree: ast.AST, package: str, current: str | None = None) -> set[str]:
    """Dotted names of every `package` module that the code of `tree` imports (or may import).

    `current` is the module's own dotted name, for relative imports (the `__init__` of a package is
    named `xl.a.__init__` so that `from . import b` means xl.a.b). For `from m import x` both m
    and m.x are returned: m.x is kept only if it turns out to be a module file.
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, current)
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names if alias.name != "*"}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and package in node.value:
            found |= _code_in_string(node.value, package, current)
        elif isinstance(node, (ast.List, ast.Tuple)):
            found |= _dash_m_arguments(node)
    return {name for name in found if name == package or name.startswith(package + ".")}


def _absolute(node: ast.ImportFrom, current: str | None) -> str:
    if not node.level:
        return node.module or ""
    if current is None:
        return ""  # a relative import outside a package: nothing of ours
    base = current.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _code_in_string(text: str, package: str, current: str | None) -> set[str]:
    """Imports of a string that is Python code (a `python -c` program); prose does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set()
    return imported_modules(tree, package, current)


def _dash_m_arguments(node: ast.List | ast.Tuple) -> set[str]:
    """The module of a `[..., "-m", "xl.x", ...]` command line."""
    values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
    return {module for flag, module in zip(values, values[1:]) if flag == "-m" and isinstance(module, str)}


def _closure(modules: set[str], package_dir: Path) -> set[Path]:
    """The files of `modules` and of everything they import, recursively."""
    files, todo = set(), sorted(modules)
    while todo:
        for path in module_files(todo.pop(), package_dir):
            if path in files:
                continue
            files.add(path)
            todo += sorted(imported_modules(ast.parse(path.read_bytes()), package_dir.name,
                                            _module_name(path, package_dir)))
    return files


def _module_name(path: Path, package_dir: Path) -> str:
    """xl/a/b.py -> xl.a.b; xl/a/__init__.py -> xl.a.__init__ (see imported_modules)."""
    return ".".join([package_dir.name, *path.relative_to(package_dir).with_suffix("").parts])
