"""Recognising records that a replay sent again, without remembering every record.

Every derived record names its `shared.events.Provenance`. Records derived from one input
partition and read from one partition downstream are in the input's order there, and a replay
after a crash re-sends a suffix of what was sent before it, so the highest input offset applied
per lineage (input partition and the partition read) is all a consumer keeps to apply each
input once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.events import Provenance


@dataclass
class Applied:
    """Per lineage, the highest input offset applied (kept in its consumer's state)."""

    offsets: dict[str, int] = field(default_factory=dict)

    def first_time(self, lineage: str, offset: int) -> bool:
        """Record `offset` of `lineage` as applied; False if it, or a later one, was already."""
        if offset <= self.offsets.get(lineage, -1):
            return False
        self.offsets[lineage] = offset
        return True


def lineage_of(
    provenance: Provenance | None, topic: str, partition: int, offset: int
) -> tuple[str, int]:
    """The lineage and offset a record read at `topic`, `partition` and `offset` is applied
    under: its provenance's input partition by way of the partition it was read from (records
    of one input that took different paths keep no order between them), and the input offset;
    for a record written without provenance, its own position."""
    if provenance is None:
        return f"{topic}[{partition}]", offset
    return f"{provenance.lineage}>{topic}[{partition}]", provenance.offset
