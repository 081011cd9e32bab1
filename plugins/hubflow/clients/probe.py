"""The package probe: is each package the hub must have there, at its pin, and importable, asked of the user's kernel.

`probe` is the code that runs *inside* the hub's kernel: its source is sent there as it is (`definition`), so it
uses the standard library only, imports it inside the function, and runs on the kernel's Python (3.8+). The rest of
this module is its counterpart here: the call that runs it for one package (`call`), the result read back from what
the kernel printed (`result`), and a failed result in words (`problem`).

The probe prints each result as one JSON line after MARK, so it is told apart from whatever the imported modules
print. Tests run `probe` in-process against this interpreter and fake installs.
"""
from __future__ import annotations

import inspect
import json

from hubflow.core.packages import Package

MARK = "HUBFLOW-PROBE "  # prefixes the probe's own output lines, among whatever imported modules print
PASSED = ("ok", "not-applicable")  # the statuses that are no problem


def definition() -> str:
    """The code that defines the probe in a kernel (again after the kernel restarted): the function, its output
    encoder and the cache that keeps its module map between calls."""
    return f"{inspect.getsource(probe)}\nimport json as _j\n_hubflow_cache = {{}}\n"


def call(package: Package) -> str:
    """The code that probes one package in a kernel where `definition()` ran; it prints one MARK line."""
    return (f"probe([_j.loads({json.dumps(package.to_dict())!r})], "
            f"lambda e: print({MARK!r} + _j.dumps(e), flush=True), _hubflow_cache)")


def result(stdout: str) -> dict | None:
    """The probe's result in what a kernel printed for one `call`, or None when it printed none."""
    lines = [line.split(MARK, 1)[1] for line in stdout.splitlines() if MARK in line]
    return json.loads(lines[-1]) if lines else None


def problem(r: dict) -> str | None:
    """What is wrong with a probed package, in words; None when nothing is."""
    if r["status"] in PASSED:
        return None
    pin = "" if not r["wanted"] else r["wanted"] + ("" if r["exact"] else ".*")
    if r["status"] == "missing":
        return f"{r['name']}{'==' + pin if pin else ''} is not installed"
    if r["status"] == "version":
        return f"{r['name']}: installed {r['installed']}, pinned {pin}"
    return f"{r['name']} {r['installed']} is installed but {r['error']}"


def shown(r: dict) -> str:
    """A passed package in a few words."""
    return f"{r['name']} {r['installed']}" if r["status"] == "ok" else f"{r['name']} (not for this platform)"


def probe(packages, emit, cache):  # noqa: C901 (one function: one inspect.getsource sends all of it)
    """Runs inside the hub's kernel (standard library only, Python 3.8+): is each package there, pinned, importable?

    Emits each package's result. `cache` keeps the module map between calls in one kernel. A conda dependency that
    is not a Python distribution is looked up in conda's records (conda-meta) instead.
    """
    import glob
    import importlib
    import importlib.metadata as md
    import json
    import os
    import re
    import sys

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    if "modules" not in cache:
        cache["modules"] = {}
        for module, dists in (md.packages_distributions() if hasattr(md, "packages_distributions") else {}).items():
            for dist in dists:
                cache["modules"].setdefault(norm(dist), set()).add(module)
    modules = cache["modules"]

    def conda_version(name):
        for path in glob.glob(os.path.join(sys.prefix, "conda-meta", glob.escape(name) + "-*.json")):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            if data.get("name") == name:
                return data.get("version")
        return None

    def matches(installed, wanted, exact):
        if not exact:
            return installed == wanted or installed.startswith(wanted + ".")
        try:
            from packaging.version import Version
            return Version(installed) == Version(wanted)
        except Exception:  # noqa: BLE001 (no packaging, or a version it cannot parse: compare the strings)
            return installed == wanted

    def check(p):
        r = {"name": p["name"], "wanted": p["version"], "exact": p["exact"], "installed": None, "status": "ok",
             "error": None, "modules": []}
        if p.get("marker"):
            try:
                from packaging.markers import Marker
                if not Marker(p["marker"]).evaluate():
                    r["status"] = "not-applicable"
                    return r
            except Exception:  # noqa: BLE001 (no packaging, or a marker it cannot read: check the package)
                pass
        dist = None
        try:
            dist = md.distribution(p["name"])
            r["installed"] = dist.version
        except md.PackageNotFoundError:
            if p.get("conda"):
                r["installed"] = conda_version(p["name"])
        if r["installed"] is None:
            r["status"] = "missing"
            return r
        if p["version"] and not matches(r["installed"], p["version"], p["exact"]):
            r["status"] = "version"
            return r
        if dist is None:
            return r  # a conda package with no Python modules
        names = (sorted(modules.get(norm(dist.metadata["Name"] or p["name"]), ()))
                 or (dist.read_text("top_level.txt") or "").split())
        names = [n for n in names if n.isidentifier()] or [norm(p["name"]).replace("-", "_")]
        r["modules"] = [n for n in names if not n.startswith("_")] or names
        for name in r["modules"]:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # noqa: BLE001 (whatever a module raises is the finding)
                r["status"], r["error"] = "import", f"import {name}: {type(exc).__name__}: {exc}"
                break
        return r

    for p in packages:
        emit(check(p))
