"""One definition of each pipeline option, from which every surface that sets it is derived.

An :class:`Option` says what a setting of a pipeline is: its Python keyword, its command-line flag, its type and
default, the range it may take (each bound inclusive or exclusive) or its choices (with the GUI's labels for them),
its unit and its help text. An :class:`OptionSet` holds the options of one pipeline command (``ctpm run``,
``dosecnn integrate``, ...). From these definitions come:

* the command-line arguments (:meth:`OptionSet.add_arguments`; the Slicer batch scripts' parsers are built by the
  same call);
* the checks (:meth:`Option.check`, :meth:`OptionSet.check`): a wrong value is one :class:`~.errors.UserError` line
  that names the flag and the allowed range, raised before any heavy work;
* the child process's command line (:meth:`OptionSet.to_argv`), which the command-line parser reads back to the same
  values;
* the validators of the Slicer parameter nodes: ``WithinRange(*option.bounds)`` and ``Choice(option.choice_labels)``.

Slicer's ``WithinRange`` is inclusive at both ends. An exclusive bound (an activity must be more than 0 MBq) appears
there as the bound itself, which the GUI shows until the user enters a value; the module's Logic refuses it with the
same check before it starts anything.

Choices are checked here, not by argparse's ``choices=``, so that a wrong choice is one line like any other wrong
value (argparse would print its usage first).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .errors import UserError

_KINDS = (bool, int, float, str)


def _number_text(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Option:
    """One setting of a pipeline.

    ``name``: the pipeline function's keyword (and the argparse ``dest``). ``flag``: the command-line flag; for a bool
    option the flag that turns the default around (``--no-register`` for a default of True, ``--baseline`` for a
    default of False). ``kind``: bool, int, float or str. ``default``: None means "not given" is a valid value (e.g.
    ``--high-percentile`` absent). ``minimum``/``maximum``: the allowed range of a number, in ``unit``; each bound is
    inclusive unless ``exclusive_minimum``/``exclusive_maximum``. ``choices``: the allowed values of a str option;
    ``labels``: what a GUI shows for each choice, in the same order (default: the choices themselves).
    """

    name: str
    flag: str
    kind: type
    default: Any
    help: str
    unit: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: Tuple[str, ...] = ()
    labels: Tuple[str, ...] = ()
    metavar: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise TypeError(f"option {self.name}: kind must be one of {_KINDS}, got {self.kind!r}")
        if self.labels and len(self.labels) != len(self.choices):
            raise TypeError(f"option {self.name}: one label per choice")
        if self.kind is bool and not isinstance(self.default, bool):
            raise TypeError(f"option {self.name}: a bool option needs a bool default")
        if self.default is not None:
            self.check(self.default)  # a default outside its own range is a definition error

    # --- the allowed values -------------------------------------------------------------------------------------------
    @property
    def bounds(self) -> Tuple[Optional[float], Optional[float]]:
        """(minimum, maximum): the arguments of Slicer's ``WithinRange`` (inclusive; see the module docstring)."""
        return self.minimum, self.maximum

    @property
    def choice_labels(self) -> Tuple[str, ...]:
        """The choices as a GUI shows them (the arguments of Slicer's ``Choice``)."""
        return self.labels or self.choices

    def label_of(self, value: str) -> str:
        """The GUI label of a choice."""
        return self.choice_labels[self.choices.index(value)]

    def value_of(self, label: str) -> str:
        """The choice a GUI label stands for."""
        return self.choices[self.choice_labels.index(label)]

    def range_text(self) -> str:
        """The allowed values in words, e.g. ``from 0.05 to 0.95``, ``positive and at most 100000 MBq``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        unit = f" {self.unit}" if self.unit else ""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not (self.exclusive_minimum or self.exclusive_maximum):
            return f"from {_number_text(low)} to {_number_text(high)}{unit}"
        parts = []
        if low is not None:
            if low == 0 and self.exclusive_minimum:
                parts.append("positive")
            else:
                parts.append(f"{'more than' if self.exclusive_minimum else 'at least'} {_number_text(low)}"
                             + ("" if high is not None else unit))
        if high is not None:
            parts.append(f"{'less than' if self.exclusive_maximum else 'at most'} {_number_text(high)}{unit}")
        return " and ".join(parts) or "any value"

    def within(self, number: float) -> bool:
        """True when ``number`` lies in the allowed range (NaN never does)."""
        if math.isnan(number):
            return False
        if self.minimum is not None and (number < self.minimum or (self.exclusive_minimum and number == self.minimum)):
            return False
        if self.maximum is not None and (number > self.maximum or (self.exclusive_maximum and number == self.maximum)):
            return False
        return True

    def check(self, value: Any, what: Optional[str] = None) -> Any:
        """``value`` as the pipeline takes it (an int option's value as int, a float option's as float), or a one-line
        UserError naming ``what`` (default: the flag) and the allowed values."""
        what = what or self.flag
        if value is None:
            if self.default is None:
                return None
            raise UserError(f"{what} needs a value ({self.range_text()})")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"{what} must be true or false, got {value!r}")
            return value
        if self.choices:
            if value not in self.choices:
                raise UserError(f"{what}: invalid choice {value!r} (choose from {', '.join(self.choices)})")
            return value
        if self.kind is str:
            return str(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{what} must be a number, got {value!r}")
        if self.kind is int and not float(value).is_integer():
            raise UserError(f"{what} must be a whole number, got {value!r}")
        number = self.kind(value)
        if not self.within(float(number)):
            raise UserError(f"{what} must be {self.range_text()}, got {_number_text(number)}")
        return number

    # --- the command line -------------------------------------------------------------------------------------------
    def help_text(self) -> str:
        """The argparse help: the help text, the allowed range and the default (``%`` escaped for argparse)."""
        text = self.help
        if self.kind in (int, float):
            default = "" if self.default is None else f"; default {_number_text(self.default)}"
            text += f" ({self.range_text()}{default})"
        elif self.kind is str and self.default is not None:
            text += f" (default {self.default})"
        return text.replace("%", "%%")

    def add_argument(self, parser) -> argparse.Action:
        """Add the option to an argparse parser (or argument group); the value lands in ``args.<name>``."""
        if self.kind is bool:
            action = "store_false" if self.default else "store_true"
            return parser.add_argument(self.flag, dest=self.name, action=action, help=self.help_text())
        metavar = self.metavar or ("{" + ",".join(self.choices) + "}" if self.choices
                                   else self.flag.lstrip("-").upper().replace("-", "_"))
        return parser.add_argument(self.flag, dest=self.name, type=self.kind, default=self.default, metavar=metavar,
                                   help=self.help_text())

    def to_argv(self, value: Any) -> List[str]:
        """The command-line arguments that give ``value`` (checked): none for None or a bool at its default; floats
        as ``repr`` (read back exactly); ``--flag=-1e+40`` for a value argparse would take for a flag."""
        value = self.check(value)
        if value is None:
            return []
        if self.kind is bool:
            return [self.flag] if value != self.default else []
        text = repr(float(value)) if self.kind is float else str(value)
        return [f"{self.flag}={text}"] if text.startswith("-") else [self.flag, text]


class OptionSet:
    """The options of one pipeline command, in the order of its ``--help``.

    ``exclusive``: groups of option names of which at most one may be given (e.g. the two calibrations of a SPECT).
    """

    def __init__(self, *options: Option, exclusive: Sequence[Tuple[str, ...]] = ()):
        self.options: Dict[str, Option] = {}
        for option in options:
            if option.name in self.options:
                raise TypeError(f"option {option.name} given twice")
            self.options[option.name] = option
        self.exclusive = tuple(tuple(group) for group in exclusive)
        for group in self.exclusive:
            unknown = set(group) - set(self.options)
            if unknown:
                raise TypeError(f"exclusive group names unknown options {sorted(unknown)}")

    def __iter__(self) -> Iterator[Option]:
        return iter(self.options.values())

    def __getitem__(self, name: str) -> Option:
        return self.options[name]

    def __contains__(self, name: object) -> bool:
        return name in self.options

    def __len__(self) -> int:
        return len(self.options)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(self.options)

    def subset(self, *names: str) -> OptionSet:
        """The options ``names`` (with the exclusive groups among them)."""
        return OptionSet(*(self[name] for name in names),
                         exclusive=[group for group in self.exclusive if set(group) <= set(names)])

    def defaults(self) -> Dict[str, Any]:
        return {option.name: option.default for option in self}

    def add_arguments(self, parser, require_exclusive: bool = False) -> None:
        """Add every option to an argparse parser; each exclusive group becomes a mutually exclusive group
        (``require_exclusive``: one of its options must be given)."""
        groups = {}
        for group in self.exclusive:
            argparse_group = parser.add_mutually_exclusive_group(required=require_exclusive)
            groups.update({name: argparse_group for name in group})
        for option in self:
            option.add_argument(groups.get(option.name, parser))

    def check(self, values: Mapping[str, Any], names: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """Every option's value (``values[name]``, else its default), checked; a one-line UserError for the first wrong
        one. ``names``: what to call an option in the message instead of its flag (e.g. the Slicer Logic's keyword)."""
        unknown = set(values) - set(self.options)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}")
        names = names or {}
        checked = {option.name: option.check(values.get(option.name, option.default), names.get(option.name))
                   for option in self}
        for group in self.exclusive:
            given = [name for name in group if checked[name] is not None]
            if len(given) > 1:
                raise UserError(" and ".join(names.get(n, self[n].flag) for n in given) + " exclude each other; give one")
        return checked

    def from_arguments(self, args: argparse.Namespace) -> Dict[str, Any]:
        """The checked values of parsed command-line arguments (the command's first step, before any file is read)."""
        return self.check({name: getattr(args, name) for name in self.options})

    def to_argv(self, values: Mapping[str, Any]) -> List[str]:
        """The command-line arguments of ``values`` (checked; options not given take their defaults)."""
        checked = self.check(values)
        return [arg for option in self for arg in option.to_argv(checked[option.name])]
