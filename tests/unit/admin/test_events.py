"""The page's change signal: never blocks, and a stream that stops reading is dropped."""

from __future__ import annotations

from router.admin.events import QUEUE_BOUND, Changes, Stream


def test_a_stream_that_stops_reading_is_dropped_and_the_others_keep_theirs() -> None:
    changes = Changes()
    changes.signal()  # no stream open: nothing to tell
    slow, reading = Stream(), Stream()
    changes.streams |= {slow, reading}
    for _ in range(QUEUE_BOUND + 1):
        changes.signal()
        while not reading.queue.empty():
            reading.queue.get_nowait()
    assert slow.dropped and slow not in changes.streams and changes.dropped == 1
    assert not reading.dropped and reading in changes.streams
    changes.signal()
    assert reading.queue.get_nowait() == changes.seq == QUEUE_BOUND + 3  # the first had no stream


def test_close_ends_every_stream_even_a_full_one() -> None:
    changes = Changes()
    full, idle = Stream(), Stream()
    changes.streams |= {full, idle}
    for _ in range(QUEUE_BOUND):
        changes.signal()
    idle_items = [idle.queue.get_nowait() for _ in range(QUEUE_BOUND)]
    assert idle_items[-1] == QUEUE_BOUND
    changes.close()
    assert not changes.streams
    assert idle.queue.get_nowait() is None and idle.dropped
    assert full.dropped  # its queue had no room for the end: the flag ends it
