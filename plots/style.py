"""Figure style shared by every radar plot: mplhep ATLAS or CMS look, experiment label, atomic saving.

Every plotting function takes ``style="atlas" | "cms"`` and builds its figure inside :func:`style_context`,
so the global matplotlib state is never changed. Figures are labelled as simulation studies
("ATLAS Simulation Internal" / "CMS Simulation Private Work") with sqrt(s) = 13 TeV.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

# no matplotlib.use(): headless machines fall back to Agg by themselves, and notebooks keep their backend
import matplotlib.pyplot as plt
import mplhep as hep

from radar.processors.io import atomic_output

log = logging.getLogger(__name__)

STYLES: tuple[str, ...] = ("atlas", "cms")
DEFAULT_STATUS: dict[str, str] = {"atlas": "Simulation Internal", "cms": "Simulation Private Work"}
FORMATS: tuple[str, ...] = ("png", "pdf")

#: colour cycle used for methods / working points (colour-blind safe, Petroff 10)
COLORS: tuple[str, ...] = (
    "#3f90da",
    "#ffa90e",
    "#bd1f01",
    "#94a4a2",
    "#832db6",
    "#a96b59",
    "#e76300",
    "#b9ac70",
    "#717581",
    "#92dadd",
)


def check_style(style: str) -> str:
    style = style.lower()
    if style not in STYLES:
        raise ValueError(f"unknown plot style {style!r}; expected one of {STYLES}")
    return style


@contextlib.contextmanager
def style_context(style: str = "atlas") -> Iterator[None]:
    """Apply the mplhep ATLAS or CMS style inside a ``with`` block only."""
    sheet = {"atlas": hep.style.ATLAS, "cms": hep.style.CMS}[check_style(style)]
    with plt.style.context(sheet):
        yield


def experiment_label(
    ax,
    style: str = "atlas",
    status: str | None = None,
    com: float = 13,
    lumi: float | None = None,
    loc: int = 0,
    show_com: bool = True,
) -> None:
    """Put the experiment label ("ATLAS Simulation Internal", sqrt(s) = 13 TeV) on ``ax``.

    show_com=False leaves out the sqrt(s) text (for narrow panels: put it on another axis with
    :func:`com_label`)."""
    style = check_style(style)
    text = DEFAULT_STATUS[style] if status is None else status
    module = hep.atlas if style == "atlas" else hep.cms
    # data=True stops mplhep prepending a second "Simulation"
    module.label(text, ax=ax, data=True, loc=loc, rlabel=_com_text(com, lumi) if show_com else "")


def com_label(ax, com: float = 13, lumi: float | None = None) -> None:
    """The sqrt(s) (and luminosity) text alone, above the right end of ``ax``."""
    ax.text(1.0, 1.01, _com_text(com, lumi), transform=ax.transAxes, ha="right", va="bottom", fontsize=14)


def _com_text(com: float, lumi: float | None) -> str:
    # unicode root: mathtext \sqrt renders poorly in PDF
    return f"\u221as = {com:g} TeV" + (f", {lumi:g} fb$^{{-1}}$" if lumi else "")


def save_figure(fig, path_stem: str | Path, formats: Sequence[str] = FORMATS, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``path_stem.png`` and ``path_stem.pdf`` (atomically) and close it.

    Returns the written paths."""
    stem = Path(path_stem)
    out = []
    # fonts and tick labels are resolved when drawing: draw inside the style the figure was made in
    with style_context(getattr(fig, "radar_style", "atlas")):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
            out.append(path)
    plt.close(fig)
    log.info("wrote %s", ", ".join(str(p) for p in out))
    return out


def subplots(style: str, *args, **kwargs):
    """``plt.subplots`` that remembers ``style`` on the figure (used by :func:`save_figure`).

    Call inside :func:`style_context`. Returns (fig, axes)."""
    fig, axes = plt.subplots(*args, **kwargs)
    fig.radar_style = check_style(style)
    return fig, axes


def ratio_axes(
    style: str, height_ratios: tuple[float, float] = (3.0, 1.0), figsize: tuple[float, float] = (8.0, 8.0)
):
    """A figure with a main panel and a lower (ratio/pull) panel sharing x. Returns (fig, ax_main, ax_low)."""
    fig, (ax, low) = subplots(
        style,
        2,
        1,
        sharex=True,
        figsize=figsize,
        gridspec_kw={"height_ratios": height_ratios, "hspace": 0.06},
    )
    return fig, ax, low


def percent(efficiency: float) -> str:
    """A working point's efficiency as text: 1 -> 'no cut', 0.01 -> 'top 1%'."""
    if efficiency >= 1:
        return "no cut"
    return f"top {100 * efficiency:.3g}%"
