"""A smoke notebook: the code cells of a Jupyter notebook, in order, each with the position Jupyter shows for it.

Read with nbformat (any nbformat version, converted to 4) and checked against the notebook schema: what nbformat
cannot read or finds invalid is "not a Jupyter notebook", with its reason and where in the file, before any hub is
touched.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from hubflow.clients.smoke import SmokeError

REASON_CHARS = 200  # a schema error can quote the whole offending cell (outputs included): its first words do


@dataclass
class Notebook:
    name: str
    cells: list[tuple[int, str]]  # (1-based position in the notebook, code)


def parse_notebook(text: str, name: str) -> Notebook:
    """The non-blank code cells of an .ipynb; positions count every cell, as Jupyter shows them."""
    # imported here: nbformat loads jsonschema and its format checkers (about a second), for notebooks only
    import nbformat
    from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

    try:
        with warnings.catch_warnings():  # nbformat adds missing or duplicate cell ids itself: nothing to tell
            warnings.simplefilter("ignore", MissingIDFieldWarning)
            warnings.simplefilter("ignore", DuplicateCellId)
            # nbformat.reads without its logging: it logs a validation error at length, whole cells included
            nb = nbformat.convert(nbformat.reader.reads(text), 4)
            nbformat.validate(nb)
        code = [(i, cell.source) for i, cell in enumerate(nb.cells, 1) if cell.cell_type == "code"]
    except nbformat.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path))
        raise SmokeError(f"notebook {name} is not a Jupyter notebook (nbformat 4 JSON): "
                            f"{_short(exc.message)}{f' (at {where})' if where else ''}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SmokeError(f"notebook {name} is not a Jupyter notebook (nbformat 4 JSON): {_short(str(exc))}") \
            from None
    return Notebook(name, [(i, src) for i, src in code if src.strip()])


def _short(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"
