"""Everything that touches kombu lives here; services see only publishers and envelopes."""
