"""YAML for configs: PyYAML's safe loader that also refuses aliases, anchors and deep nesting.

A config is a few flat ``key: value`` lines; nothing in one needs ``&anchor``/``*alias`` (whose
expansion is how an "alias bomb" of a few hundred bytes becomes gigabytes once a value is
printed), nor nesting deeper than :data:`MAX_DEPTH` (PyYAML composes recursively: thousands
of ``[`` raise RecursionError). Both are refused in one line naming the line of the document.
"""
from __future__ import annotations

import yaml
from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent

MAX_DEPTH = 32  # mappings/lists inside each other; the released configs use 1
MAX_BYTES = 1 << 20  # a config is a few hundred bytes; 1 MiB leaves room for any hand-written one


class YamlRefused(ValueError):
    """A YAML document this loader refuses; ``str()`` is one line with the reason and the fix."""


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors and nesting deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise YamlRefused(f"alias *{event.anchor} at line {line}: aliases are refused in "
                              "configs; write the value out")
        if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.anchor is not None:
            raise YamlRefused(f"anchor &{event.anchor} at line {line}: anchors are refused in "
                              "configs; write the value out")
        if isinstance(event, CollectionStartEvent):
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise YamlRefused(f"nesting deeper than {MAX_DEPTH} levels at line {line}: refused "
                                  "in configs; write flat 'key: value' lines")
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


def load_config_text(text: str):
    """The YAML document ``text`` as Python objects (plain types only). :class:`YamlRefused`
    for aliases, anchors, nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_BYTES`;
    ``yaml.YAMLError`` for invalid YAML."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(f"larger than {MAX_BYTES // 1024} KiB, refused as a config; give the "
                          "config file itself")
    loader = ConfigLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
