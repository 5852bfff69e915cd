"""Time-series preprocessing of sliding windows: per-window normalisation, differencing, and
regression targets relative to the window.

Axes: N samples, T steps, F features.

A window's level says little about the next step when the level drifts: a model trained on
globally standardised windows of a series whose test period lies above its training range
extrapolates badly (issue 15 measured ~4x the RMSE of a ridge on "window minus last value").
The usual remedy (Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, ch. 9;
RevIN, Kim et al., ICLR 2022) is to take each window's level, and optionally its scale, out of
the window and out of the targets, and to put them back in the predictions. None of it fits a
statistic to the data: each window is normalised by its own values, so nothing leaks from the
validation or test rows (the global ``standardize`` that may follow is fitted on training rows).

``window`` (a ``files`` data option) transforms the inputs, in this order:

- ``center``: ``none``, ``last`` (subtract each feature's last value in the window) or ``mean``
  (its mean over the window's real steps);
- ``scale``: divide each feature by its standard deviation over the window,
  ``sqrt(var + 1e-5)`` as RevIN does (the constant keeps a flat window finite);
- ``difference``: first differences, ``x[t+1] − x[t]``: the window loses its first step. A
  constant cancels, so ``center`` then only sets the targets' anchor (below).

``relative_to: FEATURE`` on a regression task trains it on ``(y − c) / s``, where ``c`` is that
feature's window centre (its last value when ``center`` is ``none``) and ``s`` its window scale
(1 without ``scale``): "next minus last" for a next-value task. Each sample's ``(c, s)`` is its
*anchor*: metrics and predictions are reported as ``c + s · prediction``, in natural units. On
a table, ``relative_to`` names an input column, whose value is ``c`` (``s`` = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

CENTERS = ("none", "last", "mean")
WINDOW_KEYS = ("center", "scale", "difference")
EPS = 1e-5  # RevIN's variance floor


@dataclass(frozen=True)
class Window:
    """How each window is transformed (see the module docstring)."""

    center: str = "none"
    scale: bool = False
    difference: bool = False

    @classmethod
    def parse(cls, options: Any) -> Window:
        """``window`` as given in a config (a mapping), checked; one-line errors."""
        if isinstance(options, Window):
            return options
        if not isinstance(options, Mapping):
            raise ValueError(f"window={options!r}; expected a mapping of {', '.join(WINDOW_KEYS)}")
        unknown = [k for k in options if k not in WINDOW_KEYS]
        if unknown:
            raise ValueError(
                f"window: unknown option {unknown[0]!r}; expected some of: {', '.join(WINDOW_KEYS)}"
            )
        center = options.get("center", "none")
        if center not in CENTERS:
            raise ValueError(f"window.center={center!r}; expected one of: {', '.join(CENTERS)}")
        for key in ("scale", "difference"):
            if not isinstance(options.get(key, False), bool):
                raise ValueError(f"window.{key}={options[key]!r}; expected true or false")
        return cls(center, bool(options.get("scale", False)), bool(options.get("difference")))

    @property
    def changes_inputs(self) -> bool:
        """Whether the inputs are transformed at all."""
        return self.center != "none" or self.scale or self.difference

    def as_dict(self) -> dict[str, Any]:
        """The options, as a config holds them."""
        return {"center": self.center, "scale": self.scale, "difference": self.difference}


def _valid(x: Tensor, lengths: Tensor | None) -> Tensor:
    """(N, T, 1) float weights: 1 on real steps, 0 on padding."""
    if lengths is None:
        return torch.ones(x.shape[0], x.shape[1], 1, dtype=x.dtype, device=x.device)
    steps = torch.arange(x.shape[1], device=x.device)
    return (steps < lengths.to(x.device)[:, None]).to(x.dtype).unsqueeze(-1)


def window_stats(
    x: Tensor, lengths: Tensor | None, center: str, scale: bool
) -> tuple[Tensor, Tensor]:
    """Each window's centre and scale per feature, (N, F) each: the last real value or the
    mean over real steps (``center`` ``last`` for ``none``, as an anchor needs one), and the
    standard deviation over real steps (ones without ``scale``)."""
    weight = _valid(x, lengths)  # (N, T, 1)
    count = weight.sum(1)  # (N, 1)
    mean = (x * weight).sum(1) / count if center == "mean" or scale else None  # (N, F)
    if center == "mean" and mean is not None:
        middle = mean
    elif lengths is None:
        middle = x[:, -1]
    else:
        last = (lengths.to(x.device) - 1).clamp_min(0)
        middle = x[torch.arange(x.shape[0], device=x.device), last]
    if not scale or mean is None:
        return middle, torch.ones_like(middle)
    var = (((x - mean.unsqueeze(1)) ** 2) * weight).sum(1) / count
    return middle, torch.sqrt(var + EPS)


def transform_windows(x: Tensor, lengths: Tensor | None, window: Window) -> Tensor:
    """(N, T, F) raw windows → what the model reads ((N, T − 1, F) with ``difference``);
    padding stays as it was (lengths are refused with ``difference``)."""
    if window.center != "none" or window.scale:
        middle, spread = window_stats(x, lengths, window.center, window.scale)
        if window.center == "none":
            middle = torch.zeros_like(middle)
        out = (x - middle.unsqueeze(1)) / spread.unsqueeze(1)
        if lengths is not None:
            out = torch.where(_valid(x, lengths).bool(), out, x)
        x = out
    if window.difference:
        if lengths is not None:
            raise ValueError(
                "window.difference with padded sequences (lengths) is not supported; "
                "difference the windows before padding them"
            )
        x = x[:, 1:] - x[:, :-1]
    return x


def anchors(
    x: Tensor,
    lengths: Tensor | None,
    layout: str,
    window: Window | None,
    relative: Mapping[str, int],
) -> dict[str, Tensor]:
    """Task → (N, 2) per-sample ``(c, s)`` of each regression task trained relative to an
    input: a sequence feature's window centre and scale, or a table column's value and 1.
    ``x`` holds the raw inputs; ``relative`` maps task → feature (column) index."""
    if not relative:
        return {}
    if layout == "table":
        return {
            task: torch.stack([x[:, j], torch.ones_like(x[:, j])], 1)
            for task, j in relative.items()
        }
    w = window or Window()
    middle, spread = window_stats(x, lengths, w.center, w.scale)  # (N, F)
    return {task: torch.stack([middle[:, j], spread[:, j]], 1) for task, j in relative.items()}


def to_anchor(values: Tensor, anchor: Tensor) -> Tensor:
    """Relative targets (N,) or (N, C) → natural ones: ``c + s · values``."""
    c, s = anchor[:, 0], anchor[:, 1]
    if values.dim() == 2:
        c, s = c[:, None], s[:, None]
    return c.to(values) + s.to(values) * values


def from_anchor(values: Tensor, anchor: Tensor) -> Tensor:
    """Natural targets (N,) or (N, C) → relative ones: ``(values − c) / s``."""
    c, s = anchor[:, 0], anchor[:, 1]
    if values.dim() == 2:
        c, s = c[:, None], s[:, None]
    return (values - c.to(values)) / s.to(values)
