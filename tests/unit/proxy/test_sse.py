"""The SSE event splitter: whole events out, bytes unchanged, whatever the chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.proxy.sse import EventSplitter

STREAM = (
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b'event: content_block_delta\ndata: {"text":"caf\xc3\xa9 \xe2\x9c\x93"}\n\n'
    b"data: line one\r\ndata: line two\r\n\r\n"
    b"data: cr only\r\r"
    b"data: [DONE]\n\n"
)
EVENTS = [
    b'event: message_start\ndata: {"type":"message_start"}\n\n',
    b'event: content_block_delta\ndata: {"text":"caf\xc3\xa9 \xe2\x9c\x93"}\n\n',
    b"data: line one\r\ndata: line two\r\n\r\n",
    b"data: cr only\r\r",
    b"data: [DONE]\n\n",
]


def split_all(chunks: list[bytes]) -> list[bytes]:
    splitter = EventSplitter()
    events = [e for c in chunks for e in splitter.feed(c)]
    rest = splitter.flush()
    return events + ([rest] if rest else [])


def test_whole_stream_in_one_chunk() -> None:
    assert split_all([STREAM]) == EVENTS


def test_split_at_every_offset() -> None:
    for cut in range(len(STREAM) + 1):
        assert split_all([STREAM[:cut], STREAM[cut:]]) == EVENTS, cut


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\n\r") == []
    assert splitter.feed(b"\ndata: b\n\n") == [b"data: a\r\n\r\n", b"data: b\n\n"]


def test_unterminated_tail_is_returned_by_flush() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\n\ndata: partial") == [b"data: a\n\n"]
    assert splitter.flush() == b"data: partial"


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_chunking_reassembles_exactly(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    events = split_all(chunks)
    assert events == EVENTS
    assert b"".join(events) == STREAM


LINE_ENDS = (b"\n", b"\r\n", b"\r")
FIELD_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=12,
)


@st.composite
def sse_events(draw: st.DrawFn) -> bytes:
    """One valid event: field lines (any text, so multi-byte UTF-8) and an empty line."""
    lines = draw(
        st.lists(
            st.tuples(st.sampled_from(["data: ", "data:", "event: ", "id: ", ": "]), FIELD_TEXT),
            min_size=1,
            max_size=4,
        )
    )
    ends = draw(st.lists(st.sampled_from(LINE_ENDS), min_size=len(lines), max_size=len(lines)))
    # After a lone CR, an LF would join it into one CRLF line end, not end the event.
    blank: bytes = draw(st.sampled_from(LINE_ENDS[1:] if ends[-1] == b"\r" else LINE_ENDS))
    body = b"".join(
        (field + text).encode() + end for (field, text), end in zip(lines, ends, strict=True)
    )
    return body + blank


@given(st.lists(sse_events(), min_size=1, max_size=6))
def test_any_valid_stream_split_at_any_byte_reassembles_exactly(events: list[bytes]) -> None:
    stream = b"".join(events)
    for cut in range(len(stream) + 1):  # inside multi-byte characters and CRLFs too
        assert split_all([stream[:cut], stream[cut:]]) == events, cut
    for event in events:
        event.decode()  # whole events only: never half a character
