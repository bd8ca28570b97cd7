"""One refusal naming every bad field of a request (`google.rpc.BadRequest` holds them all),
from checks that each raise on their own: a client is not left fixing one field per round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, Never, ParamSpec, TypeVar, cast

from vaultpay_common.errors import ValidationError

__all__ = ["Checked", "InputChecks", "refusal_or"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")


def refusal_or(parse: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | ValidationError:
    """`parse(*args, **kwargs)`, or its refusal returned instead of raised: an entrypoint's
    parse that the use case names with the request's other bad fields (`InputChecks.take`)."""
    try:
        return parse(*args, **kwargs)
    except ValidationError as refused:
        return refused


class InputChecks:
    """Runs a request's input checks so that one refusal names every bad field, as a
    ValidationError promises; one bad field alone keeps its own error (INVALID_AMOUNT).
    The checks raise when their `with` block ends, and a checked value is read only after:

        with InputChecks() as checks:
            key = checks.take(cmd.key)        # a refusal the entrypoint already made, or a value
            note = checks.run(lambda: check_note(text))
            pin = checks.run(lambda: check_pin_shape(pin_text))
        use(key.value, note.value, pin.value)  # every value is the checked one

    Reading `.value` inside the block (or without one) raises RuntimeError: a use case that
    forgot to let its checks raise fails loudly in every test, never with a fallback value.
    """

    def __init__(self) -> None:
        self._failed: list[ValidationError] = []
        self._open = True
        self._passed = False

    @property
    def passed(self) -> bool:
        """The block ended with every check passed: its values may be read."""
        return self._passed

    def __enter__(self) -> InputChecks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        if kind is not None:
            return  # another error is on its way out: it is not hidden
        if len(self._failed) == 1:
            raise self._failed[0]
        if self._failed:
            raise ValidationError([v for refused in self._failed for v in refused.violations])
        self._passed = True

    def run(self, check: Callable[[], T]) -> Checked[T]:
        """`check`'s value, readable once every check has passed; its refusal is kept."""
        self._still_open()
        try:
            return Checked(self, check())
        except ValidationError as refused:
            self._failed.append(refused)
            return Checked(self, _REFUSED)

    def take(self, given: T | ValidationError) -> Checked[T]:
        """A value read before the use case (by the entrypoint), or the refusal it met then."""
        self._still_open()
        if isinstance(given, ValidationError):
            self._failed.append(given)
            return Checked(self, _REFUSED)
        return Checked(self, given)

    def refuse(self, field: str, description: str) -> Checked[Never]:
        """A refusal found without a check function (a required field that is missing)."""
        self._still_open()
        self._failed.append(ValidationError.single(field, description))
        return Checked(self, _REFUSED)

    def _still_open(self) -> None:
        if not self._open:
            raise RuntimeError("InputChecks take checks only inside their with block")


_REFUSED = object()  # the value of a refused check: never read (its checks did not pass)


class Checked(Generic[T_co]):
    """One input of an `InputChecks`: its checked value, readable once they all passed."""

    __slots__ = ("_checks", "_value")

    def __init__(self, checks: InputChecks, value: object) -> None:
        self._checks = checks
        self._value = value

    @property
    def value(self) -> T_co:
        if not self._checks.passed:
            raise RuntimeError(
                "an input was read before its InputChecks passed (the end of their with block)"
            )
        return cast(T_co, self._value)
