"""segments' nameko entrypoints."""

from __future__ import annotations

from functools import partial

from marshmallow import ValidationError
from nameko.rpc import rpc
from nameko.timer import timer

from services.segments.application import SegmentsApplication
from services.segments.schemas import SegmentSchema
from services.segments.translation import translator
from shared.contracts import PROFILE_CHANGED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status
from shared.partitions import partition_of

_segment_schema = SegmentSchema()


class SegmentsService:
    name = "segments"
    app = ServiceApp(SegmentsApplication, translator)

    @partitioned_handler(PROFILE_CHANGED, "segments")
    def on_profile_changed(self, envelope):
        return self.app.apply_batch(envelope.tracking_key, envelope.items)

    @timer(interval=1)
    def expire_windows(self):
        return self.app.expire_due(partial(partition_of, partitions=self.app.settings.partitions))

    @timer(interval=5)
    def refresh_definitions(self):
        self.app.refresh_catalog()

    @rpc
    def define_segment(self, definition: dict):
        try:
            data = _segment_schema.load(definition)
        except ValidationError as error:
            return {"error": _first_error(error)}
        return {"segment": self.app.define_segment(data["name"], data["rule"],
                                                    data["description"])}

    @rpc
    def remove_segment(self, name: str):
        return self.app.remove_segment(name)

    @rpc
    def list_segments(self):
        return self.app.segments()

    @rpc
    def segment_sizes(self):
        return self.app.segment_sizes()

    @rpc
    def memberships(self, profile_id: str):
        return self.app.memberships(profile_id)

    @rpc
    def status(self):
        return service_status(self.name, self.app)


def _first_error(error: ValidationError) -> dict:
    messages = error.normalized_messages()
    field, problems = next(iter(messages.items()))
    problem = str(problems[0] if isinstance(problems, list) else problems)
    # Rule errors already start with their path ("rule.and[1].count.op: …").
    message = problem if problem.startswith(field) else f"{field}: {problem}"
    return {"code": "invalid_segment", "field": field, "message": message}
