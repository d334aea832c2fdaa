"""The notebooks in notebooks/ run top to bottom, unchanged, on a fresh demo database and on
the views of a Parquet lake, in a Jupyter kernel of this virtualenv, and are committed without
outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import Workspace
from meta_inbox.emulator import Emulator

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# The first cell run, added to the executed copy only: the kernel must be this interpreter's
# environment, not another Python that happens to own the `python3` kernelspec.
PREFIX_CELL = "import sys\nprint(sys.prefix)"


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(root / "dlt"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "meta_inbox", "demo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    database = root / "meta_inbox_demo.duckdb"
    assert database.is_file()
    return database


@pytest.fixture(scope="module")
def lake_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The views database a Parquet export writes beside its lake."""
    root = tmp_path_factory.mktemp("lake")
    with Emulator(seed=7, scale=1) as emulator:
        done = Workspace(root, emulator).cli("run", "--destination", "filesystem")
    assert done.returncode == 0, done.stdout + done.stderr
    database = root / "meta_inbox_lake" / "lake.duckdb"
    assert database.is_file()
    return database


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebook in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("database", ["demo_database", "lake_database"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_and_plots(path: Path, database: str, request: pytest.FixtureRequest) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(PREFIX_CELL))
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "META_INBOX_DUCKDB": str(request.getfixturevalue(database)),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # the kernel's cwd
    )
    client.execute(env=env)  # raises CellExecutionError on the first failing cell

    assert _stdout(notebook.cells[0]).strip() == sys.prefix
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name}, cell {index}:\n{cell.source}"
        kinds = [output.output_type for output in cell.outputs]
        assert "error" not in kinds, where
        # Warnings (a missing glyph, a deprecation) would show in the notebook.
        stderr = [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"{where}\nstderr: {stderr}"
        if "plt.show()" in cell.source:
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert images, f"{where}\nplots nothing"
    plotting = [cell for cell in notebook.cells if "plt.show()" in cell.source]
    assert plotting, f"{path.name} has no plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}, cell {index} has outputs"
            assert cell.execution_count is None, f"{path.name}, cell {index} has an execution count"


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
