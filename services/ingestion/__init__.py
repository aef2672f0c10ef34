"""Feature ingestion: validates raw events into feature events keyed by entity."""
