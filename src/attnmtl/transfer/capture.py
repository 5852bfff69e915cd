"""Reading attention and activations out of any model by module path, with forward hooks.

Axes: B batch, T time, H heads, D width.

Attention transfer needs what a model computes inside: the weights of an attention module, the
activation of a block, the queries, keys and values of a self-attention layer. :class:`Capture`
hooks the modules named by dotted paths (``encoder.encoder.layers.1.attn``,
``encoder.layer.5.attention.self`` in a Hugging Face BERT) and records, for every forward pass,
what each one produced — without changing the model's code or its outputs.

Three kinds of record:

* ``attention``: the weights of an attention module. attnmtl's modules return them only when
  called with ``return_weights=True``, so the hook asks for them and hands the caller the output
  it asked for. A Hugging Face self-attention module returns ``(output, weights)``, with
  ``weights=None`` unless the model runs ``attn_implementation="eager"``: that case is an error
  that says so, not an empty capture.
* ``activation``: the module's output tensor (the first one when it returns several).
* ``qkv``: the queries, keys and values (B, T, D) of a self-attention module (attnmtl's packed or
  separate projections, or Hugging Face's ``query``/``key``/``value``), with its head count.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

KINDS = ("attention", "activation", "qkv")


@dataclass
class QKV:
    """Queries, keys and values (B, T, D) of one self-attention call, heads concatenated."""

    q: Tensor
    k: Tensor
    v: Tensor
    num_heads: int


def find_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` ("" = the model); ValueError naming near paths."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        near = difflib.get_close_matches(path, names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ValueError(
            f"module path {path!r} is not in {type(model).__name__}{hint} "
            "(list them with [n for n, _ in model.named_modules()])"
        ) from None


def attention_implementation(model: nn.Module) -> str | None:
    """A Hugging Face model's attention implementation ("eager", "sdpa", ...), else None."""
    config = getattr(model, "config", None)
    value = getattr(config, "_attn_implementation", None)
    return str(value) if value is not None else None


def check_eager(model: nn.Module) -> None:
    """Raise unless a Hugging Face model computes explicit attention weights."""
    impl = attention_implementation(model)
    if impl is not None and impl != "eager":
        raise ValueError(
            f"{type(model).__name__} runs attn_implementation={impl!r}, which returns no "
            "attention weights; load it with attn_implementation='eager' "
            "(or set model.set_attn_implementation('eager'))"
        )


def _first_tensor(output: Any) -> Tensor:
    """The tensor a module produced: itself, the first of a tuple, or a named field."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    for field in ("last_hidden_state", "sequence"):
        value = getattr(output, field, None)
        if isinstance(value, Tensor):
            return value
    raise ValueError(f"module output of type {type(output).__name__} holds no tensor to capture")


class _WeightsHook:
    """Asks an attnmtl attention module for its weights and returns what the caller asked."""

    def __init__(self, module: nn.Module, sink: list[Tensor], owner: Capture) -> None:
        self.signature = inspect.signature(module.forward)
        self.sink, self.owner = sink, owner
        self.asked: list[bool | None] = []

    def before(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        if not self.owner.active:
            self.asked.append(None)
            return None
        bound = self.signature.bind(*args, **kwargs)
        self.asked.append(bool(bound.arguments.get("return_weights", False)))
        arguments = dict(bound.arguments)
        arguments["return_weights"] = True
        return (), arguments

    def after(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        asked = self.asked.pop()
        if asked is None:  # capture paused: the call ran untouched
            return None
        out, weights = output
        self.sink.append(weights)
        return output if asked else out


class Capture:
    """Forward hooks that record attention or activations of named modules.

    Args:
        model: any ``nn.Module`` (attnmtl model, Hugging Face model, ...).
        paths: record name → module path, or a list of paths (each its own name).
        kind: ``attention``, ``activation`` or ``qkv`` (see the module docstring), for all paths,
            or a mapping name → kind.

    Use as a context manager (hooks are removed on exit) or call :meth:`close`. Every call of a
    hooked module appends a record; :meth:`get` returns the last one, :meth:`clear` forgets all
    (call it before each forward pass when the hooks stay on across steps). While ``active`` is
    False the hooks record nothing and leave every call untouched (e.g. during evaluation).

    Example:
        >>> with Capture(model, ["attention.digit"]) as cap:
        ...     model(x)
        ...     weights = cap.get("attention.digit")  # (B, T)
    """

    def __init__(
        self,
        model: nn.Module,
        paths: Mapping[str, str] | Sequence[str],
        kind: str | Mapping[str, str] = "attention",
    ) -> None:
        named = dict(paths) if isinstance(paths, Mapping) else {p: p for p in paths}
        kinds = {n: kind if isinstance(kind, str) else kind.get(n, "") for n in named}
        for name, value in kinds.items():
            if value not in KINDS:
                raise ValueError(f"capture kind {value!r} for {name!r}; expected one of {KINDS}")
        self.records: dict[str, list[Any]] = {name: [] for name in named}
        self.paths = named
        self.kinds = kinds
        self.handles: list[RemovableHandle] = []
        self.active = True
        try:
            for name, path in named.items():
                self._attach(model, name, path, kinds[name])
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------------ hooks

    def _attach(self, model: nn.Module, name: str, path: str, kind: str) -> None:
        module = find_module(model, path)
        sink = self.records[name]
        if kind == "activation":

            def keep(m: nn.Module, args: Any, out: Any) -> None:
                if self.active:
                    sink.append(_first_tensor(out))

            self.handles.append(module.register_forward_hook(keep))
        elif kind == "attention":
            self._attach_attention(model, module, sink, path)
        else:
            self._attach_qkv(model, module, sink, path)

    def _attach_attention(
        self, model: nn.Module, module: nn.Module, sink: list[Any], path: str
    ) -> None:
        params = inspect.signature(module.forward).parameters
        if "return_weights" in params:  # attnmtl: ask for the weights, hand back the output
            hook = _WeightsHook(module, sink, self)
            self.handles.append(module.register_forward_pre_hook(hook.before, with_kwargs=True))
            self.handles.append(module.register_forward_hook(hook.after, with_kwargs=True))
            return
        check_eager(model)

        def record(m: nn.Module, args: Any, output: Any) -> None:
            if not self.active:
                return
            weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if not isinstance(weights, Tensor):
                raise ValueError(
                    f"module {path!r} ({type(m).__name__}) returned no attention weights; "
                    "capture an attention module (kind='attention') or use kind='activation'"
                )
            sink.append(weights)

        self.handles.append(module.register_forward_hook(record))

    def _attach_qkv(self, model: nn.Module, module: nn.Module, sink: list[Any], path: str) -> None:
        heads = getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
        if heads is None:
            config = getattr(module, "config", None) or getattr(model, "config", None)
            heads = getattr(config, "num_attention_heads", None)
        if hasattr(module, "in_proj") and isinstance(module.in_proj, nn.Linear):
            names = ["in_proj"]
        else:
            names = next(
                (
                    triple
                    for triple in (["q_proj", "k_proj", "v_proj"], ["query", "key", "value"])
                    if all(isinstance(getattr(module, n, None), nn.Linear) for n in triple)
                ),
                [],
            )
        if not names or heads is None:
            raise ValueError(
                f"module {path!r} ({type(module).__name__}) is not a self-attention module with "
                "q/k/v projections (in_proj, q_proj/k_proj/v_proj or query/key/value) and a "
                "head count"
            )
        parts: dict[str, Tensor] = {}

        def record(which: str) -> Any:
            def hook(m: nn.Module, args: Any, out: Tensor) -> None:
                if not self.active:
                    return
                if which == "in_proj":
                    q, k, v = out.chunk(3, dim=-1)  # (B, T, D) each
                    sink.append(QKV(q, k, v, int(heads)))
                    return
                parts[which] = out
                if len(parts) == 3:
                    q, k, v = (parts.pop(n) for n in names)
                    sink.append(QKV(q, k, v, int(heads)))

            return hook

        for name in names:
            self.handles.append(getattr(module, name).register_forward_hook(record(name)))

    # ------------------------------------------------------------------ records

    def get(self, name: str) -> Any:
        """The last record of ``name`` (ValueError when the module has not run)."""
        if name not in self.records:
            raise ValueError(f"no capture named {name!r}; captured: {', '.join(self.records)}")
        if not self.records[name]:
            raise ValueError(
                f"module {self.paths[name]!r} did not run in the forward pass, so nothing was "
                "captured there"
            )
        return self.records[name][-1]

    def clear(self) -> None:
        """Forget every record."""
        for sink in self.records.values():
            sink.clear()

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
