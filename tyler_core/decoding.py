"""Validators for data this library wrote itself: the same models, without the value checks.

A backend reads its own rows back with ``context=TRUSTED`` (:mod:`tyler_core.models`), and every
validator of the models that takes the validation info returns its value unchanged then: the
value was checked when it was written. pydantic still calls each of them, several Python calls
per message, so :func:`trusted_validator` builds a validator from the model's core schema with
those validators left out (the model validators too: they take the info). Decoding then runs in
pydantic-core alone, but for the validators that take no info (``to_utc``, which gives datetimes
``datetime.UTC`` rather than pydantic's own UTC tzinfo), which run as they always do.

Only models with a model validator (``Message``, ``Thread``) gain anything: pydantic-core builds
any other model, alone or held by another (``Attachment`` in ``Message``), with that model's own
validator, checks included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import CoreConfig, SchemaValidator

__all__ = ["trusted_list_validator", "trusted_validator"]

_FUNCTION_VALIDATORS = frozenset({"function-after", "function-before", "function-wrap"})
_DATA_KEYS = frozenset({"default", "metadata"})  # values in a core schema that are no schemas


def trusted_validator(model: type[BaseModel]) -> SchemaValidator:
    """A validator of ``model`` without its validators that take the validation info, nor those
    of the models it holds (but see above). It builds ``model`` instances with the defaults and
    private attributes normal validation gives them.

    Only for a model whose validators that take the info return their value unchanged for the
    data given to this validator.
    """
    schema = _without_info_validators(model.__pydantic_core_schema__)
    # The title heads a ValidationError's message: the model's, as with its own validator.
    return SchemaValidator(schema, CoreConfig(title=model.__pydantic_validator__.title))


def trusted_list_validator(model: type[BaseModel]) -> SchemaValidator:
    """A validator of a list of ``model`` (a JSON array, say), each item validated as
    :func:`trusted_validator`'s validator validates one: a whole list in one call."""
    schema = _without_info_validators(model.__pydantic_core_schema__)
    if schema.get("type") == "definitions":  # the references stay at the top
        schema = {**schema, "schema": {"type": "list", "items_schema": schema["schema"]}}
    else:
        schema = {"type": "list", "items_schema": schema}
    return SchemaValidator(schema, CoreConfig(title=f"list[{model.__name__}]"))


def _without_info_validators(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_info_validators(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in _FUNCTION_VALIDATORS and schema["function"]["type"] == "with-info":
        inner = _without_info_validators(schema["schema"])
        # References to the validator (recursive models) must now find what it wrapped.
        return {**inner, "ref": schema["ref"]} if "ref" in schema else inner
    return {
        key: value if key in _DATA_KEYS else _without_info_validators(value)
        for key, value in schema.items()
    }
