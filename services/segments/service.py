"""segments' nameko entrypoints."""

from __future__ import annotations

from marshmallow import Schema, ValidationError
from nameko.rpc import rpc
from nameko.timer import timer

from services.segments.application import DefinitionError, SegmentsApplication
from services.segments.schemas import ComputedTraitSchema, RuleOnlySchema, SegmentSchema
from services.segments.translation import translator
from shared.contracts import PROFILE_CHANGED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status

_segment_schema = SegmentSchema()
_computed_schema = ComputedTraitSchema()
_preview_schema = RuleOnlySchema()

# A backfill works in pages for at most this long per tick, so live batches go on between.
BACKFILL_SLICE_SECONDS = 0.5


class SegmentsService:
    name = "segments"
    app = ServiceApp(SegmentsApplication, translator)

    @partitioned_handler(PROFILE_CHANGED, "segments")
    def on_profile_changed(self, envelope):
        return self.app.apply_batch(envelope.tracking_key, envelope.items)

    @timer(interval=1)
    def expire_windows(self):
        return self.app.expire_due()

    @timer(interval=0.5)
    def run_backfills(self):
        return self.app.run_backfills(budget_seconds=BACKFILL_SLICE_SECONDS)

    @rpc
    def define_segment(self, definition: dict):
        return _checked(_segment_schema, definition, "invalid_segment", lambda data: {
            "segment": self.app.define_segment(data["name"], data["rule"], data["description"])})

    @rpc
    def remove_segment(self, name: str):
        try:
            return self.app.remove_segment(name)
        except DefinitionError as error:
            return {"error": {"code": "segment_in_use", "field": error.field,
                              "message": error.message}}

    @rpc
    def list_segments(self):
        return self.app.segments()

    @rpc
    def segment_sizes(self):
        return self.app.segment_sizes()

    @rpc
    def members(self, segment: str, limit: int = 100, after: str = ""):
        return self.app.members(segment, limit, after)

    @rpc
    def preview(self, request: dict):
        return _checked(_preview_schema, request, "invalid_rule",
                        lambda data: self.app.preview(data["rule"], data["sample"]))

    @rpc
    def backfills(self):
        return self.app.backfills()

    @rpc
    def define_computed_trait(self, definition: dict):
        return _checked(_computed_schema, definition, "invalid_computed_trait",
                        lambda data: {"computed_trait": self.app.define_computed_trait(data)})

    @rpc
    def remove_computed_trait(self, name: str):
        return self.app.remove_computed_trait(name)

    @rpc
    def list_computed_traits(self):
        return self.app.computed_traits()

    @rpc
    def computed_traits_of(self, profile_id: str):
        return self.app.computed_of(profile_id)

    @rpc
    def memberships(self, profile_id: str):
        return self.app.memberships(profile_id)

    @rpc
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]):
        return self.app.export_subject(profile_ids, identifiers)

    @rpc
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]], **hashes):
        """Erasure of one person in this service (services/consent/erasure.py)."""
        return self.app.erase_subject(profile_ids, identifiers, **hashes)

    @rpc
    def status(self):
        running = sum(1 for b in self.app.backfills() if b["status"] == "running")
        return {**service_status(self.name, self.app), "backfills_running": running}


def _checked(schema: Schema, payload: dict, code: str, call):
    """Load with the schema, call the application; errors name the field and the rule."""
    try:
        return call(schema.load(payload))
    except ValidationError as error:
        return {"error": {"code": code, **_first_error(error)}}
    except DefinitionError as error:
        return {"error": {"code": code, "field": error.field, "message": error.message}}


def _first_error(error: ValidationError) -> dict:
    messages = error.normalized_messages()
    field, problems = next(iter(messages.items()))
    problem = str(problems[0] if isinstance(problems, list) else problems)
    # Rule errors already start with their path ("rule.and[1].count.op: …").
    message = problem if problem.startswith(field) else f"{field}: {problem}"
    return {"field": field, "message": message}
