"""Checkpoint files as files: is one intact, and what scalars does it hold — without torch.

torch.save writes a zip archive (its members stored, never compressed) whose `*/data.pkl` is a
pickle of the saved dict, tensors referenced by id. `inspect` checks every member's CRC (a
truncated or overwritten file fails) and unpickles `data.pkl` with tensors, storages and dtypes
replaced by placeholders, so the commands that only need a checkpoint's epoch (resume, repair,
eval's checks) answer without loading torch.

Nothing in the file can run code, and a file that tries is not a checkpoint: the pickle may name
only what torch.save writes (`ALLOWED`: OrderedDict, torch's tensor rebuild functions, storage
classes, dtypes, ...; the list torch.load(weights_only=True) allows), each replaced by a
placeholder that does nothing. Any other global (`os.system`, `builtins.eval`, ...) makes the
file "not a torch checkpoint", named in one line, before anything of it is called. A pickle
that makes the unpickler fail in any other way is one line too, never a traceback.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import zipfile
from pathlib import Path

from engine.errors import CorruptFile

MAX_PICKLE = 64 * 1024 * 1024
"""The largest data.pkl read (a checkpoint's pickle holds names and numbers, its tensors are other
members: a ResNet's with its optimiser is well under 1 MiB)."""

_DTYPES = (
    r"(?:b?float\d*|half|double|cfloat|cdouble|chalf|complex\d*|u?int\d*|long|short|bool|"
    r"q(?:u?int\d+(?:x\d+)?)|float8_\w+|bits\w+|per_(?:tensor|channel)_\w+)"
)
ALLOWED = re.compile(
    r"collections\.(?:OrderedDict|Counter)"
    r"|torch\.(?:\w+Storage|\w+Tensor|Size|Tensor|device|strided|sparse_\w+|_mkldnn|" + _DTYPES + r")"
    r"|torch\.cuda\.\w+(?:Storage|Tensor)"
    r"|torch\.storage\.(?:TypedStorage|UntypedStorage)"
    r"|torch\._utils\._rebuild_\w+"
    r"|torch\._tensor\._rebuild_from_type_v2"
    r"|torch\.nn\.parameter\.Parameter"
    r"|torch\.serialization\._get_layout"
    r"|builtins\.(?:set|frozenset|bytearray|complex|slice)"
    r"|_codecs\.encode"
)
"""`module.name` of every global a torch checkpoint's pickle may name (torch's own weights-only
list, by name: none of them is imported or called here)."""


class _Opaque:
    """Stands for a tensor, a storage, a dtype or any other allowed object of the pickle."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _NotACheckpoint(Exception):
    """The pickle names a global no checkpoint holds."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict  # state_dicts are OrderedDicts: they must fill
        if ALLOWED.fullmatch(f"{module}.{name}"):
            return _Opaque
        raise _NotACheckpoint(f"{module}.{name}"[:80])

    def persistent_load(self, pid):
        return _Opaque()


def inspect(path: Path, hint: str = "use another checkpoint") -> dict:
    """The scalars (int, float, str, bool, None) at the top level of checkpoint `path`, its
    `epoch` a whole number >= 0; a CorruptFile error naming the file, what is wrong and `hint`
    when it is not an intact checkpoint."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            packed = next((i for i in infos if i.compress_type != zipfile.ZIP_STORED), None)
            if packed is not None:
                raise CorruptFile(
                    path, f"is not a torch checkpoint (member {packed.filename[:80]!r} is compressed)", hint
                )
            bad = z.testzip()
            if bad is not None:
                raise CorruptFile(path, f"is damaged (member {bad[:80]!r} fails its checksum)", hint)
            pkl = next((i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"), None)
            if pkl is None:
                raise CorruptFile(path, "is not a torch checkpoint (no data.pkl)", hint)
            if pkl.file_size > MAX_PICKLE:
                raise CorruptFile(path, f"is not a torch checkpoint (its data.pkl is {pkl.file_size} bytes)", hint)
            with z.open(pkl) as f:
                data = f.read(MAX_PICKLE + 1)
            obj = _Unpickler(io.BytesIO(data)).load()
    except CorruptFile:
        raise
    except FileNotFoundError:
        raise CorruptFile(path, "does not exist", hint) from None
    except _NotACheckpoint as exc:
        raise CorruptFile(
            path,
            f"is not a torch checkpoint (its pickle calls for {str(exc)!r}, which no "
            "checkpoint holds, and nothing of it was run)",
            hint,
        ) from None
    except PermissionError:
        raise  # a permission problem: said as one by the caller (os_error_line)
    except Exception as exc:  # noqa: BLE001 - a crafted pickle may make the unpickler raise anything
        raise CorruptFile(
            path, f"is not a readable checkpoint (truncated or not one: {type(exc).__name__})", hint
        ) from None
    if not isinstance(obj, dict):
        raise CorruptFile(path, "does not hold a checkpoint dict", hint)
    out = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, (int, float, str, bool, type(None)))}
    epoch = out.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        what = "has no epoch" if "epoch" not in out else f"has epoch = {str(epoch)[:40]!r}"
        raise CorruptFile(path, f"is not a checkpoint of a run ({what}: it must be a whole number >= 0)", hint)
    return out
