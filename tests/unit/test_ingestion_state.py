"""One partition's dedup ids and aggregate buckets: windows, replays, segments and expiry."""

from __future__ import annotations

from services.ingestion.state import PartitionState, Segment

MINUTE = 60.0


def fresh(partition: int = 0) -> PartitionState:
    return PartitionState(partition, dedup_window_s=600, bucket_s=60, horizon_s=3600)


def test_an_id_from_another_record_is_a_duplicate_for_one_to_two_windows() -> None:
    state = fresh()
    assert not state.seen_before("s\x1fe1", 1_000.0, offset=0)
    assert not state.seen_before("s\x1fe1", 1_000.0, offset=5), "not remembered yet"
    state.remember("s\x1fe1", 1_000.0, offset=0)

    assert state.seen_before("s\x1fe1", 1_000.0, offset=5)
    assert state.seen_before("s\x1fe1", 1_799.0, offset=6)  # the next window
    assert not state.seen_before("s\x1fe1", 1_800.0, offset=7)  # two windows on


def test_a_replayed_record_is_not_its_own_duplicate_nor_counted_twice() -> None:
    state = fresh()
    state.remember("s\x1fe1", 1_000.0, offset=3)
    state.add("s\x1fu1\x1famount", 1_000.0, 10.0, offset=3)
    state.seal()

    assert not state.seen_before("s\x1fe1", 1_000.0, offset=3)
    assert not state.counts(1_000.0, offset=3)
    state.remember("s\x1fe1", 1_000.0, offset=3)
    state.add("s\x1fu1\x1famount", 1_000.0, 10.0, offset=3)
    assert state.window("s\x1fu1\x1famount", 1_000.0, minutes=10) == (1.0, 10.0)
    assert state.seal() is None


def test_a_window_sums_the_buckets_it_touches() -> None:
    state = fresh()
    key = "s\x1fu1\x1famount"
    for offset, (minutes, value) in enumerate([(0, 10.0), (3, 20.0), (12, 60.0)]):
        state.add(key, 6_000.0 + minutes * MINUTE, value, offset)
    state.add("s\x1fu2\x1famount", 6_000.0, 500.0, offset=9)

    assert state.window(key, 6_000.0 + 3 * MINUTE, minutes=10) == (2.0, 30.0)
    assert state.window(key, 6_000.0 + 12 * MINUTE, minutes=10) == (2.0, 80.0)
    assert state.window(key, 6_000.0 + 12 * MINUTE, minutes=1) == (1.0, 60.0)
    assert state.window("s\x1fu3\x1famount", 6_000.0, minutes=10) == (0.0, 0.0)


def test_a_window_can_count_a_value_before_it_is_added_exactly_as_add_will() -> None:
    state = fresh()
    key, at = "s\x1fu1\x1famount", 6_000.0 + 3 * MINUTE
    state.add(key, 6_000.0, 0.1, offset=0)
    state.add(key, at, 0.2, offset=1)
    assert state.counts(at, offset=2)
    ahead = state.window(key, at, minutes=10, adding=0.7)
    elsewhere = state.window("s\x1fu2\x1famount", at, minutes=10, adding=5.0)

    state.add(key, at, 0.7, offset=2)
    assert ahead == state.window(key, at, minutes=10) == (3.0, 0.1 + (0.2 + 0.7))
    assert ahead != (3.0, (0.1 + 0.2) + 0.7), "summed per bucket first, to the last bit"
    assert elsewhere == (1.0, 5.0)


def test_segments_rebuild_the_same_state_in_any_order() -> None:
    state = fresh(partition=2)
    sealed = []
    for offset in range(6):
        state.remember(f"s\x1fe{offset}", 1_000.0 + offset, offset)
        state.add("s\x1fu1\x1famount", 1_000.0 + offset, float(offset), offset)
        if offset % 2:
            sealed.append(state.seal())
    assert [key for key, _ in sealed] == ["2:0", "2:2", "2:4"]

    rebuilt = fresh(partition=2)
    rebuilt.load(reversed(sealed))

    assert rebuilt.applied_offset == 5
    assert rebuilt.window("s\x1fu1\x1famount", 1_010.0, minutes=5) == (6.0, 15.0)
    assert rebuilt.seen_before("s\x1fe4", 1_004.0, offset=40)
    assert not rebuilt.seen_before("s\x1fe4", 1_004.0, offset=4)  # a replay of offset 4
    assert Segment.from_bytes(sealed[0][1]) == Segment(
        0,
        1,
        1_001.0,
        seen=[("s\x1fe0", 1, 0), ("s\x1fe1", 1, 1)],
        added=[("s\x1fu1\x1famount", 16, 0.0, 0), ("s\x1fu1\x1famount", 16, 1.0, 1)],
    )


def test_overlapping_segments_of_a_zombie_and_its_successor_count_each_record_once() -> None:
    """A worker paused past its session timeout saves the segment of offsets 0-5 after its
    successor replayed them in batches of other bounds: each value is still counted once."""

    def segments(bounds: list[range]) -> list[tuple[str, bytes]]:
        state = fresh(partition=2)
        saved = []
        for batch in bounds:
            state.applied_offset = batch.start - 1
            for offset in batch:
                state.remember(f"s\x1fe{offset}", 1_000.0 + offset, offset)
                state.add("s\x1fu1\x1famount", 1_000.0 + offset, float(offset), offset)
            saved.append(state.seal())
        return saved

    zombie, successor = segments([range(0, 6)]), segments([range(0, 2), range(2, 4), range(4, 9)])
    for order in (zombie + successor, successor + zombie, successor[::-1] + zombie):
        rebuilt = fresh(partition=2)
        rebuilt.load(order)

        assert rebuilt.applied_offset == 8
        assert rebuilt.window("s\x1fu1\x1famount", 1_010.0, minutes=5) == (9.0, 36.0)


def test_state_and_segments_beyond_the_retention_expire() -> None:
    state = fresh()
    state.remember("s\x1fold", 0.0, offset=0)
    state.add("s\x1fu1\x1famount", 0.0, 1.0, offset=0)
    old_key, _ = state.seal()
    assert state.expire() == []

    late = 3_600.0 + 60.0 + 600.0 + 1.0  # retention (horizon + bucket) and a window on
    state.remember("s\x1fnew", late, offset=1)
    state.seal()

    assert state.expire() == [old_key]
    assert state.window("s\x1fu1\x1famount", 0.0, minutes=1) == (0.0, 0.0)
    assert not state.seen_before("s\x1fold", 0.0, offset=2)  # too old to tell, and not kept
    assert state.seal() is None
