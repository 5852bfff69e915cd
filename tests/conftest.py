"""Shared set-up for every test.

Every test runs on one intra-op thread, whatever the shell sets (``OMP_NUM_THREADS`` unset, 1 or
2): the tensors in unit tests are tiny, and on a loaded 2-core machine waking a second OpenMP
thread costs milliseconds per op. More importantly, runs compared bit for bit (an uninterrupted
run against a resumed one) must train under one thread count, and a module- or session-scoped
fixture that trains a reference run is set up *before* any function-scoped fixture. So the count
is set once for the session, in ``pytest_configure`` (before any fixture of any scope), and a
function-scoped fixture puts it back after a test that changed it.
"""

from pathlib import Path

import pytest
import torch

THREADS = 1  # the intra-op thread count every test starts with


def pytest_configure(config):
    torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 3-layer BERT (width 16, vocabulary 40: [PAD] [UNK] [CLS] [SEP] [MASK], a-z and
    ##a-##i) with safetensors weights and a WordPiece tokenizer, in a folder: what
    ``encoder: hf`` and ``textmt``'s ``tokenizer`` read, in milliseconds. Skips without
    transformers and peft (``attnmtl[text]``)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    folder = tmp_path_factory.mktemp("tiny-bert")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters]
    vocab += [f"##{c}" for c in letters[: 40 - len(vocab)]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # read back from vocab.txt beside the model's config.json (transformers 4 and 5 alike)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer.vocab_size == 40, tokenizer.vocab_size
    tokenizer.save_pretrained(folder)
    return folder
