"""The import graph has no upward arrow: the library (data, models, eval, ops, training loop)
never imports the stages or the CLI; annotation/ reads the library and runs stages through the
CLI (annotation/pipeline_run.py), never by importing them; nothing installed imports bench/
or tests/. Function-level imports count too."""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def offending(files, banned: tuple[str, ...]) -> list[str]:
    return [f"{f.relative_to(ROOT)} imports {m}" for f in files for m in sorted(imports_of(f))
            if any(m == b or m.startswith(b + ".") for b in banned)]


def test_annotation_never_imports_stages_or_the_cli():
    assert offending(modules("annotation"), ("pipeline.stages", "pipeline.__main__")) == []


def test_the_library_never_imports_stages_cli_or_annotation():
    lib = [f for f in modules("pipeline")
           if f.relative_to(ROOT / "pipeline").parts[0] not in ("stages", "__main__.py")]
    assert lib, "no library modules found"
    assert offending(lib, ("pipeline.stages", "pipeline.__main__", "annotation")) == []


@pytest.mark.parametrize("package", ["pipeline", "annotation"])
def test_installed_code_never_imports_bench_or_tests(package):
    assert offending(modules(package), ("bench", "tests")) == []


def test_the_check_sees_a_function_level_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from pipeline.__main__ import run_stage\n")
    assert imports_of(f) >= {"pipeline.__main__", "pipeline.__main__.run_stage"}
