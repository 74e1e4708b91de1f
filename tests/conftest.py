"""Shared fixtures: a tiny randomly initialised llama-style model built inside the tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the a movie film is was good bad great awful fun dull plot actor story boring lovely "
    "terrible best worst not very really quite long short funny sad charming"
).split()


def tiny_config(arch: str, vocab_size: int, layers: int, hidden: int):
    """A small random model of ``arch`` (``llama`` by default; the others for the architectures the
    packed pass supports, and ``gpt2`` for one it does not). Returns ``(config, model class)``."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=128, pad_token_id=0)
    decoder = dict(common, num_key_value_heads=2, bos_token_id=2, eos_token_id=3)
    if arch == "llama":
        return tf.LlamaConfig(**decoder), tf.LlamaModel
    if arch == "qwen2":
        return tf.Qwen2Config(**decoder), tf.Qwen2Model
    if arch == "qwen3":
        return tf.Qwen3Config(**decoder, head_dim=hidden // 4), tf.Qwen3Model
    if arch == "mistral":  # a window shorter than the test texts: the sliding-window mask is exercised
        return tf.MistralConfig(**decoder, sliding_window=3), tf.MistralModel
    if arch == "gemma3_text":
        kinds = (["sliding_attention", "full_attention"] * layers)[:layers]
        return (tf.Gemma3TextConfig(**decoder, head_dim=hidden // 4, sliding_window=3, layer_types=kinds),
                tf.Gemma3TextModel)
    if arch == "bert":
        return tf.BertConfig(**common), tf.BertModel
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=4, n_positions=128,
                             pad_token_id=0, bos_token_id=2, eos_token_id=3), tf.GPT2Model
    raise ValueError(f"no tiny {arch}")


def build_tiny_model(folder, *, layers: int = 3, hidden: int = 32, seed: int = 0, arch: str = "llama"):
    """Save a random model (llama-style unless ``arch`` says otherwise, :func:`tiny_config`) and a
    word-level tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]",
                                  eos_token="[EOS]")
    torch.manual_seed(seed)
    cfg, model_class = tiny_config(arch, len(vocab), layers, hidden)
    model = model_class(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _private_cache_root(tmp_path_factory):
    """No test writes to the user's cache: every test without its own ``cache_dir`` shares one
    temporary cache root for the session (child processes inherit it through the environment)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERFUSE_CACHE", str(tmp_path_factory.mktemp("layerfuse-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machine is small and shared: one intra-op thread avoids oversubscription, which
    slows the tiny networks of the unit tests 10-30x. Restored after the module."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("LAYERFUSE_CACHE", str(d))
    return d
