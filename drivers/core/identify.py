"""``[identify]`` of a profile: how ``cityedge scan --emit-config`` recognises the model.

Many controllers hold their model in a register: a device-type code, a model string, a
firmware version whose major number tells two register maps apart. A profile names that point
and the values that mean "this model"; the scan reads it from every unit it finds (one short
read per profile that has one) and writes the profile into the generated ``[[devices]]``
entry only when exactly one profile says yes. Without ``[identify]`` the scan falls back to
which profiles' register maps the unit answers, and says it guessed (docs/PROFILES.md).

    [identify]
    point = "firmware"   # a point of this profile
    prefix = "2."        # a string point whose value starts with this
    # or: equals = [112, 113]   # any of these decoded values (numbers or enum labels)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from drivers.core.reading import Value


class Identify(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    point: str
    equals: tuple[int | float | str, ...] = ()
    prefix: str | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Identify:
        if not self.equals and self.prefix is None:
            raise ValueError("identify needs 'equals' (values) or 'prefix' (start of a string)")
        return self

    def matches(self, value: Value) -> bool:
        if self.prefix is not None and isinstance(value, str) and value.startswith(self.prefix):
            return True
        return any(value == v for v in self.equals if not isinstance(value, bool))

    def example(self, served: Value) -> Value:
        """A value that matches, as close to ``served`` as possible (for the simulators)."""
        if self.matches(served):
            return served
        if self.prefix is not None:
            text = str(served)
            return self.prefix + text[len(self.prefix) :]
        return self.equals[0]
