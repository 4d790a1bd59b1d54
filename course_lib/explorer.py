"""The lectures' interactive explorers: ipywidgets controls over a view of precomputed results, which
degrade to one static view wherever no live front end can use them.

``explorer(view, **controls)`` (also reachable as ``plots.explorer``):

* **headless** (``COURSE_HEADLESS=1``, set by ``./course.sh build``, the tests, ``check`` and the
  grader; or no Jupyter kernel at all; or ipywidgets missing): draws ``view(**defaults)`` once as an
  ordinary output and builds **no widget**. A build never waits on a widget message, so it cannot hit
  nbclient's intermittent hang on cells that create ipywidgets (jupyter/nbclient#312,
  nteract/papermill#723).
* **live** (a Jupyter kernel, ``COURSE_HEADLESS`` unset or 0): the controls, and below them one output
  area holding the default view; every change *replaces* that view.

A control is a list of options (the first is the default; ``(label, value)`` pairs allowed), a
``(min, max[, step])`` tuple (a slider starting at min), a bool (a checkbox), a ready ipywidget, or a
**function of other controls** returning the options valid for their current values — for example
``knob=lambda method: ["epochs", "bound"] if method == "BS" else ["epochs"]`` — so that a live
explorer only ever offers valid combinations. Its parameters must be names of controls listed
before it. ``defaults={name: value}`` picks a default view other than the first option (a value, or a
function of earlier controls like a dependent control); options stay in the order given.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable


def headless() -> bool:
    """True where live widgets must not be built: ``COURSE_HEADLESS=1``, or no Jupyter kernel."""
    from .config import _env_flag

    flag = _env_flag("COURSE_HEADLESS")
    if flag is not None:
        return flag
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or getattr(shell, "kernel", None) is None


def _options(control) -> list | None:
    """The option list of a list control (``(label, value)`` pairs give their values), else None."""
    if isinstance(control, list):
        if control and all(isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) for c in control):
            return [v for _, v in control]
        return list(control)
    return None


def _default(control) -> Any:
    if hasattr(control, "value"):
        return control.value
    opts = _options(control)
    if opts is not None:
        if not opts:
            raise ValueError("a control's option list is empty")
        return opts[0]
    if isinstance(control, tuple) and len(control) in (2, 3):
        return control[0]                           # (min, max[, step]): start at min
    return control


def _dependencies(name: str, fn: Callable, before: list[str]) -> list[str]:
    deps = list(inspect.signature(fn).parameters)
    unknown = [d for d in deps if d not in before]
    if unknown:
        raise ValueError(f"control {name!r} depends on {unknown}, which are not controls listed before it "
                         f"({before}); list the controls it depends on first")
    return deps


def _call(name: str, fn: Callable, values: dict):
    deps = _dependencies(name, fn, list(values))
    return fn(**{d: values[d] for d in deps})


def resolve(controls: dict, chosen: dict | None = None, defaults: dict | None = None) -> tuple[dict, dict]:
    """Values and option lists of every control, dependent ones evaluated in order. A control's value
    is the ``chosen`` one where still valid, else its default (``defaults``, where valid), else its
    first option. Returns ``(values, options)``."""
    chosen, defaults = dict(chosen or {}), dict(defaults or {})
    unknown = set(defaults) - set(controls)
    if unknown:
        raise ValueError(f"defaults for {sorted(unknown)}, which are not controls ({list(controls)})")
    values, options = {}, {}
    missing = object()
    for name, control in controls.items():
        dependent = callable(control) and not hasattr(control, "value")
        opts = list(_call(name, control, values)) if dependent else _options(control)
        if opts is not None and not opts:
            raise ValueError(f"control {name!r} has no option (for {values})")
        if opts is not None:
            options[name] = opts
        want = defaults.get(name, missing)
        if callable(want):
            want = _call(name, want, values)
        candidates = [chosen.get(name, missing), want]
        if opts is None:
            values[name] = next((c for c in candidates if c is not missing), _default(control))
        else:
            values[name] = next((c for c in candidates if c is not missing and c in opts), opts[0])
    return values, options


def _widget(name: str, control, value, opts):
    import ipywidgets as W

    if hasattr(control, "value"):
        return control
    if opts is not None:
        labels = control if isinstance(control, list) and _options(control) != list(control) else None
        options = labels if labels else [(str(o), o) for o in opts]
        return W.Dropdown(options=options, value=value, description=name)
    if isinstance(control, bool):
        return W.Checkbox(value=bool(value), description=name)
    if isinstance(control, tuple) and len(control) in (2, 3):
        lo, hi = control[0], control[1]
        step = control[2] if len(control) == 3 else None
        if all(isinstance(v, int) and not isinstance(v, bool) for v in control):
            return W.IntSlider(value=value, min=lo, max=hi, step=step or 1, description=name,
                               continuous_update=False)
        return W.FloatSlider(value=value, min=lo, max=hi, step=step or (hi - lo) / 20, description=name,
                             continuous_update=False)
    raise ValueError(f"control {name!r}: {control!r} is not an option list, a (min, max[, step]) tuple, a bool, "
                     "a widget or a function of other controls")


def _draw(view: Callable, values: dict):
    """Call ``view`` and display the figures it left open (a view that calls ``plt.show()`` has
    displayed its own); they are closed, so the next view starts clean."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    before = set(plt.get_fignums())
    result = view(**values)
    for num in [n for n in plt.get_fignums() if n not in before]:
        fig = plt.figure(num)
        display(fig)
        plt.close(fig)
    return result


class Explorer:
    """The live explorer: ``controls`` (name → widget), ``output`` (the view's area), ``box`` (both),
    ``values`` and ``result`` (the current view's). ``update()`` redraws; a change of any control
    re-resolves the dependent options and redraws."""

    def __init__(self, view: Callable, defaults: dict | None = None, **controls):
        import ipywidgets as W

        self.view, self._spec, self._defaults = view, controls, defaults
        values, options = resolve(controls, defaults=defaults)
        self.controls = {k: _widget(k, c, values[k], options.get(k)) for k, c in controls.items()}
        self.output = W.Output()
        self.box = W.VBox(list(self.controls.values()) + [self.output])
        self._busy = False
        self.values, self.result = values, None
        for w in self.controls.values():
            w.observe(self._changed, names="value")
        self.update()

    def _changed(self, _change=None):
        if not self._busy:
            self.update()

    def update(self):
        """Re-resolve dependent options from the widgets' values, then replace the view."""
        chosen = {k: w.value for k, w in self.controls.items()}
        values, options = resolve(self._spec, chosen, self._defaults)
        self._busy = True                     # option changes fire events: draw once, at the end
        try:
            for k, spec in self._spec.items():
                if callable(spec) and not hasattr(spec, "value"):
                    w = self.controls[k]
                    new = [(str(o), o) for o in options[k]]
                    if list(w.options) != new:
                        w.options = new
                    w.value = values[k]
        finally:
            self._busy = False
        self.values = values
        self.output.clear_output(wait=True)
        with self.output:
            self.result = _draw(self.view, values)
        return self.result


def explorer(view: Callable, defaults: dict | None = None, **controls):
    """Draw ``view``'s default view; in a live front end, controls that replace it (see the module
    docstring). Returns the default view's result (tests call ``view`` with other values directly)."""
    values, _ = resolve(controls, defaults=defaults)
    if not headless():
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            pass
        else:
            from IPython.display import display

            ex = Explorer(view, defaults, **controls)
            display(ex.box)
            return ex.result
    return view(**values)


__all__ = ["Explorer", "explorer", "headless", "resolve"]
