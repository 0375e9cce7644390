"""`tfrobust.evaluate`: robust accuracy with the checks that catch a weak evaluation.

The work is split by job: `inputs` resolves the model, data, threat model and
attacks; `runner.Runner` runs attacks on batches through the cache (the ensemble
through `attacks.attack_in_turn`, AutoAttack's orchestration); `suite` holds the
registered checks, which measure through the runner and judge with `checks`.
"""

import time

import keras
import numpy as np

from tfrobust import attacks as attacks_lib
from tfrobust.evaluation import inputs
from tfrobust.evaluation import precision as precision_lib
from tfrobust.evaluation import suite
from tfrobust.evaluation.progress import Progress
from tfrobust.evaluation.report import EvaluationReport
from tfrobust.evaluation.runner import Runner, scale_tag
from tfrobust.evaluation.store import UnitStore
from tfrobust.utils import validation

CHECKS = suite.names()


def evaluate(model, data, *, norm=None, epsilon=None, attacks="standard",
             sweep_attacks=("pgd", "apgd-dlr"), epsilons=None, checks=True, split="test",
             limit=None, batch_size=256, clip_min=0.0, clip_max=1.0, seed=0, tolerance=0.02,
             cache_dir=None, shard=None, strategy=None, precision="float32", verbose=True):
    """Evaluate a model's robustness, with the checks that catch gradient masking.

    Runs, on the same examples:

    1. the clean accuracy, and the checks it alone decides (outputs are
       logits, deterministic forward pass, few zero input gradients), judged
       before any attack and printed at once if they fail;
    2. the ensemble `attacks` (AutoAttack's by default), each only on the
       points still robust, giving the per-example worst case and which
       attack broke each point;
    3. an epsilon sweep of `sweep_attacks` (robust accuracy against epsilon),
       including epsilon 0 and a large epsilon from which every input can
       reach the mid-range image;
    4. the checks (see `tfrobust.evaluation.checks`): accuracy non-increasing
       in epsilon and equal to the clean accuracy at 0; near 0 at the large
       epsilon; more steps and more restarts never raise robust accuracy;
       FGSM never beats PGD; Square breaks nothing the white-box attacks
       left; robust accuracy unchanged when the logits are scaled; every
       adversarial example is within epsilon, the range, and finite.

    Attacks see a `RobustModel`'s evaluation logits (`RobustModel.LOGIT_USES`:
    the cosines for a hypersphere head, what it serves and what its
    validation attacks; not the training attacks' `s * cos`); any other Keras
    model or callable is attacked through its outputs.

    Args:
        model: a Keras model (a `RobustModel` or a classifier returning
            logits), a callable from images to logits, a `.keras` path, or
            `"pretrained:NAME"` (a model of `tfrobust.models.pretrained()`).
        data: `(x, y)` arrays, a `tf.data.Dataset` of `(images, labels)`
            (batched or not), or a dataset name/file for `tfrobust.data`.
        norm: `"linf"` or `"l2"`; None takes the model's evaluation attack's
            norm (a `RobustModel`), else `"linf"`.
        epsilon: the threat model's radius; None takes the `RobustModel`'s
            evaluation attack's epsilon.
        attacks: `"standard"` (APGD-CE, APGD-T, FAB-T, Square 5000) or a list
            of attack names, configs or instances (a comma-separated string
            of names works too); names are built at `epsilon` and `norm`.
        sweep_attacks: attacks for the epsilon sweep (names or instances;
            `"pgd"` is PGD-20). Their step sizes scale with epsilon.
        epsilons: budgets of the sweep; None: 0, 1/4, 1/2, 3/4, 1, 1.5 and 2
            times `epsilon`. 0, `epsilon` and the large epsilon (from which
            every input reaches the mid-range image: half the pixel range in
            L-inf) are always added; budgets above the large epsilon are
            dropped, as no attack is stronger there (so at L-inf 0.3 on [0, 1]
            the sweep ends 0.45, 0.5).
        checks: True (all), False (none) or a list of names from `CHECKS`.
        split, limit: the split and number of examples, for dataset names
            (limit applies to arrays and datasets too).
        batch_size: examples per attack call.
        clip_min, clip_max: the valid pixel range.
        seed: seed of the attacks built from names.
        tolerance: slack, in accuracy, of the checks that compare two attacks
            (attacks are random; 0.02 is 2 points in 100).
        cache_dir: keep each finished unit (an attack on a batch) here; an
            interrupted evaluation run again with the same arguments skips
            finished units.
        shard: `"k/n"` or `(k, n)`: compute only the k-th of n shares of the work
            into `cache_dir` (every unit of every n-th batch) and return None.
            Shards may run at once, in processes or on machines sharing
            `cache_dir`; a run without `shard` afterwards reuses their units and
            computes only what is missing, giving the report an unsharded run
            gives.
        strategy: a `tf.distribute.Strategy` (e.g. `MirroredStrategy`) whose
            local devices share every attack batch: each device runs the
            model's passes on its slice, while the attacks' own arithmetic and
            random draws stay whole, so the results are one device's (tested on
            two logical CPUs). None: the strategy in scope, if any.
        precision: `"float32"`, or `"mixed_bfloat16"`: the gradient attacks
            compute with a copy of the model in bfloat16 (Square queries the
            model itself), and every adversarial example they return is judged
            by the model, so no break is counted that does not fool it
            (`evaluation.precision`). Faster on CPUs with AMX, maybe slower without;
            the attacks may be weaker, and the model card then gives no
            `autoattack_acc`. A model whose layers compute in mixed precision (trained
            with `precision="mixed_bfloat16"`) is evaluated as a float32 copy with the
            same weights, its clean accuracy included: attacks on its bfloat16 logits
            would be weaker. The report's `model` says so (`computes_in`, `evaluated_as`).
        verbose: show the progress line: the attack running, examples done of planned,
            and the time left from each attack's measured pace (`evaluation.progress`).

    Returns:
        An `EvaluationReport` (None for a `shard`); `report.save(directory)` writes
        `report.json`, `model_card.json` and `report.png`.

    Example:

    >>> report = tfrobust.evaluate(model, "mnist-sample", epsilon=0.3, limit=500)  # doctest: +SKIP
    >>> print(report)                                                            # doctest: +SKIP
    >>> report.save("runs/eval")                                                 # doctest: +SKIP
    """
    started = time.perf_counter()
    model, model_identity = inputs.resolve_model(model)
    norm, epsilon = inputs.threat_model(model, norm, epsilon)
    clip_min = validation.check_number("clip_min", clip_min)
    clip_max = validation.check_number("clip_max", clip_max)
    batch_size = validation.check_number("batch_size", batch_size, minimum=1, integer=True)
    tolerance = validation.check_number("tolerance", tolerance, minimum=0.0, maximum=1.0)
    seed = validation.check_number("seed", seed, minimum=0, integer=True)
    shard = inputs.check_shard(shard, cache_dir)
    precision = precision_lib.check_precision(precision)
    enabled = inputs.check_names(checks, suite.names())
    enabled = [suite.get(name) for name in suite.names() if name in enabled]
    common = {"epsilon": epsilon, "norm": norm, "seed": seed, "clip_min": clip_min,
              "clip_max": clip_max}
    members = inputs.ensemble_members(attacks, common)
    sweepers = [inputs.named_attack(a, common)
                for a in inputs.as_list(sweep_attacks, "sweep_attacks")]
    x, y, data_identity = inputs.resolve_data(data, split, limit, clip_min, clip_max,
                                              inputs.model_image_size(model))
    inputs.check_fits_model(x, model, data_identity["name"])
    grid = inputs.sweep_grid(epsilons, epsilon, norm, clip_min, clip_max, x.shape[1:])
    unit_context = [model_identity.get("weights_sha256"), data_identity["sha256"]]
    computes_in = (precision_lib.computes_in(model) if isinstance(model, keras.Model)
                   else "float32")
    if computes_in != "float32":
        # Attacks on bfloat16 logits are weaker (Square's, measured: `evaluation.precision`);
        # the weights are float32 and define the float32 function, which is evaluated.
        model_identity["computes_in"] = computes_in
        model_identity["evaluated_as"] = "float32 copy (same weights)"
        model = precision_lib.lower_precision_copy(model, "float32")
        unit_context.append("as-float32")
    logits_fn = inputs.evaluation_logits(model, strategy)
    search_fn = None
    if precision != "float32":
        search_fn = inputs.evaluation_logits(precision_lib.lower_precision_copy(model, precision),
                                             strategy)
        unit_context.append(precision)
    runner = Runner(logits_fn, x, y, batch_size, _cache(cache_dir, model_identity, verbose),
                    unit_context, norm, clip_min, clip_max, shard=shard, search_fn=search_fn)
    timings = {}

    # 1. Clean accuracy.
    tick = time.perf_counter()
    logits = runner.logits(x)
    validation.check_labels(y, num_classes=logits.shape[-1], name="y")
    runner.set_correct(np.argmax(logits, -1) == y)
    timings["clean"] = time.perf_counter() - tick
    context = suite.CheckContext(runner, logits_fn, logits, members, common, tolerance)
    early = _early_checks(enabled, context, verbose)
    runner.progress = Progress() if verbose else None
    _plan(runner, members, sweepers, grid, enabled, context)

    # 2. The ensemble, each member on the points still robust.
    tick = time.perf_counter()
    context.ensemble = runner.ensemble(members)
    timings["ensemble"] = time.perf_counter() - tick

    # 3. The epsilon sweep.
    tick = time.perf_counter()
    context.grid = grid
    runner.stage = "sweep"
    context.curves = [_sweep(runner, attack, grid) for attack in sweepers]
    timings["sweep"] = time.perf_counter() - tick

    # 4. The checks.
    tick = time.perf_counter()
    runner.stage = "check"
    later = [check for check in enabled if check.name not in early]
    if shard is not None:  # the units are in the cache; the verdicts are the full run's
        for check in later:
            check.measure(context)
        if runner.progress is not None:
            runner.progress.close()
        return None
    results = dict(zip([check.name for check in later], suite.run_checks(later, context)))
    results = [early.get(check.name) or results[check.name] for check in enabled]
    timings["checks"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    if runner.progress is not None:
        runner.progress.close()
    return _report(model_identity, data_identity, context, results, timings, precision)


def _early_checks(enabled, context, verbose):
    """Judge the checks the clean pass decides, by name; say at once if one fails."""
    early = {check.name: suite.run_checks([check], context)[0]
             for check in enabled if check.early}
    for result in early.values():
        if result.passed is False and verbose:
            print(f"tfrobust.evaluate: check {result.name} FAILED before any attack: "
                  f"{result.summary}", flush=True)
    return early


def _plan(runner, members, sweepers, grid, checks, context):
    """Tell the progress line the work ahead, in examples per attack (see `progress`)."""
    correct = runner.owned_examples
    for member in members:
        runner.plan(member, correct)  # an upper bound: `Runner.ensemble` drops the rest
    runner.stage = "sweep"
    for attack in sweepers:
        runner.plan(attack, correct * len(grid))
    runner.stage = "check"
    for attack, scale in suite.planned_attacks(checks, context):
        runner.plan(attack, correct, tag=scale_tag(scale))
    runner.stage = ""


def _cache(cache_dir, model_identity, verbose):
    """The unit store: on disk in `cache_dir` if the model has weights to identify it by."""
    cache = UnitStore(cache_dir if model_identity.get("weights_sha256") else None)
    if cache_dir is not None and cache.directory is None and verbose:
        print("tfrobust.evaluate: the model has no weights to identify it by; "
              "finished units are not cached on disk.")
    return cache


def _sweep(runner, attack, grid):
    """One sweep curve: `attack`'s robust accuracy at each budget of `grid`."""
    accuracy = [runner.accuracy(runner.standalone(inputs.at_epsilon(attack, e))) for e in grid]
    return {"name": inputs.label(attack), "config": attacks_lib.serialize(attack),
            "accuracy": accuracy}


def _report(model_identity, data_identity, context, results, timings, precision):
    from tfrobust.utils.provenance import provenance

    runner, ensemble, members = context.runner, context.ensemble, context.members
    names = [inputs.label(m) for m in members]
    broken_by = [("misclassified" if b == -2 else "robust" if b == -1 else names[b])
                 for b in ensemble.broken_by]
    attack_rows = [{
        "name": names[i], "config": attacks_lib.serialize(member),
        "attacked": int(ensemble.attacked[i]), "broken": int(ensemble.broken[i]),
        "robust_accuracy_after": float(ensemble.robust_accuracy_after[i]),
        "seconds": float(ensemble.seconds[i]),
    } for i, member in enumerate(members)]
    common = context.common
    return EvaluationReport(
        model=model_identity,
        data={**data_identity, "num_examples": len(runner.y)},
        threat_model={"norm": common["norm"], "epsilon": common["epsilon"],
                      "clip_min": common["clip_min"], "clip_max": common["clip_max"]},
        clean_accuracy=context.clean_accuracy,
        robust_accuracy=context.robust_accuracy,
        attacks=attack_rows,
        broken_by=broken_by,
        sweep={"epsilons": [float(e) for e in context.grid], "curves": context.curves},
        checks=results,
        check_attacks=context.used,
        timings={k: round(v, 3) for k, v in timings.items()},
        units={"computed": runner.cache.computed, "reused": runner.cache.reused},
        provenance=provenance(),
        precision=precision,
    )
