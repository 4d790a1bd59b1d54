"""Exact unlearning (lessons 1-3): estimators whose unlearned model equals a refit on the retained
rows. One protocol, one request check and a report type per estimator (:mod:`.base`), cost models as
pure functions of the run's budget (:mod:`.costs`).

    ridge.Ridge        closed-form removal (Woodbury), equal up to float64 rounding   lesson 1
    sisa.SISA          sharded, sliced, checkpointed training, bitwise exact          lesson 2
    legonet.LegoNet    frozen encoder + keyed adapters, bitwise exact                 lesson 3
"""
from .base import ExactEstimator, LegoNetReport, RidgeReport, SISAReport, UnlearnReport, clone  # noqa: F401
