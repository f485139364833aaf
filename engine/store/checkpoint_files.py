"""Checkpoint files as files: is one intact, and what scalars does it hold — without torch.

torch.save writes a zip archive whose `*/data.pkl` is a pickle of the saved dict, tensors
referenced by id. `inspect` checks every member's CRC (a truncated or overwritten file fails)
and unpickles `data.pkl` with tensors and any other class replaced by placeholders, so the
commands that only need a checkpoint's epoch (resume, repair) answer without loading torch,
and nothing in the file can run code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

from engine.errors import CorruptFile


class _Opaque:
    """Stands for a tensor, a storage or any other object of the pickle."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict   # state_dicts are OrderedDicts: they must fill
        return _Opaque

    def persistent_load(self, pid):
        return _Opaque()


def inspect(path: Path, hint: str = "use another checkpoint") -> dict:
    """The scalars (int, float, str, bool, None) at the top level of checkpoint `path`; a
    CorruptFile error naming the file, what is wrong and `hint` when it is not intact."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            if bad is not None:
                raise CorruptFile(path, f"is damaged (member {bad} fails its checksum)", hint)
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise CorruptFile(path, "is not a torch checkpoint (no data.pkl)", hint)
            obj = _Unpickler(io.BytesIO(z.read(pkl))).load()
    except FileNotFoundError:
        raise CorruptFile(path, "does not exist", hint) from None
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, IndexError, KeyError) as exc:
        raise CorruptFile(path, f"is not a readable checkpoint (truncated or not one: {type(exc).__name__})",
                          hint) from None
    if not isinstance(obj, dict):
        raise CorruptFile(path, "does not hold a checkpoint dict", hint)
    return {k: v for k, v in obj.items() if isinstance(v, (int, float, str, bool, type(None)))}
