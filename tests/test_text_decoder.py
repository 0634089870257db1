"""Text decoding across generation segments: a resumed job's text equals an uninterrupted one's."""

from pathlib import Path
import pickle

from mlx_lm.tokenizer_utils import load as load_tokenizer
import pytest

from hearth.settings import BUNDLED_MODEL
from workers.engine import TextDecoder


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(Path(BUNDLED_MODEL))


def awkward_tokens(tokenizer) -> list:
    """Words, lone spaces, a split multi-byte character and a long run of invalid bytes."""
    vocab = tokenizer._tokenizer.get_vocab()
    invalid = [vocab[c] for c in "ĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿĿ" if c in vocab]
    assert len(invalid) == 30, "the bundled vocabulary has byte tokens"
    text = tokenizer.encode("Hello  there, naïve café: ", add_special_tokens=False)
    return text + invalid + tokenizer.encode(" world → done", add_special_tokens=False)


def new_decoder(tokenizer, state=None):
    return TextDecoder(lambda: tokenizer.detokenizer, state)


def test_a_decoder_restored_from_its_pickled_state_continues_exactly(tokenizer):
    tokens = awkward_tokens(tokenizer)
    whole = new_decoder(tokenizer)
    expected = "".join(whole.add(t) for t in tokens) + whole.flush()
    assert "café" in expected and "\ufffd" in expected

    for cut in range(1, len(tokens)):
        first = new_decoder(tokenizer)
        text = "".join(first.add(t) for t in tokens[:cut])
        state = pickle.loads(pickle.dumps(first.state()))
        assert len(pickle.dumps(state)) < 4096, "the vocabulary tables are not part of the state"
        resumed = new_decoder(tokenizer, state)
        text += "".join(resumed.add(t) for t in tokens[cut:]) + resumed.flush()
        assert text == expected, cut


def test_a_fresh_decoder_per_segment_would_lose_text(tokenizer):
    # What the replay prevents: mlx-lm's per-call detokenizer drops held-back bytes and a leading space.
    tokens = awkward_tokens(tokenizer)
    whole = new_decoder(tokenizer)
    expected = "".join(whole.add(t) for t in tokens) + whole.flush()
    cut = len(tokens) - 3
    first, second = new_decoder(tokenizer), new_decoder(tokenizer)
    naive = "".join(first.add(t) for t in tokens[:cut]) + "".join(second.add(t) for t in tokens[cut:]) + second.flush()
    assert naive != expected
