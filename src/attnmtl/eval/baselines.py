"""Classical baselines beside a neural result: does the multi-task model earn its keep?

Axes: N samples, F flattened input features, C classes / labels / outputs.

Per task, on the rows labelled for it in the training split (inputs flattened to (N, F), as
the model's data set hands them over), scikit-learn fits

============  ================================  ======================================
baseline      classification                    regression
============  ================================  ======================================
``majority``  the most frequent class           the training mean
``linear``    logistic regression (L2, lbfgs)   ridge (alpha 1)
``boosting``  histogram gradient boosting       histogram gradient boosting
============  ================================  ======================================

(multi-label and multi-output tasks: one model per label or output; a class column with a
single class in the training rows gets the constant classifier; features standardised on
the training rows for ``linear``), and each is scored on the same labelled test rows with the
same metrics as the neural model (:class:`~attnmtl.eval.metrics.TaskEvaluator`, regression in
natural units). Class probabilities enter the metrics as log-probabilities (logits) clipped at
1e-7, so a softmax or sigmoid gives them back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from attnmtl.core.output import MultiTaskOutput
from attnmtl.core.tasks import Task
from attnmtl.data.dataset import DataSplits
from attnmtl.data.splits import target_stats
from attnmtl.eval.metrics import TaskEvaluator

BASELINES = ("majority", "linear", "boosting")
_EPS = 1e-7

Scores = dict[str, dict[str, float]]  # task → metric → value


def _estimator(baseline: str, task: Task, seed: int) -> Any:
    """The scikit-learn model of ``baseline`` for ``task`` (see the module table)."""
    if task.kind == "regression":
        make: Callable[[], Any] = {
            "majority": lambda: DummyRegressor(strategy="mean"),
            "linear": lambda: make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
            "boosting": lambda: HistGradientBoostingRegressor(random_state=seed),
        }[baseline]
        return MultiOutputRegressor(make()) if task.size > 1 and baseline == "boosting" else make()
    classifier = {
        "majority": lambda: DummyClassifier(strategy="most_frequent"),
        "linear": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "boosting": lambda: HistGradientBoostingClassifier(random_state=seed),
    }[baseline]
    return PerLabel(classifier) if task.kind == "multilabel" else OneClassSafe(classifier)


class OneClassSafe:
    """A classifier, or the constant one when the training rows hold a single class (which
    logistic regression refuses and boosting mis-shapes)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def fit(self, x: np.ndarray, y: np.ndarray) -> OneClassSafe:
        single = len(np.unique(y)) < 2
        self.model = (DummyClassifier(strategy="most_frequent") if single else self.make()).fit(
            x, y
        )
        self.classes_ = self.model.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x))


class PerLabel:
    """One :class:`OneClassSafe` classifier per label column (multi-label tasks)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def fit(self, x: np.ndarray, y: np.ndarray) -> PerLabel:
        self.estimators_ = [OneClassSafe(self.make).fit(x, column) for column in y.T]
        return self


def _probabilities(model: Any, x: np.ndarray, classes: Sequence[Any], size: int) -> np.ndarray:
    """(N, size) probabilities over class ids 0..size-1 (classes never seen in training: 0)."""
    proba = model.predict_proba(x)
    out = np.zeros((len(x), size))
    out[:, np.asarray(classes, dtype=int)] = proba[:, : len(classes)]
    return out


def _logits(task: Task, model: Any, x: np.ndarray) -> Tensor:
    """The fitted model's predictions as the neural model's outputs (logits, or values)."""
    if task.kind == "regression":
        pred = np.asarray(model.predict(x), dtype=np.float64).reshape(len(x), task.size)
        return torch.from_numpy(pred).float()
    if task.kind == "multiclass":
        p = _probabilities(model, x, model.classes_, task.size)
        return torch.from_numpy(np.log(np.clip(p, _EPS, 1.0))).float()
    if task.kind == "binary":
        p = _probabilities(model, x, model.classes_, 2)[:, 1:]
    else:  # multilabel: one classifier per label
        p = np.column_stack([_probabilities(m, x, m.classes_, 2)[:, 1] for m in model.estimators_])
    p = np.clip(p, _EPS, 1 - _EPS)
    return torch.from_numpy(np.log(p / (1 - p))).float()


def _flat(inputs: Any) -> np.ndarray:
    if not isinstance(inputs, Tensor):
        raise ValueError("baselines need one input tensor (the data set has several arrays)")
    return inputs.reshape(len(inputs), -1).double().numpy()


def fit_baselines(
    splits: DataSplits,
    baselines: Sequence[str] = BASELINES,
    split: str = "test",
    seed: int = 0,
) -> dict[str, Scores]:
    """baseline → task → metric → value on ``split`` (see the module docstring)."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"baselines {unknown}; expected some of: {', '.join(BASELINES)}")
    train, test = splits.train, getattr(splits, split)
    x_train, x_test = _flat(train.inputs), _flat(test.inputs)
    stats = target_stats(splits.info, splits.tasks)
    results: dict[str, Scores] = {}
    for baseline in baselines:
        scores: Scores = {}
        for name, task in splits.tasks.items():
            rows = train.label_mask[name].numpy()
            test_rows = test.label_mask[name]
            if not rows.any() or not bool(test_rows.any()):
                continue
            y = train.labels[name][train.label_mask[name]].numpy()
            model = _estimator(baseline, task, seed)
            with warnings.catch_warnings():  # a fixed iteration budget, as any baseline
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(x_train[rows], y.astype(int) if task.is_classification else y)
            evaluator = TaskEvaluator({name: task}, stats)
            pred = _logits(task, model, x_test[test_rows.numpy()])
            target = test.labels[name][test_rows]
            output = MultiTaskOutput({name: pred}, {})
            everything = torch.ones(len(pred), dtype=torch.bool)
            anchor = {name: test.anchors[name][test_rows]} if name in test.anchors else None
            evaluator.update(output, {name: target}, {name: everything}, [len(pred)], anchor)
            scores.update(evaluator.compute())
        results[baseline] = scores
    return results
