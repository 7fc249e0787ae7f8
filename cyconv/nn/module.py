"""Module, Parameter and Sequential: the skeleton every layer builds on."""
import zipfile
from collections import OrderedDict, namedtuple

import numpy as np

__all__ = ["Parameter", "Module", "Sequential", "seed"]

_rng = {"gen": np.random.default_rng()}


def seed(n):
    """Make every later initialisation and dropout mask reproducible.

    Examples
    --------
    >>> from cyconv import nn
    >>> nn.seed(0); a = nn.Linear(3, 2).weight.copy()
    >>> nn.seed(0); bool((nn.Linear(3, 2).weight == a).all())
    True
    """
    _rng["gen"] = np.random.default_rng(n)


def generator():
    return _rng["gen"]


# What load_state_dict returns, as PyTorch's: the keys the module has that the
# state lacked, and the keys of the state the module does not have.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(np.ndarray):
    """An ndarray holding a trainable value, with its gradient in ``.grad``.

    Arithmetic on a Parameter gives plain ndarrays; optimisers update the
    Parameter in place.
    """

    def __new__(cls, data):
        obj = np.array(data, copy=True).view(cls)
        obj.grad = np.zeros(obj.shape, obj.dtype)
        return obj

    def __array_finalize__(self, obj):
        if obj is not None and not hasattr(self, "grad"):
            self.grad = None

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        arr = np.asarray(arr)  # results of ufuncs are plain arrays
        return arr[()] if return_scalar else arr

    def __reduce__(self):
        # pickles (for multiprocessing and the like) as a fresh Parameter;
        # Module.save never pickles
        return (Parameter, (np.asarray(self),))


def same_shape(self, shape):
    """output_shape of the layers that keep their input's shape."""
    return tuple(shape)


def is_builtin(layer):
    """True for cyconv.nn's layers, and subclasses that keep their forward;
    False for a module whose forward is the user's own (a residual block)."""
    return (getattr(type(layer).forward, "__module__", None) or "").startswith("cyconv.nn.")


def is_chain(layer):
    """True for a Sequential that runs its layers in turn (forward not
    overridden): its geometry is that of its layers, one after another."""
    return isinstance(layer, Sequential) and type(layer).forward is Sequential.forward


def run_zero_sample(module, shape, record=None):
    """``module.forward`` of one zero sample of per-sample ``shape`` (no
    batch), in eval mode, in the dtype of its first parameter (float32
    without one).  Every module below it is left as it was: its mode and
    whatever its forward stores for backward.  With ``record`` (a list), each
    module below ``module`` that is called appends (module, per-sample input
    shape)."""
    modules = module.modules()
    saved = [(m, dict(m.__dict__)) for m in modules]
    dtype = next((p.dtype for p in module.parameters()), np.dtype(np.float32))
    try:
        module.eval()
        if record is not None:
            for m in modules[1:]:
                def traced(x, *args, _m=m, _forward=m.forward, **kwargs):
                    record.append((_m, tuple(np.shape(x)[1:])))
                    return _forward(x, *args, **kwargs)
                object.__setattr__(m, "forward", traced)
        return module.forward(np.zeros((1, *shape), dtype))
    finally:
        for m, attrs in saved:
            m.__dict__.clear()
            m.__dict__.update(attrs)


class StateDictError(ValueError, KeyError):
    """load_state_dict's names do not match the module's (a ValueError, and a
    KeyError as it was before)."""

    __str__ = ValueError.__str__


class Module:
    """Base class of every layer: parameters, buffers, children, modes, state.

    Subclasses implement ``forward(x)`` and ``backward(grad)``; ``backward``
    returns the gradient for the input of the last ``forward`` and adds the
    parameters' gradients to their ``.grad`` (call :meth:`zero_grad` between
    steps, as in PyTorch).
    """

    def __init__(self):
        object.__setattr__(self, "_params", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ---------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._children[name] = value
        elif value is None and name in self._params:
            del self._params[name]
        object.__setattr__(self, name, value)

    def register_buffer(self, name, value):
        """State saved with the module that is not trained (running statistics)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    # -- calling --------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def __call__(self, x, *args, **kwargs):
        return self.forward(x, *args, **kwargs)

    # -- parameters -----------------------------------------------------------
    def named_parameters(self, prefix=""):
        for name, p in self._params.items():
            yield prefix + name, p
        for cname, child in self._children.items():
            yield from child.named_parameters(prefix + cname + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for cname, child in self._children.items():
            yield from child.named_buffers(prefix + cname + ".")

    def children(self):
        return list(self._children.values())

    def named_modules(self, prefix=""):
        """(name, module) for this module (name ``prefix``) and every module
        below it, depth first, each once, as ``torch.nn.Module.named_modules``."""
        seen = set()

        def walk(module, name):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for cname, child in module._children.items():
                yield from walk(child, f"{name}.{cname}" if name else cname)

        yield from walk(self, prefix)

    def modules(self):
        """This module and every module below it (see :meth:`named_modules`)."""
        return [m for _, m in self.named_modules()]

    def apply(self, fn):
        """Call ``fn`` on every child (recursively), then on this module, as
        ``torch.nn.Module.apply`` (for example to initialise weights); returns
        this module."""
        for child in self._children.values():
            child.apply(fn)
        fn(self)
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode=True):
        object.__setattr__(self, "training", bool(mode))
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    # -- state ----------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers by PyTorch's names, as copies."""
        state = OrderedDict()
        for name, value in self._state_items():
            state[name] = np.array(value, copy=True)
        return state

    def _state_items(self, prefix=""):
        for name, p in self._params.items():
            yield prefix + name, p
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for cname, child in self._children.items():
            yield from child._state_items(prefix + cname + ".")

    def load_state_dict(self, state, strict=True):
        """Copy values in by name (a PyTorch state_dict converted to NumPy loads
        unchanged).  Shapes must match; with ``strict`` the names must too.
        Everything is checked before anything is copied.  Returns the missing
        and unexpected keys, as PyTorch's does.

        As PyTorch does for a state_dict without version metadata (one saved
        before PyTorch 0.4.1, or rebuilt as a plain dict), a BatchNorm's
        ``num_batches_tracked`` may be absent: the module keeps its own."""
        own = dict(self._state_items())
        optional = {f"{name}.{key}" if name else key
                    for name, m in self.named_modules()
                    for key in getattr(m, "_optional_state", ())}
        missing = [k for k in own if k not in state and k not in optional]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise StateDictError(f"load_state_dict: missing keys {missing}, unexpected "
                                 f"keys {unexpected}")
        values = {}
        for name, target in own.items():
            if name not in state:
                continue
            value = values[name] = np.asarray(state[name])
            if value.shape != np.shape(target):
                raise ValueError(f"load_state_dict: {name} has shape {value.shape}, the "
                                 f"module expects {np.shape(target)}")
            if value.dtype.kind not in "biuf":
                raise TypeError(f"load_state_dict: {name} has dtype {value.dtype}; "
                                f"expected a real dtype")
        for name, value in values.items():
            own[name][...] = value
        return IncompatibleKeys(missing, unexpected)

    def save(self, path):
        """Write the state_dict to an ``.npz`` file (plain arrays, no pickle)."""
        np.savez(path, **self.state_dict())

    def load(self, path):
        """Load a file written by :meth:`save`.  Pickled objects are refused
        before anything is unpickled."""
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the model file: {exc}") from None
        if magic != b"PK\x03\x04":  # anything but a zip (.npz) would go to pickle
            raise ValueError(f"{path}: not a cyconv model file (.npz written by "
                             f"Module.save)")
        try:
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
        except ValueError as exc:
            raise ValueError(f"{path}: refusing to load pickled objects; a cyconv model "
                             f"file holds plain arrays only ({exc})") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{path}: not a cyconv model file (.npz): {exc}") from None
        self.load_state_dict(state)
        return self

    # -- description ------------------------------------------------------------
    def output_shape(self, shape):
        """Per-sample output shape for a per-sample input shape (no batch).

        cyconv's layers compute it from their hyperparameters.  For any other
        module (a subclass with a forward of its own, such as a residual
        block) it is measured: one zero sample runs through ``forward`` in
        eval mode, and the module is left as it was (see ``run_zero_sample``).
        """
        return tuple(np.shape(run_zero_sample(self, shape))[1:])

    def summary(self, input_shape):
        from .summary import summary

        return summary(self, input_shape)

    def extra_repr(self):
        return ""

    def __repr__(self):
        if not self._children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._children.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines + [")"])


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ... as in PyTorch,
    or by the keys of one ``OrderedDict`` of layers (``Sequential(OrderedDict(
    [("conv1", ...), ...]))``, whose state_dict keys are then "conv1.weight",
    ...).

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> net(np.ones((5, 4), np.float32)).shape
    (5, 2)
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            named = list(layers[0].items())
        else:
            named = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in named:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {name} is {type(layer).__name__}, "
                                f"expected a cyconv.nn Module")
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"Sequential: a layer's name must be a non-empty string "
                                 f"without '.', got {name!r}")
            if hasattr(self, name):
                raise ValueError(f"Sequential: the layer name {name!r} is taken by an "
                                 f"attribute of Sequential")
            setattr(self, name, layer)

    def __iter__(self):
        return iter(self._children.values())

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        """A layer, or for a slice a Sequential of those layers under their
        names here (as PyTorch's, so its state_dict keys are this one's)."""
        if isinstance(i, slice):
            part = Sequential()
            for name in list(self._children)[i]:
                setattr(part, name, self._children[name])
            return part
        return list(self._children.values())[i]

    def forward(self, x):
        for layer in self._children.values():
            x = layer(x)
        return x

    def backward(self, grad):
        for layer in reversed(self._children.values()):
            grad = layer.backward(grad)
        return grad

    def output_shape(self, shape):
        for layer in self._children.values():
            shape = layer.output_shape(shape)
        return shape
