"""Naive fine-tuning: train on each task in turn, nothing done against forgetting (the lower bound)."""

from hope.continual.learner import Learner


class Naive(Learner):
    name = "naive"
