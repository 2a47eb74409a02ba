"""The exact mean of a decode step over the cache lengths a generation passes through."""
from __future__ import annotations


def mean_over_lengths(f, a: int, b: int, rtol: float = 1e-9) -> tuple[float, int]:
    """(mean of f(L) over the integers a <= L <= b, evaluations of f), exact for a convex
    piecewise-linear f.

    A convex f that meets its chord at an interior point is affine on the whole interval, so:
    evaluate f at both ends and the midpoint; if the midpoint lies on the chord (within rtol),
    sum the affine piece in closed form, (b - a + 1)(f(a) + f(b))/2; else split at the midpoint
    and recurse. Each kink costs O(log(b - a)) evaluations; an affine f costs three.
    """
    calls = [0]

    def g(x):
        calls[0] += 1
        return f(x)

    def total(lo, flo, hi, fhi):
        if hi - lo <= 1:
            return flo + (fhi if hi > lo else 0.0)
        mid = (lo + hi) // 2
        fmid = g(mid)
        chord = flo + (fhi - flo) * (mid - lo) / (hi - lo)
        if abs(fmid - chord) <= rtol * max(abs(chord), 1e-30):
            return (hi - lo + 1) * (flo + fhi) / 2
        return total(lo, flo, mid, fmid) + total(mid, fmid, hi, fhi) - fmid
    fa = g(a)
    s = total(a, fa, b, g(b) if b > a else fa)
    return s / (b - a + 1), calls[0]


__all__ = ["mean_over_lengths"]
