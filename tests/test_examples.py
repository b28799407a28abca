"""The executed example notebook (docs/examples/quickstart.ipynb) runs from top to bottom on the shipped real
LHCO data and says what its text promises: radar's reclustering equals the peer's, the background-only search
finds nothing, the injected one finds its signal."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "quickstart.ipynb"


def _stream_text(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def test_quickstart_notebook_executes(lhco_dir, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat comes with the test extra")
    nbclient = pytest.importorskip("nbclient", reason="nbclient comes with the test extra")
    work = tmp_path / "examples"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    monkeypatch.setenv("RADAR_LHCO_DATA", str(lhco_dir))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    for cell in nb.cells:  # run it fresh: the committed outputs must not satisfy the checks below
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    text = _stream_text(nb)
    differences = [float(x) for x in re.findall(r"m_J2: ([0-9.e+-]+)", text)]
    assert len(differences) == 2 and max(differences) < 1e-9, text
    z = {
        (int(inj), float(keep)): float(zl)
        for inj, keep, zl in re.findall(r"injection +(\d+): keep +(\d+)%.*local Z +([0-9.]+)", text)
    }
    assert len(z) == 8, text
    assert max(v for (inj, _), v in z.items() if inj == 0) < 3.0, text  # background only: nothing found
    assert max(v for (inj, keep), v in z.items() if inj == 600 and keep < 100) > 4.0, text
