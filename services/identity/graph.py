"""The identity graph of one profile: nodes (identifiers, records) joined by edges.

An edge says why two nodes belong to one person: seen together on an event
(`rule="seen_together"`) or matched with a probability (`rule="match"`, `score`).
A profile is one connected component; removing edges or nodes may split it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RECORD = "record"


def node(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def node_kind(name: str) -> str:
    return name.split(":", 1)[0]


def node_value(name: str) -> str:
    return name.split(":", 1)[1]


def edge_key(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{first}|{second}"


def new_edge(a: str, b: str, rule: str, at: str, *, score: float | None = None,
             evidence: str | None = None) -> dict[str, Any]:
    first, second = sorted((a, b))
    return {"a": first, "b": second, "rule": rule, "score": score, "at": at,
            "evidence": evidence}


def components(nodes: Iterable[str], edges: Iterable[dict[str, Any]]) -> list[list[str]]:
    """Connected components, each in the order its nodes were given (oldest first)."""
    ordered = list(nodes)
    neighbours: dict[str, list[str]] = {n: [] for n in ordered}
    for edge in edges:
        if edge["a"] in neighbours and edge["b"] in neighbours:
            neighbours[edge["a"]].append(edge["b"])
            neighbours[edge["b"]].append(edge["a"])
    seen: set[str] = set()
    found = []
    for start in ordered:
        if start in seen:
            continue
        seen.add(start)
        stack, members = [start], set()
        while stack:
            current = stack.pop()
            members.add(current)
            for other in neighbours[current]:
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        found.append([n for n in ordered if n in members])
    return found


def path_between(start: str, goal: str, edges: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The edges of a shortest path from start to goal (empty if none or start is goal)."""
    adjacent: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for edge in edges:
        adjacent.setdefault(edge["a"], []).append((edge["b"], edge))
        adjacent.setdefault(edge["b"], []).append((edge["a"], edge))
    came_from: dict[str, tuple[str, dict[str, Any]] | None] = {start: None}
    frontier = [start]
    while frontier and goal not in came_from:
        following = []
        for current in frontier:
            for other, edge in adjacent.get(current, ()):
                if other not in came_from:
                    came_from[other] = (current, edge)
                    following.append(other)
        frontier = following
    if goal not in came_from or start == goal:
        return []
    path = []
    current = goal
    while came_from[current] is not None:
        previous, edge = came_from[current]
        path.append(edge)
        current = previous
    return list(reversed(path))
