"""What the learner sees, above both models: every picture (:mod:`~helpers.views.plotting`),
what a click does (:mod:`~helpers.views.compare`) and the click-to-prompt widgets
(:mod:`~helpers.views.widget`)."""
