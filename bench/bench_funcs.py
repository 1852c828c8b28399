"""Python functions called by the benchmarks."""

from typing import Any

count = 0


def echo(value: Any) -> Any:
    """Returns its argument."""
    return value


def bump(_value: Any) -> None:
    """Counts casts."""
    global count
    count += 1


def counted() -> int:
    """How many casts were handled."""
    return count
