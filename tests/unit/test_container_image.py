"""The Dockerfile, read as a reviewer would: pinned base, non-root, no secrets baked in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|WRITE_KEYS|PRIVATE|CREDENTIAL|API_?KEY)", re.I)
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


def instructions(dockerfile: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in dockerfile.structure if i["instruction"] == name]


def test_the_image_is_built_in_stages_from_a_base_pinned_to_an_exact_version(dockerfile):
    bases = dockerfile.parent_images

    assert len(bases) >= 2, "multi-stage: a build stage and a runtime stage"
    for base in bases:
        assert EXACT_TAG.match(base), f"{base} is not pinned to an exact version or digest"
        assert not base.endswith((":latest", ":3", ":3.11"))


def test_the_final_stage_runs_as_a_numeric_non_root_user(dockerfile):
    users = instructions(dockerfile, "USER")
    final_from = max(i["startline"] for i in dockerfile.structure if i["instruction"] == "FROM")
    final_users = [i["value"] for i in dockerfile.structure
                   if i["instruction"] == "USER" and i["startline"] > final_from]

    assert users and final_users, "the runtime stage must switch user"
    user, _, group = final_users[-1].partition(":")
    assert user.isdigit() and int(user) > 0, "a numeric uid lets runAsNonRoot verify it"
    assert not group or (group.isdigit() and int(group) > 0)


def test_no_secret_is_baked_into_the_image(dockerfile):
    baked = [*dockerfile.envs, *(v.split("=")[0] for v in instructions(dockerfile, "ARG"))]

    assert not [name for name in baked if SECRET_NAME.search(name)]
    copied = " ".join(instructions(dockerfile, "COPY") + instructions(dockerfile, "ADD"))
    assert not re.search(r"\.env\b|\.pem\b|\.key\b|destinations.*\.json", copied)


def test_the_build_context_leaves_out_secrets_and_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())

    assert {".git", ".venv", ".env", ".env.*", "*.pem", "*.key", "data", "tests"} <= ignored


def test_the_image_runs_a_service_named_by_argument(dockerfile):
    entrypoint = json.loads(instructions(dockerfile, "ENTRYPOINT")[-1])
    command = json.loads(instructions(dockerfile, "CMD")[-1])

    assert entrypoint == ["tessera"]
    assert command[0] == "run" and len(command) == 2
    assert dockerfile.envs["TESSERA_OPS_PORT"] in instructions(dockerfile, "EXPOSE")[-1].split()
