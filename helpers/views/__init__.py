"""What the learner sees, above both models: every picture (:mod:`~helpers.views.plotting`),
what a click does (:mod:`~helpers.views.compare`) and the click-to-prompt widgets
(:mod:`~helpers.views.widget`)."""

from .. import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "compare": ("DetectionCompare", "PromptState", "SamCompare"),
        "widget": ("detection_compare_widget", "sam_compare_widget"),
    },
)
