import pytest

from workers.stop_sequences import StopSequenceMatcher


def run(pieces, stops):
    matcher = StopSequenceMatcher(stops)
    out = ""
    for piece in pieces:
        out += matcher.feed(piece)
        if matcher.matched:
            return out, matcher.matched
    return out + matcher.flush(), None


@pytest.mark.parametrize("cut", range(16))
def test_stop_sequence_split_anywhere_is_never_emitted(cut):
    text = "Hello STOP world"
    out, matched = run([text[:cut], text[cut:]], ["STOP"])
    assert (out, matched) == ("Hello ", "STOP")


def test_earliest_of_several_stop_sequences_wins():
    assert run(["a END b HALT"], ["HALT", "END"]) == ("a ", "END")


def test_partial_match_that_does_not_complete_is_released():
    assert run(["ST", "ART", " now"], ["STOP"]) == ("START now", None)


def test_no_stop_sequences_passes_through():
    matcher = StopSequenceMatcher([])
    assert matcher.feed("abc") == "abc" and matcher.matched is None
