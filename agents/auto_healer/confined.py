"""A path proven to lie inside the checkout (`paths.confine`, `confinement.confine_stat`)."""

from __future__ import annotations

from pathlib import Path


class Confined:
    """A path proven to lie inside the checkout: absolute and checkout-relative forms.
    `under(top, rel)` makes `top / rel` when first asked (a plan that finds nothing there never
    does: a burst's Path objects cost more than its `lstat`s)."""

    __slots__ = ("_absolute", "_relative", "_top")

    def __init__(self, absolute: Path, relative: str) -> None:
        self._absolute: Path | None = absolute
        self._relative = relative
        self._top: Path | None = None

    @classmethod
    def under(cls, top: Path, relative: str) -> Confined:
        confined = cls.__new__(cls)
        confined._absolute, confined._relative, confined._top = None, relative, top
        return confined

    @property
    def absolute(self) -> Path:
        if self._absolute is None:
            assert self._top is not None  # one of the two is always set
            self._absolute = self._top / self._relative
        return self._absolute

    @property
    def relative(self) -> str:
        return self._relative

    def __repr__(self) -> str:
        return f"Confined(absolute={self.absolute!r}, relative={self.relative!r})"
