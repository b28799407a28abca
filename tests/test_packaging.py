"""radar installs as ONE namespace (radar.analysis, radar.processors, radar.models, radar.plots) from the
design card's folders, so that a user's own ``models/`` or ``analysis/`` folder cannot shadow it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "processors", "models", "plots", "configs")


def test_no_code_imports_the_bare_folders():
    """``import analysis`` works from the repository root only by accident (the working directory on
    sys.path) and would load a second copy of each module next to ``radar.analysis``."""
    bare = re.compile(
        rf"^\s*(from|import) ({'|'.join(PACKAGES)})\b|(import_module|importorskip)\(f?[\"']({'|'.join(PACKAGES)})\.",
        re.M,
    )
    offenders = []
    for folder in (*PACKAGES, "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            offenders += [
                f"{path.relative_to(REPO)}: {m.group(0).strip()}" for m in bare.finditer(path.read_text())
            ]
    assert not offenders, offenders


def test_version_and_the_command_come_from_the_namespace():
    out = subprocess.run(
        [sys.executable, "-m", "radar.analysis.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO.parent,
        check=True,
    )
    assert re.fullmatch(r"radar \d+\.\d+\.\d+\S*\n", out.stdout)


@pytest.mark.slow
def test_the_wheel_in_a_clean_venv_next_to_a_user_models_folder(tmp_path):
    """Build the wheel, install it (no dependencies: they come from this environment, without radar's
    editable hook) into a fresh venv, and import radar from a folder that holds a user's own ``models/``
    and ``analysis/`` packages, as CURTAINs' repository does."""
    import shutil

    # build from a clean copy: setuptools reuses a build/ folder, which could smuggle stale modules in
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "dist",
            "runs",
            "*.egg-info",
            "__pycache__",
            ".ruff_cache",
            ".pytest_cache",
        ),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("radar_hep-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies, as plain paths: .pth files in them (radar's editable finder) are not processed
    # (not the repository and its tests folder: the sources must come from the wheel; a .venv inside the
    # repository, as in CI, is fine)
    deps = [p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() not in (REPO, REPO / "tests")]
    (Path(site) / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    user = tmp_path / "my_analysis"
    for name in ("models", "analysis"):
        (user / name).mkdir(parents=True)
        (user / name / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    code = (
        "import radar.models.templates as t, radar.analysis.search as s, radar.processors.features as f; "
        "import radar.plots.style; print(t.__file__); print(sorted(t.available())); "
        "print('cathode' in s.available_methods()); "
        "from radar.analysis.cli_examples import shipped; print(','.join(shipped()))"
    )
    out = subprocess.run([str(python), "-c", code], cwd=user, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(site) and "/radar/models/templates/" in lines[0]
    assert "cathode" in lines[1] and lines[2] == "True"
    examples = set(lines[3].split(","))  # the example configs and presets ship in the wheel
    assert {p.stem for p in (REPO / "configs").glob("*.yaml")} | {"demo"} == examples
    preset = Path(site) / "radar" / "analysis" / "presets" / "demo.yaml"
    assert preset.is_file()  # the presets ship in the wheel
    installed = {str(f.relative_to(Path(site) / "radar")) for f in (Path(site) / "radar").rglob("*.py")}
    sources = {str(f.relative_to(REPO)) for folder in PACKAGES for f in (REPO / folder).rglob("*.py")}
    assert installed == sources  # every module ships (the package list in pyproject is explicit)


def test_the_search_stack_needs_no_event_processing_packages():
    """``pip install radar-hep`` without [process]/[generate]: the command line, the search, the bump hunt, the
    plots and the feature-table reader import none of coffea, fastjet, uproot, awkward or Pythia."""
    code = (
        "import sys; from radar.analysis.cli import build_parser; build_parser(); "
        "import radar.analysis.search, radar.analysis.bumphunt, radar.analysis.report, radar.analysis.pipeline; "
        "import radar.plots.spectra; from radar.processors.features import read_feature_table; "
        "import radar.models.templates as t, radar.models.densities as d; t.available(); d.available(); "
        "heavy = ('fastjet', 'coffea', 'pythia8mc', 'uproot', 'dask_awkward', 'vector', 'awkward'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(name in core for name in ("fastjet", "coffea", "pythia8mc", "uproot", "awkward"))
    assert "pythia8mc==8.317.2" in project["optional-dependencies"]["generate"]


#: which packages each package may import: the stages' data flow (events → features → models → search), and
#: figures drawn from saved results only (plots never import the search)
ALLOWED_IMPORTS = {
    "processors": {"processors"},
    "models": {"models", "processors"},
    "plots": {"plots", "processors"},
    "analysis": {"analysis", "models", "processors", "plots"},
}


def test_packages_import_only_what_their_layer_allows():
    """Imports inside functions count too."""
    import ast

    wrong = []
    for folder, allowed in ALLOWED_IMPORTS.items():
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "radar" and len(parts) > 1 and parts[1] not in allowed:
                        wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not wrong, wrong


def test_no_module_imports_in_a_circle():
    """Counting imports inside functions too (they hid a circle search ↔ config ↔ combine ↔ compare)."""
    import ast
    import sys as _sys

    modules = {}
    for folder in PACKAGES:
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            modules["radar." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("radar"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name and not t.startswith(name + ".")}
    _sys.setrecursionlimit(max(_sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, circles


def test_the_config_reference_in_docs_is_generated_from_the_schema():
    """docs/config.md is ``radar search --reference``: every key with its type, default and description; it cannot
    go stale, and every key is described."""
    from radar.analysis.config import SearchConfig, config_reference

    text = config_reference()
    assert (REPO / "docs" / "config.md").read_text() == text, (
        "regenerate: radar search --reference > docs/config.md"
    )
    for name in SearchConfig.model_fields:
        if name != "base_dir":
            assert f"| `{name}` |" in text, name
    assert "| `regions.sr` | [number, number] | `[3300.0, 3700.0]` |" in text
    undocumented = [line for line in text.splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert not undocumented, undocumented


def test_radar_examples_lists_prints_and_copies_the_shipped_configs(tmp_path, capsys):
    from radar.analysis.cli import main

    assert main(["examples"]) == 0
    listed = capsys.readouterr().out
    for path in (REPO / "configs").glob("*.yaml"):
        assert path.stem in listed
    assert "demo" in listed and "preset" in listed
    assert main(["examples", "search_lhco_like"]) == 0
    assert capsys.readouterr().out == (REPO / "configs" / "search_lhco_like.yaml").read_text()
    assert main(["examples", "search_lhco_like", "-o", str(tmp_path)]) == 0
    copied = tmp_path / "search_lhco_like.yaml"
    assert copied.read_text() == (REPO / "configs" / "search_lhco_like.yaml").read_text()
    copied.write_text("mine")
    assert main(["examples", "search_lhco_like", "-o", str(tmp_path)]) == 1  # never overwrites silently
    assert copied.read_text() == "mine"
    assert main(["examples", "nope"]) == 1
