"""Checking a model card against the Model Card Toolkit's JSON schema (v0.0.2), vendored with its licence in
``model_card_schema/`` (see its README.md). Plain Python; ``jsonschema`` is imported only when a card is checked.

The toolkit's schema refuses unknown properties at its top level only; `validate_model_card` also refuses them
in every nested object the schema describes (a strict copy of the schema), so a card never carries a field the
toolkit does not know, and it checks what the schema only annotates: every graphic is a base64 PNG.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

SCHEMA_VERSION = "0.0.2"  # the card's ``schema_version``: the vendored schema's
SCHEMA_FOLDER = "model_card_schema"
SCHEMA_FILE = "model_card.schema.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LISTED_PROBLEMS = 3  # problems named in the error line; the count is always whole


class ModelCardError(ValueError):
    """A model card that does not follow the Model Card Toolkit's schema."""


def load_schema() -> dict[str, Any]:
    """The vendored schema, as the toolkit publishes it."""
    text = resources.files(__package__).joinpath(SCHEMA_FOLDER).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` in which every object that lists its ``properties`` allows no others."""
    strict = copy.deepcopy(dict(schema))
    for node in _subschemas(strict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return strict


def _subschemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside ``node`` (a schema), ``node`` first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subschemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _subschemas(item)


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    validator_class = jsonschema.Draft7Validator  # the schema's own "$schema"
    schema = strict_schema(load_schema())
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def card_problems(card: Mapping[str, Any]) -> list[str]:
    """Every way ``card`` breaks the schema (strictly) or holds a graphic that is not a base64 PNG, as
    ``<where in the card>: <what>``; none for a valid card."""
    problems = [f"{_where(error.absolute_path)}: {error.message}"
                for error in sorted(_validator().iter_errors(card), key=lambda e: [str(p) for p in e.absolute_path])]
    return problems + list(_graphic_problems(card))


def validate_model_card(card: Mapping[str, Any]) -> None:
    """Raise `ModelCardError` (one line naming the first problems and their count) unless ``card`` follows the
    Model Card Toolkit's schema v0.0.2 with no field it does not name and every graphic a base64 PNG."""
    problems = card_problems(card)
    if problems:
        shown = "; ".join(problems[:LISTED_PROBLEMS])
        more = f" (and {len(problems) - LISTED_PROBLEMS} more)" if len(problems) > LISTED_PROBLEMS else ""
        raise ModelCardError(f"the model card does not follow the Model Card Toolkit schema v{SCHEMA_VERSION}: "
                             f"{shown}{more}")


def _where(path: Any) -> str:
    return "/".join(str(part) for part in path) or "(the card)"


def _graphic_problems(card: Mapping[str, Any]) -> Iterator[str]:
    for where, image in _graphics(card, ()):
        try:
            data = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            yield f"{_where(where)}: not base64"
            continue
        if not data.startswith(PNG_SIGNATURE):
            yield f"{_where(where)}: not a PNG image"


def _graphics(node: Any, where: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, image) of every graphic of a ``graphics`` collection in ``node``, at any depth."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "graphics" and isinstance(value, Mapping):
                for index, graphic in enumerate(value.get("collection") or []):
                    if isinstance(graphic, Mapping) and isinstance(graphic.get("image"), str):
                        yield (*where, key, "collection", index, "image"), graphic["image"]
            else:
                yield from _graphics(value, (*where, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _graphics(item, (*where, index))
