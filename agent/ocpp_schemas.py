"""Payload validation against the official OCPP JSON schemas (CPython only).

The schemas are the ones the `ocpp` package ships (OCPP 1.6 and 2.0.1, Draft 4). A failure
raises `agent.rpc.CallError` with the code OCPP-J prescribes for what is wrong, so the RPC
layer can answer a CSMS with the right CALLERROR. On MicroPython the RPC layer runs without
a validator (DESIGN.md §5): this module is never imported there.

Schema keyword -> CALLERROR code (OCPP-J 1.6 §4.2.3):
- required                                  -> OccurenceConstraintViolation
- type                                      -> TypeConstraintViolation
- enum, maxLength, minLength, minimum, maximum, pattern, format, multipleOf, minItems,
  maxItems                                  -> PropertyConstraintViolation
- additionalProperties and anything else    -> FormationViolation (not the PDU's structure)
"""
import decimal
import json
import os
import re

import jsonschema
import ocpp

from agent.rpc import (
    FORMATION_VIOLATION, NOT_IMPLEMENTED, OCCURENCE_CONSTRAINT_VIOLATION,
    PROPERTY_CONSTRAINT_VIOLATION, TYPE_CONSTRAINT_VIOLATION, CallError,
)

CODES = {
    "required": OCCURENCE_CONSTRAINT_VIOLATION,
    "type": TYPE_CONSTRAINT_VIOLATION,
}
for _keyword in ("enum", "maxLength", "minLength", "minimum", "maximum", "pattern", "format",
                 "multipleOf", "minItems", "maxItems", "exclusiveMinimum", "exclusiveMaximum"):
    CODES[_keyword] = PROPERTY_CONSTRAINT_VIOLATION

# file name pattern of each version's schemas: (request, response)
LAYOUT = {
    "1.6": ("v16", "%s.json", "%sResponse.json"),
    "2.0.1": ("v201", "%sRequest.json", "%sResponse.json"),
}


# RFC 3339 date-time, as OCPP requires (jsonschema only checks it with an extra package,
# and otherwise lets anything through silently)
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker(())


@FORMATS.checks("date-time")
def _is_date_time(value):
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


def _decimals(value):
    """Floats as Decimal: `multipleOf: 0.1` on binary floats rejects 7.3 (a known jsonschema
    trap that the ocpp package works around the same way)."""
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if isinstance(value, dict):
        return {key: _decimals(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decimals(item) for item in value]
    return value


class SchemaValidator:
    def __init__(self, version="1.6"):
        folder, self._request_name, self._response_name = LAYOUT[version]
        self.version = version
        self.folder = os.path.join(os.path.dirname(ocpp.__file__), folder, "schemas")
        self._cache = {}
        self.actions = frozenset(
            name[:-len(self._request_name) + 2] for name in os.listdir(self.folder)
            if name.endswith(self._request_name[2:]) and not name.endswith("Response.json")
        ) if version == "2.0.1" else frozenset(
            name[:-5] for name in os.listdir(self.folder)
            if name.endswith(".json") and not name.endswith("Response.json"))

    def _validator(self, file_name):
        validator = self._cache.get(file_name)
        if validator is None:
            with open(os.path.join(self.folder, file_name)) as file:
                schema = json.load(file, parse_float=decimal.Decimal)
            validator = jsonschema.Draft4Validator(schema, format_checker=FORMATS)
            self._cache[file_name] = validator
        return validator

    def _validate(self, action, payload, pattern):
        if action not in self.actions:
            raise CallError(NOT_IMPLEMENTED, "unknown action %s" % action)
        validator = self._validator(pattern % action)
        error = jsonschema.exceptions.best_match(validator.iter_errors(_decimals(payload)))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "payload"
            raise CallError(CODES.get(error.validator, FORMATION_VIOLATION),
                            "%s %s: %s" % (action, where, error.message)[:255])

    def request(self, action, payload):
        self._validate(action, payload, self._request_name)

    def response(self, action, payload):
        self._validate(action, payload, self._response_name)
