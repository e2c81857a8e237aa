"""argparse types for command-line numbers (a bad value is argparse's one-line usage error naming the flag), and
the flags several commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["positive_int", "positive_seconds", "non_negative_int", "port", "fraction", "float_at_least",
           "batch_size_or_dynamic", "add_calibration_flag"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be at least 0")
    return value


def port(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _float(text: str, what: str = "a number") -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_seconds(text: str) -> float:
    """A duration in seconds, more than 0 (a fraction is allowed)."""
    value = _float(text, "a number of seconds")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is out of range: it must be a number of seconds above 0")
    return value


def fraction(text: str) -> float:
    """A share: above 0 and at most 1."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be above 0 and at most 1")
    return value


def float_at_least(low: float, inclusive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _float(text)
        if not (value >= low if inclusive else value > low):
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be "
                                             f"{'at least' if inclusive else 'more than'} {low:g}")
        return value

    return parse


def batch_size_or_dynamic(text: str) -> int | None:
    """``dynamic`` (None: any batch size) or a fixed batch size."""
    if text == "dynamic":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'dynamic' nor a batch size of at least 1") from None


def add_calibration_flag(parser: argparse.ArgumentParser) -> None:
    """--no-calibration: what every command that shows or averages probabilities shares."""
    parser.add_argument("--no-calibration", action="store_true",
                        help="probabilities as the model gives them (temperature 1), not divided by the temperature "
                             "the run fitted on its validation split")
