"""`tfrobust train`: train a robust classifier and write its artefacts."""

import dataclasses
import json
import os
import shutil
import time

from tfrobust.cli import arguments, catalog

#: The options of a run besides the model's (`tfrobust.recipe.defaults()`).
RUN_DEFAULTS = {
    "data": "mnist-sample",
    "image_size": None,         # [height, width] of an image folder's images (None: its first)
    "num_classes": None,        # for data that does not say (TFRecord, .npz without the entry)
    "epochs": 5,
    "batch_size": 128,
    "limit": None,              # training examples (None: all)
    "val_limit": 500,           # validation examples scored after every epoch
    "eval_limit": None,         # test examples of the final evaluation (None: all)
    "output": None,             # None: runs/train-<timestamp>
    "overwrite": False,
    "distribute": "none",       # or "mirrored", "multi-worker" (TF_CONFIG)
    "backup_every": "epoch",    # or a number of batches: OUTPUT/backup for resuming
}


def defaults():
    """Every option of `tfrobust train` with its default (None: resolved from others).

    The model's options and each registered method's hyperparameters come from
    `tfrobust.recipe` (through `tfrobust.cli.catalog`, which reads the registry once the
    objectives are imported), so an objective registered later has its options here too.
    """
    return {**catalog.current()["defaults"], **RUN_DEFAULTS}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a robust classifier",
        description=(
            "Train a classifier with adversarial training and write DIR/model.keras, "
            "DIR/history.json and DIR/config.json. Options come from the defaults, then "
            "--config FILE, then the flags given."
        ),
    )
    parser.add_argument("--config", help="a .toml or .json file of options (keys as the flags)")
    parser.add_argument("--data", help="dataset name, .npz or TFRecord file, or image folder "
                                       f"(default {RUN_DEFAULTS['data']})")
    parser.add_argument("--image-size", type=arguments.image_size,
                        help="HxW to resize an image folder's images to (default: the size of "
                             "its first image)")
    parser.add_argument("--num-classes", type=int,
                        help="number of classes, for data that does not say (TFRecord files, "
                             ".npz files without a num_classes entry); never guessed from labels")
    offer = catalog.current()
    parser.add_argument("--model", help=f"backbone (default {offer['defaults']['model']})")
    _add_method_arguments(parser, offer)
    _add_attack_and_run_arguments(parser, offer)
    parser.set_defaults(run=run)
    return parser


def _add_method_arguments(parser, offer):
    """The framework, its hyperparameters, the head and ADR: all from the objective registry
    (`offer`, a `tfrobust.cli.catalog`)."""
    parser.add_argument("--method", choices=offer["methods"],
                        help="training framework (default pgd-at)")
    for name, kind, text in offer["hyperparameters"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int if kind == "int" else float,
                            help=text)
    parser.add_argument("--head", choices=offer["heads"],
                        help="classification head: dense (default) or hypersphere (HE)")
    he_defaults = offer["he_defaults"]
    scales = ", ".join(f"{m} {scale:g}" for m, (scale, _) in he_defaults.items())
    margins = ", ".join(f"{m} {margin:g}" for m, (_, margin) in he_defaults.items())
    parser.add_argument("--scale", type=float, help=f"HE scale s (default per method: {scales})")
    parser.add_argument("--margin", type=float,
                        help=f"HE margin m (default per method: {margins})")
    parser.add_argument("--adr", action="store_true", default=None,
                        help="add the ADR regularisers to pgd-at or trades")
    parser.add_argument("--adr-weights",
                        help="ADR term weights, e.g. lc=1,gc=1,ls=1,gs=0,ce=1 (local/global "
                             "compactness, local/global smoothness, conditional entropy)")
    parser.add_argument("--adr-layer",
                        help="backbone layer ADR acts on (default: the backbone's reference "
                             "latent, flatten on small_cnn, features on the ResNets)")


def _add_attack_and_run_arguments(parser, offer):
    parser.add_argument("--attack-bn", choices=("inference", "training"),
                        help="batch norm mode while crafting training attacks (default inference)")
    parser.add_argument("--precision", choices=offer["precisions"],
                        help="float32 (default) or mixed_bfloat16 (perturbations stay float32)")
    parser.add_argument("--norm", choices=offer["norms"], help="threat model norm (default linf)")
    parser.add_argument("--epsilon", type=arguments.epsilon, help="attack budget (default 0.3)")
    parser.add_argument("--num-steps", type=int,
                        help="PGD steps of the training attack (default 10)")
    parser.add_argument("--step-size", type=float, help="PGD step (default 2.5*epsilon/num_steps)")
    parser.add_argument("--eval-num-steps", type=int,
                        help="PGD steps of the evaluation (default 20)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=int, help="batch size (default 128)")
    parser.add_argument("--optimizer", choices=offer["optimizers"],
                        help="adam (default) or sgd: PyTorch's SGD with momentum, as the "
                             "CIFAR-10 references train")
    parser.add_argument("--learning-rate", type=float,
                        help="learning rate, the peak of a schedule (default 1e-3 for adam, "
                             "0.1 for sgd)")
    parser.add_argument("--lr-schedule", choices=offer["lr_schedules"],
                        help="constant (default); piecewise: divided by 10 after 1/2 and 3/4 of "
                             "training (FastAT's multistep); cyclic: linear from 0 up to the rate "
                             "at 2/5 of training and back to 0 (Rice et al.'s superconverge)")
    parser.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float,
                        help="SGD weight decay, an L2 term added to the gradient as PyTorch's "
                             "(default 0; the references use 5e-4)")
    parser.add_argument("--limit", type=int, help="use only the first N training examples")
    parser.add_argument("--val-limit", type=int, help="validation examples per epoch (default 500)")
    parser.add_argument("--eval-limit", type=int, help="test examples in the final evaluation")
    parser.add_argument("--dropout", type=float,
                        help="dropout rate of small_cnn (after fc1, default 0.5 as in the "
                             "reference) or wide_resnet (in every block, default 0)")
    parser.add_argument("--initialization", choices=("keras", "reference"),
                        help="small_cnn weights: keras (Glorot, the default) or reference "
                             "(TRADES' SmallCNN, zero dense head); the ResNets have only their "
                             "reference initialisation")
    parser.add_argument("--depth", type=int, help="wide_resnet depth (default 34)")
    parser.add_argument("--width", type=int, help="wide_resnet width (default 10)")
    parser.add_argument("--base-width", type=int,
                        help="preact_resnet18's first-stage filters, doubled at each of its "
                             "four stages (default 64, the reference; 16 has 1/16 of its cost)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"),
                        help="XLA: auto picks the measured faster path per device")
    parser.add_argument("--output", help="output directory (default runs/train-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace the artefacts of an earlier run in --output")
    parser.add_argument("--distribute", choices=("none", "mirrored", "multi-worker"),
                        help="none (default), mirrored (this machine's devices) or multi-worker "
                             "(MultiWorkerMirroredStrategy configured by TF_CONFIG)")
    parser.add_argument("--backup-every",
                        help="back up to OUTPUT/backup every epoch (default) or every N batches; "
                             "the same command resumes an interrupted run from its last backup")


def resolve_options(args):
    """The run's full configuration from defaults, the config file and the flags."""
    from tfrobust import recipe
    from tfrobust.cli import config

    all_defaults = defaults()
    file_values = config.read_config_file(args.config) if args.config else {}
    cli_values = {key: getattr(args, key, None) for key in all_defaults}
    options = config.resolve(all_defaults, file_values, cli_values)
    if isinstance(options["jit_compile"], str) and options["jit_compile"] in ("true", "false"):
        options["jit_compile"] = options["jit_compile"] == "true"
    options = recipe.resolve(options)
    _check_run_options(options)
    if options["output"] is None:
        options["output"] = os.path.join("runs", time.strftime("train-%Y%m%d-%H%M%S"))
    return options


def _check_run_options(options):
    """The run's own numbers (the model's are `tfrobust.recipe.resolve`'s), before any work."""
    from tfrobust.cli import resume
    from tfrobust.utils import distribution, validation

    if options["distribute"] not in distribution.STRATEGIES:
        raise ValueError(f"Expected distribute in {list(distribution.STRATEGIES)}. Received: "
                         f"distribute={options['distribute']!r}")
    options["backup_every"] = resume.parse_backup_every(options["backup_every"])
    for key in ("epochs", "batch_size"):
        validation.check_number(key, options[key], minimum=1, integer=True)
    for key in ("limit", "val_limit", "eval_limit"):  # named here, not as data's `limit`
        if options[key] is not None:
            validation.check_number(key, options[key], minimum=1, integer=True)
    if options["num_classes"] is not None:
        validation.check_number("num_classes", options["num_classes"], minimum=2, integer=True)
    if options["image_size"] is not None:
        size = options["image_size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            raise ValueError(f"Expected image_size to be [height, width]. Received: "
                             f"image_size={size!r}")
        for value in size:
            validation.check_number("image_size", value, minimum=1, integer=True)


def _check_output(directory, overwrite):
    """Refuse to clobber an earlier run; creates nothing (that waits until training works)."""
    artefacts = ("model.keras", "history.json", "config.json")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"Expected a directory. Received: --output {directory!r} is a file")
    existing = [a for a in artefacts if os.path.exists(os.path.join(directory, a))]
    if existing and not overwrite:
        raise FileExistsError(
            f"Expected an output directory without earlier results. Received: --output "
            f"{directory!r} already holds {existing}; pass --overwrite to replace them."
        )


def run(args):
    options = resolve_options(args)
    from tfrobust.utils import distribution

    _check_output(options["output"], options["overwrite"])
    multi_worker = options["distribute"] == "multi-worker"
    task = distribution.cluster_task() if multi_worker else distribution.ClusterTask(
        "worker", 0, 1, True)
    # First of all TensorFlow work: a multi-worker strategy starts this process's server.
    strategy = distribution.strategy(options["distribute"])
    import keras

    from tfrobust import backup, data
    from tfrobust.cli import resume

    backup_dir = resume.backup_dir(options["output"], task)
    restore_dir = resume.restore_dir(options["output"], task)
    resume.check_options(restore_dir, options)
    state = backup.read_state(restore_dir)
    size = options["image_size"]
    info = data.info(options["data"], image_size=size, num_classes=options["num_classes"])
    train_ds = data.load(options["data"], split="train", batch_size=options["batch_size"],
                         limit=options["limit"], seed=options["seed"], image_size=size)
    val_ds = data.load(options["data"], split="test", batch_size=256, limit=options["val_limit"],
                       image_size=size)
    test_ds = data.load(options["data"], split="test", batch_size=256,
                        limit=options["eval_limit"], image_size=size)
    # Data of unknown size (TFRecord files, image folders) is counted where it is cheap or
    # needed (a schedule counts updates), so that progress bars show each pass's length and
    # Keras does not warn at the end of every validation that the data "ran out".
    steps_per_epoch = None
    if options["lr_schedule"] != "constant":
        steps_per_epoch = _batches(options, "train", options["limit"], options["batch_size"])
        train_ds = _sized(train_ds, steps_per_epoch)
    val_ds = _sized(val_ds, _batches(options, "test", options["val_limit"], 256, val_ds))
    test_ds = _sized(test_ds, _batches(options, "test", options["eval_limit"], 256, test_ds))
    if multi_worker:
        # Batches are global: every worker builds them all and keeps its share.
        train_ds, val_ds, test_ds = (distribution.shard_by_data(d)
                                     for d in (train_ds, val_ds, test_ds))
    # A resumed run's epochs see the shuffle orders of an uninterrupted run's.
    backup.skip_epochs(train_ds, state["epoch"] if state else 0)
    keras.utils.set_random_seed(options["seed"])
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(options, info, train_ds, val_ds, test_ds, strategy, task,
                      (backup_dir, restore_dir), state, steps_per_epoch)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _batches(options, split, limit, batch_size, dataset=None):
    """The (global) batches of one pass over `split`, where `dataset`'s size is not known.

    TFRecord files: from their label counts (a label-only pass, cached; `data.info` has made
    it for the training split already). Image folders: counted on an unshuffled copy, as
    iterating a shuffled training dataset would move its shuffle orders on by an epoch.
    """
    import math

    from tfrobust import data
    from tfrobust.data import sources

    if dataset is not None and int(dataset.cardinality()) >= 0:
        return int(dataset.cardinality())
    source = sources.resolve(options["data"])
    if source.kind == "tfrecord":
        examples = int(sources.tfrecord_label_counts(source, split).sum())
        return math.ceil(min(examples, limit or examples) / batch_size)
    copy = data.load(options["data"], split=split, batch_size=batch_size, limit=limit,
                     shuffle=False, augment=False, image_size=options["image_size"])
    count = int(copy.cardinality())
    if count < 0:  # image folders
        count = int(copy.reduce(0, lambda n, _: n + 1))
    return count


def _sized(dataset, batches):
    import tensorflow as tf

    if int(dataset.cardinality()) >= 0:
        return dataset
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def _train(options, info, train_ds, val_ds, test_ds, strategy, task, backup_dirs, state,
           steps_per_epoch=None):
    """Build, fit, evaluate and save; `backup_dirs`: where this process backs up, and where it
    restores from (`resume.restore_dir`); `steps_per_epoch` for a learning-rate schedule."""
    from tfrobust import recipe
    from tfrobust.backup import BackupAndRestore, read_state
    from tfrobust.cli import resume

    with strategy.scope():
        model = recipe.build_model(options, info, steps_per_epoch=steps_per_epoch)
    resumed = f", resuming after epoch {state['epoch']}" if state else ""
    print(f"tfrobust train: {options['method']} of {options['model']} on {info.name} "
          f"({info.image_shape}, {info.num_classes} classes), {options['norm']} epsilon "
          f"{options['epsilon']:g}, PGD-{options['num_steps']} -> {options['output']}{resumed}")
    if info.classes_in_train is not None and info.classes_in_train < info.num_classes:
        print(f"tfrobust train: note: the training split has examples of only "
              f"{info.classes_in_train} of the {info.num_classes} classes; the model cannot "
              "learn the others")
    # The backup outlives a failure of anything after fit (evaluation, saving).
    backup_dir, restore_dir = backup_dirs
    backup = BackupAndRestore(backup_dir, save_freq=options["backup_every"],
                              delete_checkpoint=False, restore_dir=restore_dir)
    # The objective's own callbacks (FastAT's guard) first: the backup keeps what they restore.
    callbacks = [*model.objective.callbacks(), backup]
    created = [d for d in (options["output"], backup_dir) if not os.path.isdir(d)]
    resume.write_options(backup_dir, options)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=options["epochs"], verbose=1,
                  callbacks=callbacks)
    except BaseException:
        if read_state(backup_dir) is None:
            # Nothing was trained: leave no trace of the run.
            for directory in reversed(created):
                shutil.rmtree(directory, ignore_errors=True)
        raise
    # Every process's seconds in fit, as the backups counted them (from
    # `since_epoch` on when resumed from a backup older than that count).
    train_seconds, since_epoch = backup.train_seconds, backup.train_seconds_since_epoch
    print(f"Evaluating on the test split (PGD-{options['eval_num_steps']})...")
    test = model.evaluate(test_ds, return_dict=True, verbose=1)
    if task.is_chief:
        _write_artefacts(options, info, model, backup.history, test, train_seconds,
                         resumed_after=state["epoch"] if state else 0, since_epoch=since_epoch)
    shutil.rmtree(backup_dir, ignore_errors=True)
    print(f"Test accuracy: clean {test['accuracy']:.4f}, adversarial "
          f"{test.get('adv_accuracy', float('nan')):.4f} "
          f"(PGD-{options['eval_num_steps']}, {options['norm']} epsilon {options['epsilon']:g}); "
          f"trained in {_trained_in(train_seconds, since_epoch, state)}. "
          f"Artefacts in {options['output']}"
          + ("" if task.is_chief else f" (written by the chief, not this {task.type})"))
    return 0


def _trained_in(seconds, since_epoch, state):
    """`1 h 02 min` or `41 s`, and which epochs and processes that covers when resumed."""
    whole = int(round(seconds))
    text = f"{whole // 3600} h {whole % 3600 // 60:02d} min" if whole >= 3600 else (
        f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s")
    if since_epoch:
        return (f"{text} since the backup after epoch {since_epoch} (an earlier tfrobust's, "
                "which kept no time)")
    if state:
        return f"{text} in all (resumed after epoch {state['epoch']})"
    return text


def _write_artefacts(options, info, model, history, test, train_seconds, resumed_after,
                     since_epoch=0):
    """model.keras, history.json, config.json, each written whole (renamed into place)."""
    from tfrobust.utils.files import write_atomic
    from tfrobust.utils.provenance import provenance

    out = options["output"]
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "model.keras"), model.save)
    epochs = [{"epoch": i + 1, **logs} for i, logs in enumerate(history)]

    def write_json(value):
        def write(path):
            with open(path, "w") as handle:
                json.dump(value, handle, indent=2, default=str)
        return write

    write_atomic(os.path.join(out, "history.json"), write_json(
        {"epochs": epochs, "test": {k: float(v) for k, v in test.items()},
         "train_seconds": round(train_seconds, 2), "train_seconds_since_epoch": since_epoch,
         "resumed_after_epoch": resumed_after}))
    write_atomic(os.path.join(out, "config.json"), write_json(
        {"options": options, "data_info": dataclasses.asdict(info),
         "model": model.get_config(), **provenance()}))
