"""The public surface: ``__all__`` is complete, and importing has no side effects."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import icij_nb


def names_bound_in_init() -> set[str]:
    """Names that ``icij_nb/__init__.py`` imports, assigns or defines at top level."""
    tree = ast.parse(Path(icij_nb.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def test_all_lists_each_name_once():
    assert len(icij_nb.__all__) == len(set(icij_nb.__all__))


def test_every_name_in_all_is_importable():
    missing = [name for name in icij_nb.__all__ if not hasattr(icij_nb, name)]
    assert missing == []


def test_all_matches_the_public_names_defined_in_init():
    public = {n for n in names_bound_in_init() if not n.startswith("_")}
    public.discard("annotations")  # from __future__ import annotations
    assert public == set(icij_nb.__all__) - {"__version__"}


def test_every_public_attribute_of_the_package_is_in_all():
    public = {
        name
        for name, value in vars(icij_nb).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public - set(icij_nb.__all__) == set()


def test_version_is_a_string():
    assert isinstance(icij_nb.__version__, str)
    assert icij_nb.__version__


_PROBE = """
import json, os, sys, threading

def sockets():
    fds = []
    if not os.path.isdir("/proc/self/fd"):  # not Linux: threads are still checked
        return fds
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            fds.append(target)
    return sorted(fds)

before = {"threads": threading.active_count(), "sockets": sockets()}
import icij_nb
after = {"threads": threading.active_count(), "sockets": sockets()}
optional = ["aio_pika", "aiohttp", "ipywidgets", "papermill", "nbclient", "matplotlib"]
print(json.dumps({
    "before": before,
    "after": after,
    "thread_names": [t.name for t in threading.enumerate()],
    "optional_imported": [m for m in optional if m in sys.modules],
}))
"""


def test_import_starts_no_thread_opens_no_connection_and_writes_no_file(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["after"]["threads"] == report["before"]["threads"], report
    assert report["after"]["sockets"] == report["before"]["sockets"], report
    assert report["optional_imported"] == [], "optional extras imported eagerly"
    assert list(tmp_path.iterdir()) == []  # no store directory, no log file
