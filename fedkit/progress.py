"""Progress bars: tqdm's notebook or terminal bar when shown, nothing imported for a hidden one."""

from __future__ import annotations

from typing import Any


def progress_bar(show: bool, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(**kwargs)`` when ``show``, else a disabled plain ``tqdm``.

    In a Jupyter kernel ``tqdm.auto`` imports ipywidgets (0.2 s) for its notebook bar; a hidden bar
    (``progress=False``, e.g. in a report notebook) should not pay for it.

    Parameters
    ----------
    show
        Whether the bar is shown.
    **kwargs
        Passed to ``tqdm`` (``total``, ``desc``...).
    """
    if show:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(disable=not show, **kwargs)
