"""scikit-learn's callbacks (:mod:`sklearn.callback`) around the remote fits.

An estimator's ``set_callbacks`` takes callbacks as for its own ``fit``;
``remote_fit`` and ``remote_partial_fit`` call them on a task tree like
scikit-learn's iterative estimators: the root task (``remote_fit`` or
``remote_partial_fit``) and, for ``remote_fit``, one task per epoch.  Each
task's end hands the hooks ``fitted_estimator``, a copy of the estimator as
the task left it; an epoch's end hands ``metadata``, the epoch's record of
``remote_history_``.  A hook that returns True at an epoch's end stops
``remote_fit`` there, as ``tol`` would.  ``X`` and ``y`` are None: the
rows stay next to the data, so a monitor that scores them (scikit-learn's
``ScoringMonitor``) records the tasks without a score.
"""

from mlstorlets.sandbox.incremental import state


def _attributes(fitted):
    """What makes a copy of the estimator ``fitted`` (a plain one, from a
    state): its fitted attributes, or a pipeline's fitted steps."""
    if state.final_of(fitted) is not fitted:
        return {"steps": list(fitted.steps)}
    return state.fitted_attributes(fitted)


class FitTasks:
    """The task tree of one remote fit of ``estimator`` (which has
    ``_init_callback_context``; the caller runs under
    :func:`sklearn.callback.with_callbacks` so that callbacks are torn
    down)."""

    def __init__(self, estimator, task_name, epochs=0):
        self.estimator = estimator
        self.root = estimator._init_callback_context(task_name=task_name, max_subtasks=epochs)
        self.root.call_on_fit_task_begin(estimator=estimator)
        self.epoch = None

    def epoch_begin(self):
        self.epoch = self.root.subcontext(task_name="epoch")
        self.epoch.call_on_fit_task_begin(estimator=self.estimator)

    def epoch_end(self, record, fitted):
        """Whether a callback asks to stop after this epoch."""
        return self.epoch.call_on_fit_task_end(
            estimator=self.estimator,
            metadata=dict(record),
            reconstruction_attributes=lambda: _attributes(fitted),
        )

    def end(self, fitted):
        self.root.call_on_fit_task_end(
            estimator=self.estimator, reconstruction_attributes=lambda: _attributes(fitted)
        )
