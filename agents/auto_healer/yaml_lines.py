"""A safe YAML loader that remembers lines, so config errors can say `file:line`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and list item."""


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = _LineDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.MarkedYAMLError(
                "while loading", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: LineLoader, node: yaml.SequenceNode) -> list[Any]:
    seq = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    seq.lines = [child.start_mark.line + 1 for child in node.value]
    return seq


class _LineDict(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


class _LineList(list[Any]):
    lines: list[int]


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def line_of(data: Any, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the value at `loc` (a pydantic error location), or of its parent."""
    line = None
    for key in loc:
        if isinstance(data, _LineDict) and isinstance(key, str) and key in data:  # noqa: SIM114
            line, data = data.lines[key], data[key]
        elif isinstance(data, _LineList) and isinstance(key, int) and 0 <= key < len(data):
            line, data = data.lines[key], data[key]
        else:
            break
    return line
