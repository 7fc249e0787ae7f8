"""Prepared weights, kept for calls with the same weights.

Some paths transform the weights before every call: the Winograd kernels'
G w G^T, the register blocks' packed layout.  For 64 x 64 3x3 weights
(vgg_3x3) that costs 0.16-0.21 ms of a 10 ms (1 thread) or 6 ms (2 threads)
call, for 256 x 128 3x3 weights (resnet_3x3_s2) 0.3-0.45 ms, with the
caches the call finds (measured on the 2-vCPU benchmark VM).  Inference
calls a layer again and again with the same weights, so the prepared array
of recent weights is kept and reused, on one condition: the weights are
bitwise equal to a private copy taken when it was kept (memcmp; 1.2 MB in
about 0.1 ms from memory).  Weights changed in place, even one element, are
therefore prepared again, never served stale.

* Nothing is copied the first time weights are seen: a fingerprint (the
  kind, shape, dtype and 33 sampled values) is remembered.  The second time,
  the weights and their prepared array are copied and kept.  Training, whose
  weights change at every step, never pays for the copies.
* At most MAX_BYTES are kept (copies and prepared arrays together), and at
  most MAX_SEEN fingerprints.  An entry is evicted, oldest use first, only
  when it has not been used for KEEP_SECONDS, so that a network larger than
  the budget keeps the layers it holds instead of copying at every call.
* Kept arrays are read-only, and every lookup is under a lock; the byte
  comparison runs outside it on the kept (immutable) copy.
* CYCONV_WEIGHT_CACHE=0 turns it off.
"""
import os
import threading
import time
from collections import OrderedDict

from ._kernels import conv as _conv
from ._threads import _flag

ENABLED = _flag("CYCONV_WEIGHT_CACHE", True)
MAX_BYTES = 64 << 20
MAX_SEEN = 256
KEEP_SECONDS = 1.0
_SAMPLES = 32

_lock = threading.Lock()
_entries = OrderedDict()   # key -> (weights copy, prepared, nbytes, [last use])
_seen = OrderedDict()      # key -> None: seen once, nothing kept
_state = {"bytes": 0}


def _reset_after_fork():
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _key(kind, w):
    flat = w.reshape(-1)
    step = max(1, flat.size // _SAMPLES)
    return (kind, w.shape, w.dtype.str, flat[::step][:_SAMPLES].tobytes(),
            flat[-1:].tobytes())


def _same(a, b):
    return _conv.same_bytes(a.reshape(-1).view("u1"), b.reshape(-1).view("u1"))


def clear():
    """Drop every kept array."""
    with _lock:
        _entries.clear()
        _seen.clear()
        _state["bytes"] = 0


def kept_bytes():
    """Bytes held now: weight copies and prepared arrays."""
    return _state["bytes"]


def prepared(kind, w, make):
    """make(w), or the array make returned for bitwise-equal weights of the
    same kind, shape and dtype before (read-only).  ``kind`` names the
    preparation and its parameters; ``make`` returns a NumPy array, or None
    where the weights do not suit (None is never kept)."""
    if not ENABLED or not w.flags.c_contiguous or w.size == 0:
        return make(w)
    key = _key(kind, w)
    with _lock:
        hit = _entries.get(key)
        if hit is not None:
            _entries.move_to_end(key)
            seen = True
        else:
            seen = key in _seen
            if seen:
                del _seen[key]
    if hit is not None and _same(hit[0], w):
        hit[3][0] = time.monotonic()
        return hit[1]
    out = make(w)
    if out is None:
        return None
    _keep(key, w, out, seen)
    return out


def _keep(key, w, out, seen):
    """Remember the key (first sighting), or keep copies (later ones)."""
    nbytes = w.nbytes + out.nbytes
    if not seen:
        with _lock:
            _seen[key] = None
            while len(_seen) > MAX_SEEN:
                _seen.popitem(last=False)
        return
    if nbytes > MAX_BYTES:
        return
    with _lock:
        now = time.monotonic()
        old = _entries.pop(key, None)
        if old is not None:
            _state["bytes"] -= old[2]
        while _state["bytes"] + nbytes > MAX_BYTES and _entries:
            k, e = next(iter(_entries.items()))
            if now - e[3][0] < KEEP_SECONDS:
                return   # everything kept is in use: do not evict for this one
            del _entries[k]
            _state["bytes"] -= e[2]
    wc, oc = w.copy(), out.copy()
    wc.flags.writeable = False
    oc.flags.writeable = False
    with _lock:
        if key in _entries or _state["bytes"] + nbytes > MAX_BYTES:
            return   # another thread kept it, or filled the room, meanwhile
        _entries[key] = (wc, oc, nbytes, [time.monotonic()])
        _state["bytes"] += nbytes
