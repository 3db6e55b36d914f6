"""docs/DESIGN.md stays true to the code.

The checks are functions of the document's text and a repository folder, so the tests below run them
on the real checkout and on a copy of it with one thing broken (a file removed, a module renamed, a
function renamed, an import against the rules), and see them name what broke:

- ``missing_paths``: every path the document names exists (``layers/linear.py``, ``tests/...``),
  ``path.py::name`` names something that file defines;
- ``undescribed``: every package and every module under src/vitkit/, and every benchmark script, is named;
- ``import_violations``: every import between vitkit's packages is one its row of the import table allows;
- ``unknown_names``: every ``vitkit.x.y`` the document names imports.

The document's own section "How this page is checked" says which code spans count as paths.
"""
from __future__ import annotations

import ast
import importlib
import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "DESIGN.md"
ROOT_DIRS = ("src", "tests", "benchmarks", "docs", "configs", ".ci")
ROOT_FILES = ("Makefile", "README.md", "pyproject.toml")
PACKAGE = ("src", "vitkit")


# ---------------------------------------------------------------------------- reading the document
def code_tokens(text: str) -> list[str]:
    """The words of every inline code span, fenced block and indented (4-space) code line."""
    words: list[str] = []
    prose: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            words += line.split()
        else:
            prose.append(line)
    for m in re.finditer(r"(`+)([^`]+?)\1", "\n".join(prose)):  # a span may go on over a line break
        words += m.group(2).split()
    return [w.strip("()[],;\"'").rstrip(".:") for w in words]


_SKIP = re.compile(r"[=<>|$~@]")


def _placeholder(token: str) -> bool:
    """RUN/config.json, OUT/...: a part in capitals stands for a folder of the user's."""
    return any(p.upper() == p and any(c.isalpha() for c in p) for p in token.split("/") if "." not in p)


def path_tokens(text: str) -> list[str]:
    """The tokens that name a path of the repository (``path.py::symbol`` forms included)."""
    out = []
    for tok in code_tokens(text):
        tok = tok.split("(")[0]  # `train/trainer.py::fit(model, ...)`: the name before the call
        path = tok.split("::")[0]
        if not path or _SKIP.search(path) or ":" in path or path.startswith(("runs/", "../", "/", "-", ".venv")):
            continue
        if "/" in path:
            if not _placeholder(path):
                out.append(tok)
        elif path in ROOT_FILES or path.endswith(".py"):
            out.append(tok)
    return out


def resolve(path: str, root: Path) -> list[Path]:
    """The files or folders ``path`` names in ``root`` (empty when none): root-relative when it starts
    with a top-level folder of the repository, else relative to src/vitkit/; ``*`` globs; a bare
    ``name.py`` anywhere under src/, tests/ or benchmarks/."""
    if path in ROOT_FILES:
        return [root / path] if (root / path).is_file() else []
    if "/" not in path:
        return [p for d in ("src", "tests", "benchmarks") for p in (root / d).rglob(path)]
    base = root if path.split("/")[0] in ROOT_DIRS else root.joinpath(*PACKAGE)
    if "*" in path:
        return sorted(base.glob(path.rstrip("/")))
    target = base / path
    if path.endswith("/"):
        return [target] if target.is_dir() else []
    return [target] if target.is_file() else []


def _module_scope(body: list) -> list:
    """Statements of a module or class body, with those under module-level if/try blocks."""
    out = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _module_scope(node.body) + _module_scope(node.orelse)
        elif isinstance(node, ast.Try):
            out += _module_scope(node.body) + _module_scope(node.orelse) + _module_scope(node.finalbody)
            for h in node.handlers:
                out += _module_scope(h.body)
    return out


def _defined(node: ast.AST) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    return []


def defines(path: Path, dotted: str) -> bool:
    """Whether the Python file defines ``dotted``: a module-level name, or ``Class.member``."""
    scope = ast.parse(path.read_text()).body
    for part in dotted.split("."):
        found = next((n for n in _module_scope(scope) if part in _defined(n)), None)
        if found is None:
            return False
        scope = getattr(found, "body", [])
    return True


def missing_paths(text: str, root: Path) -> list[str]:
    """The paths (and ``path::symbol`` names) the document names that ``root`` does not have."""
    missing = []
    for tok in path_tokens(text):
        path, _, symbol = tok.partition("::")
        found = resolve(path, root)
        if not found:
            missing.append(tok)
        elif symbol and not (len(found) == 1 and found[0].suffix == ".py" and defines(found[0], symbol)):
            missing.append(tok)
    return sorted(set(missing))


def named_paths(text: str, root: Path) -> set[Path]:
    """Every file or folder the document names literally (globs name nothing here)."""
    out = set()
    for tok in path_tokens(text):
        path = tok.partition("::")[0]
        if "*" not in path and "/" in path or path in ROOT_FILES:
            out.update(p.resolve() for p in resolve(path, root))
    return out


def required(root: Path, tracked: set[str] | None = None) -> list[Path]:
    """What the document must name: every package and module under src/vitkit/ (a package's
    ``__init__.py`` is described with its package) and every benchmark script. ``tracked``: limit the
    files to these (root-relative, as git lists them), so work not yet committed is not demanded."""
    src = root.joinpath(*PACKAGE)
    files = [p for p in src.rglob("*.py") if "__pycache__" not in p.parts]
    files += [p for p in (root / "benchmarks").glob("*") if p.suffix in (".py", ".sh")]
    if tracked is not None:
        files = [p for p in files if p.relative_to(root).as_posix() in tracked]
    packages = {p.parent for p in files if p.name == "__init__.py" and p.parent != src}
    modules = [p for p in files if p.name != "__init__.py" or p.parent == src]
    return sorted(packages) + sorted(modules)


def undescribed(text: str, root: Path, tracked: set[str] | None = None) -> list[str]:
    """The packages, modules and benchmark scripts of ``root`` that the document does not name."""
    named = named_paths(text, root)
    return [p.relative_to(root).as_posix() + ("/" if p.is_dir() else "")
            for p in required(root, tracked) if p.resolve() not in named]


def unknown_names(text: str) -> list[str]:
    """``vitkit.a.b`` names of the document that do not import (module, then attributes)."""
    bad = []
    for tok in code_tokens(text):
        if not re.fullmatch(r"vitkit(\.[A-Za-z_]\w*)+", tok):
            continue
        parts = tok.split(".")
        obj = None
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                obj = None
            break
        if obj is None:
            bad.append(tok)
    return sorted(set(bad))


# ---------------------------------------------------------------------------- the import rules
def _unit(token: str) -> str | None:
    """``layers/`` -> "layers", ``src/vitkit/argtypes.py`` -> "argtypes"; None if not a unit's name."""
    token = token.removeprefix("src/vitkit/")
    if re.fullmatch(r"\w+/", token):
        return token[:-1]
    if re.fullmatch(r"\w+\.py", token):
        return token[:-3]
    return None


def import_table(text: str) -> dict[str, tuple[set[str], set[str]]]:
    """{unit: (allowed at module level, allowed inside functions)} from the table whose header is
    ``| package | ... | imports at module level | imports only inside functions |``."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("| package |") and "imports at module level" in line:
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            spans = [re.findall(r"`([^`]+)`", c) for c in cells]
            unit = _unit(spans[0][0]) if spans[0] else None
            if unit is None:
                continue
            top = {u for u in map(_unit, spans[2]) if u}
            late = {u for u in map(_unit, spans[3]) if u}
            rows[unit] = (top, late)
    return rows


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                                         or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(root: Path, tracked: set[str] | None = None) -> list[tuple[str, str, str, bool]]:
    """Every import of one unit of vitkit by another: (file, from unit, to unit, at module level);
    ``tracked``: only these files (root-relative)."""
    src = root.joinpath(*PACKAGE)
    out = []

    def unit_of(name: str) -> str:
        return name if (src / name).is_dir() or (src / f"{name}.py").is_file() else "__init__"

    for path in sorted(src.rglob("*.py")):
        if "__pycache__" in path.parts or tracked is not None and path.relative_to(root).as_posix() not in tracked:
            continue
        rel = path.relative_to(src)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        module = ["vitkit", *rel.with_suffix("").parts]
        package = module[:-1]  # the package the file is in (of an __init__.py: its own)

        def visit(node: ast.AST, top: bool) -> None:
            for child in ast.iter_child_nodes(node):
                names: list[list[str]] = []
                if isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package[:len(package) - (child.level - 1)]
                        mod = base + (child.module.split(".") if child.module else [])
                        names = [mod] if child.module else [mod + [a.name] for a in child.names]
                    elif child.module and child.module.split(".")[0] == "vitkit":
                        mod = child.module.split(".")
                        names = [mod] if len(mod) > 1 else [mod + [a.name] for a in child.names]
                elif isinstance(child, ast.Import):
                    names = [a.name.split(".") for a in child.names if a.name.split(".")[0] == "vitkit"]
                for name in names:
                    target = unit_of(name[1]) if len(name) > 1 else "__init__"
                    if target != unit:
                        out.append((rel.as_posix(), unit, target, top))
                nested = (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                          or _is_type_checking(child))
                visit(child, top and not nested)

        visit(ast.parse(path.read_text()), True)
    return out


def import_violations(text: str, root: Path, tracked: set[str] | None = None) -> list[str]:
    """Imports the document's import table does not allow, units without a row, and cycles among the
    module-level imports the table allows."""
    table = import_table(text)
    bad = []
    for file, unit, target, top in imports(root, tracked):
        if unit not in table:
            bad.append(f"{file}: its package {unit!r} has no row in the import table")
            continue
        allowed_top, allowed_late = table[unit]
        if target not in allowed_top | allowed_late:
            bad.append(f"{file} imports {target!r}, which the row of {unit!r} does not allow")
        elif top and target not in allowed_top:
            bad.append(f"{file} imports {target!r} at module level; "
                       f"the row of {unit!r} allows it only inside functions")
    graph = {u: top for u, (top, _) in table.items()}

    def cycle(u: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for v in graph.get(u, ()):
            if v in path:
                return path[path.index(v):] + (v,)
            found = cycle(v, path + (v,))
            if found:
                return found
        return None

    for u in graph:
        found = cycle(u, (u,))
        if found:
            bad.append("module-level import cycle in the table: " + " -> ".join(found))
            break
    return sorted(set(bad))


def table_keys(text: str, header: str) -> list[str]:
    """The first code span of every row of the table whose header line starts with ``header``."""
    keys, inside = [], False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not line.startswith("|---"):
            m = re.search(r"`([^`]+)`", line.split("|")[1])
            if m:
                keys.append(m.group(1))
    return keys


def git_tracked(root: Path) -> set[str] | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.stdout.decode().split("\0")) - {""}


# ---------------------------------------------------------------------------- the real checkout
@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text()


def test_every_named_path_exists(text):
    assert missing_paths(text, ROOT) == []


def test_every_package_module_and_benchmark_is_described(text):
    assert undescribed(text, ROOT, git_tracked(ROOT)) == []


def test_imports_keep_the_table(text):
    assert import_table(text), "the import table is gone"
    assert import_violations(text, ROOT, git_tracked(ROOT)) == []


def test_every_named_vitkit_name_imports(text):
    assert unknown_names(text) == []


def test_every_command_and_task_is_described(text):
    from vitkit.cli import build_parser
    from vitkit.train.tasks import TASKS
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sorted(table_keys(text, "| command |")) == sorted(f"vitkit {c}" for c in sub.choices)
    assert sorted(table_keys(text, "| `--task` |")) == sorted(TASKS)


def test_run_folder_files_and_formats_are_the_codes(text):
    from vitkit.train.checkpoint import REPORT_FILES, RUN_FILES
    from vitkit.weights.clip import HF_CLIP
    from vitkit.weights.mae import HF_MAE_DECODER
    from vitkit.weights.mapping import FORMATS, _register_all
    spans = set(code_tokens(text))
    assert [f for f in (*RUN_FILES, *REPORT_FILES) if f not in spans] == []
    _register_all()
    known = set(FORMATS) | {HF_CLIP.name, HF_MAE_DECODER.name}
    named = [n for key in table_keys(text, "| format |") for n in re.findall(r"[\w-]+", key)]
    assert named and [n for n in named if n not in known] == []


def test_every_model_class_is_in_the_family_table(text):
    from vitkit.models import create_model, list_models
    classes = {type(create_model(n, device="meta")).__name__ for n in list_models()}
    spans = set(code_tokens(text))
    assert sorted(c for c in classes if c not in spans) == []


def test_readme_links_the_design_doc():
    assert "](docs/DESIGN.md)" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------------- the checks fail when they should
@pytest.fixture
def tree(tmp_path, text) -> Path:
    """The committed tree (``git archive HEAD``: others' uncommitted work left out), plus what the
    document names that is not committed yet and the document itself, without git."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to know the committed files")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(tmp_path, filter="data")
        except TypeError:  # Python without extraction filters (< 3.10.12, 3.11.4)
            tar.extractall(tmp_path)
    for path in named_paths(text, ROOT):
        rel = path.relative_to(ROOT)
        if path.is_file() and not (tmp_path / rel).exists():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / rel)
    shutil.copy(DOC, tmp_path / "docs" / "DESIGN.md")
    return tmp_path


def test_a_removed_file_is_reported(text, tree):
    assert missing_paths(text, tree) == []
    (tree / "src" / "vitkit" / "layers" / "linear.py").unlink()
    (tree / "benchmarks" / "kernels.py").unlink()
    missing = missing_paths(text, tree)
    assert "layers/linear.py" in missing and "benchmarks/kernels.py" in missing
    assert "layers/linear.py::freeze" in missing


def test_a_renamed_module_is_reported_both_ways(text, tree):
    pkg = tree / "src" / "vitkit"
    assert undescribed(text, tree) == []
    (pkg / "train" / "run.py").rename(pkg / "train" / "runs.py")
    assert "train/run.py" in missing_paths(text, tree)
    assert undescribed(text, tree) == ["src/vitkit/train/runs.py"]


def test_a_new_package_is_reported(text, tree):
    pkg = tree / "src" / "vitkit" / "unknown"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package the document does not know."""\nfrom ..layers import Block\n')
    assert undescribed(text, tree) == ["src/vitkit/unknown/"]
    assert import_violations(text, tree) == [
        "unknown/__init__.py: its package 'unknown' has no row in the import table"]


def test_a_renamed_function_is_reported(text, tree):
    run = tree / "src" / "vitkit" / "train" / "run.py"
    run.write_text(run.read_text().replace("def load_run(", "def open_run("))
    assert missing_paths(text, tree) == ["train/run.py::load_run"]


def test_an_import_against_the_rules_is_reported(text, tree):
    assert import_violations(text, tree) == []
    drop = tree / "src" / "vitkit" / "layers" / "drop.py"
    drop.write_text(drop.read_text() + "\nfrom ..models import create_model  # noqa\n")
    registry = tree / "src" / "vitkit" / "models" / "registry.py"
    registry.write_text(registry.read_text() + "\nfrom ..weights import load_weights  # noqa\n")
    assert import_violations(text, tree) == [
        "layers/drop.py imports 'models', which the row of 'layers' does not allow",
        "models/registry.py imports 'weights' at module level; the row of 'models' allows it only inside functions"]


def test_a_cycle_in_the_table_is_reported(text):
    looped = text.replace("| `layers/` | building blocks; know nothing of models, data or training | `src/vitkit/hardware.py` | - |",
                          "| `layers/` | building blocks; know nothing of models, data or training | `models/` | - |")
    assert looped != text
    assert any("cycle" in v for v in import_violations(looped, ROOT))


def test_what_counts_as_a_path():
    doc = ("`layers/nope.py` `tests/nope/` `RUN/config.json` `runs/demo` `hf:org/name` `model.safetensors` "
           "`--to hf|timm` `nope.py` `models/vit.py::Nope` `models/vit.py::VisionTransformer.forward_features`\n"
           "```\nvitkit train --config configs/nope.yaml --out runs/x\n```\n"
           "    python benchmarks/nope.py\n")
    assert missing_paths(doc, ROOT) == ["benchmarks/nope.py", "configs/nope.yaml", "layers/nope.py",
                                        "models/vit.py::Nope", "nope.py", "tests/nope/"]
    assert unknown_names("`vitkit.train.run.load_run` `vitkit.train.run.nope` `vitkit.nope`") == \
        ["vitkit.nope", "vitkit.train.run.nope"]
