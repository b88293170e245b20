"""Frozen settings dataclasses whose fields declare their own bounds (host side).

A settings class is a frozen dataclass that inherits :class:`Settings` and declares each
checked field with :func:`setting`: its default, its kind (``int``, ``float``, ``bool``,
``str``) and its bounds or choices. Constructing it checks every declared field in one
place (:func:`check`), converts numbers to their declared kind (``1`` becomes ``1.0``
for a float field) and raises one ``ValueError`` naming the class, the field, the rule
and the value given. A bound may name another field (``gt="t_end"``), so relations such
as ``t_start > t_end`` are declared like any other bound.

Example:
  >>> @dataclasses.dataclass(frozen=True)
  ... class Cooling(Settings):
  ...     t_end: float = setting(0.005, gt=0)
  ...     t_start: float = setting(0.12, gt="t_end")
  ...     steps: int = setting(300, kind=int, ge=1)
  >>> Cooling(t_start=0.001)
  Traceback (most recent call last):
  ValueError: Cooling.t_start must be > t_end (0.005), got 0.001
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from typing import Any, Iterable

_RULES = (("gt", operator.gt, ">"), ("ge", operator.ge, ">="), ("lt", operator.lt, "<"),
          ("le", operator.le, "<="))


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one field accepts (see :func:`setting`)."""

    kind: type
    optional: bool = False
    choices: tuple | None = None
    gt: float | str | None = None
    ge: float | str | None = None
    lt: float | str | None = None
    le: float | str | None = None

    def describe(self) -> str:
        """The rule in words, e.g. ``'a number > 0'``."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {int: "an integer", float: "a finite number", bool: "true or false",
                    str: "a string"}[self.kind]
            text += "".join(f" {sign} {getattr(self, name)}" for name, _, sign in _RULES
                            if getattr(self, name) is not None)
        return text + (" or None" if self.optional else "")


def setting(default: Any, *, kind: type = float, optional: bool = False,
            choices: Iterable | None = None, gt: float | str | None = None,
            ge: float | str | None = None, lt: float | str | None = None,
            le: float | str | None = None) -> Any:
    """A dataclass field checked by :func:`check`.

    Args:
      default: the field's default value.
      kind: ``int``, ``float``, ``bool`` or ``str``; numbers are converted to it.
      optional: None is also accepted.
      choices: the only values accepted (for strings).
      gt, ge, lt, le: bounds, each a number or the name of another field of the class.
    """
    if kind not in (int, float, bool, str):
        raise TypeError(f"kind must be int, float, bool or str, got {kind!r}")
    rule = Rule(kind, optional, None if choices is None else tuple(choices), gt, ge, lt, le)
    return dataclasses.field(default=default, metadata={"rule": rule})


def rule_of(field: dataclasses.Field) -> Rule | None:
    """The :class:`Rule` a field was declared with, or None."""
    return field.metadata.get("rule")


def _converted(rule: Rule, value):
    """``value`` as the rule's kind, or ``None`` when it is not one."""
    if rule.kind is bool:
        return value if isinstance(value, bool) else None
    if rule.kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if rule.kind is int:
        return int(value) if isinstance(value, numbers.Integral) else None
    return float(value) if math.isfinite(value) else None


def check(settings) -> None:
    """Check and convert every :func:`setting` field of a dataclass instance in place.

    Raises:
      ValueError: ``"<Class>.<field> must be <rule>, got <value>"`` for the first field
        that breaks its rule.
    """
    name = type(settings).__name__
    for field in dataclasses.fields(settings):
        rule = rule_of(field)
        if rule is None:
            continue
        value = getattr(settings, field.name)
        if value is None and rule.optional:
            continue
        converted = _converted(rule, value)
        ok = converted is not None and (rule.choices is None or converted in rule.choices)
        for bound, compare, _ in _RULES:
            limit = getattr(rule, bound)
            if ok and limit is not None:
                limit = getattr(settings, limit) if isinstance(limit, str) else limit
                ok = limit is None or compare(converted, limit)
        if not ok:
            described = rule.describe()
            for bound, _, _ in _RULES:  # name the value of a bound that is another field
                limit = getattr(rule, bound)
                if isinstance(limit, str):
                    described = described.replace(
                        f" {limit}", f" {limit} ({getattr(settings, limit)!r})", 1)
            raise ValueError(f"{name}.{field.name} must be {described}, got {value!r}")
        object.__setattr__(settings, field.name, converted)


class Settings:
    """Mixin of frozen settings dataclasses: :func:`check` runs on construction.

    Subclasses with relations the bounds cannot state check them in their own
    ``__post_init__`` after calling ``super().__post_init__()``.
    """

    def __post_init__(self):
        check(self)

    def replace(self, **changes):
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


__all__ = ["Rule", "Settings", "check", "rule_of", "setting"]
