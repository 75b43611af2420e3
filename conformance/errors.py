"""Errors the suite raises on purpose. Each one carries enough context to act on without a traceback."""

from __future__ import annotations


class ConformanceError(Exception):
    """Base class for every error raised deliberately by this package."""


class CaseError(ConformanceError):
    """A case file, a case or one of its parameters is invalid.

    The message always names the file, the case and the field, so that a user editing
    ``cases/*.toml`` can go straight to the line that is wrong.
    """

    def __init__(self, message: str, *, file: str | None = None, case: str | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.case = case
        self.field = field
        self.detail = message
        where = [f"{label} {value!s}" for label, value in
                 (("file", file), ("case", case), ("field", field)) if value is not None]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

    def located(self, *, file: str | None = None, case: str | None = None) -> CaseError:
        """The same error with the file and case filled in where they were not known yet."""
        return CaseError(self.detail, file=self.file or file, case=self.case or case, field=self.field)


class UnsupportedError(ConformanceError):
    """A valid PyTorch configuration that Keras cannot express with its layers.

    Raised while building the Keras side of a pair. A case that expects it records it as a
    known divergence with its reason; anywhere else it is an error.
    """


class ConversionError(ConformanceError):
    """Two models do not correspond, so weights cannot be transferred between them.

    Names the first pair of layers that differs. The destination model is left untouched.
    """
