"""Hyperparameter search over robust training with keras-tuner.

    hypermodel = tfrobust.tuning.RobustHyperModel((28, 28, 1), 10, epsilon=0.3)
    tuner = tfrobust.tuning.build_tuner(hypermodel, "random", "val_adv_accuracy",
                                        max_trials=10, directory="runs/tune")
    tuner.search(train, validation_data=val, epochs=2)
    print(tfrobust.tuning.format_table(tfrobust.tuning.results(tuner)))
"""

from tfrobust.tuning import space
from tfrobust.tuning.hypermodel import SCORE_NAME, RobustHyperModel
from tfrobust.tuning.search import (DEFAULT_OBJECTIVE, TUNERS, build_tuner, check_objective,
                                    format_table, objective_direction, results)

__all__ = ["DEFAULT_OBJECTIVE", "RobustHyperModel", "SCORE_NAME", "TUNERS", "build_tuner",
           "check_objective", "format_table", "objective_direction", "results", "space"]
