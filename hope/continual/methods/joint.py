"""Joint training (the upper bound), as Avalanche's ``Cumulative``: at task k the learner trains on the union of
the training data of tasks 0..k, which the protocol hands it (``sees_past_data``); never on future tasks."""

from hope.continual.learner import Learner


class Joint(Learner):
    name = "joint"
    sees_past_data = True
