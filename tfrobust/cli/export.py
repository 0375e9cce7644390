"""`tfrobust export`: write a trained `.keras` model as a TensorFlow Serving SavedModel."""

import os

from tfrobust.cli import arguments


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export",
        help="export a trained model for TensorFlow Serving",
        description=(
            "Write the inference model of MODEL (a .keras file) to OUTDIR/<version>/ "
            "(saved_model.pb and variables/), the layout TensorFlow Serving loads with "
            "--model_base_path=OUTDIR. The version directory appears complete or not at all. "
            "Signatures: serving_default (images: float32 [0, 1]) and serving_bytes "
            "(image_bytes: PNG or JPEG); outputs logits, probabilities, classes."
        ),
    )
    parser.add_argument("model", metavar="MODEL",
                        help="a .keras file (e.g. from tfrobust train), or pretrained:NAME, a "
                             "model of the zoo shipped with tfrobust")
    parser.add_argument("outdir", metavar="OUTDIR", help="the model's base directory")
    parser.add_argument("--version", type=int, dest="model_version", metavar="N",
                        help="version number (default: one more than the highest in OUTDIR, "
                             "or 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace version N if it exists")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="export a model whose optimizer never made a step (e.g. weights "
                             "trained elsewhere, or saved without the optimizer)")
    parser.add_argument("--max-image-pixels", type=int, metavar="P",
                        help="the largest image (width x height) serving_bytes decodes; larger "
                             "ones are refused from their header, before decoding (default: "
                             "4096 x 4096, or 64 model inputs if that is more)")
    parser.set_defaults(run=run)
    return parser


def run(args):
    from tfrobust.export import export_saved_model

    model, zoo_entry = arguments.model_file(args.model)
    # A zoo model is shipped without its optimizer; it is trained all the same.
    result = export_saved_model(model, args.outdir, version=args.model_version,
                                overwrite=args.overwrite,
                                allow_untrained=args.allow_untrained or zoo_entry is not None,
                                max_image_pixels=args.max_image_pixels)
    print(f"tfrobust export: wrote {args.model} as version {result.version} to {result.path}")
    if "serving_bytes" in result.signatures:
        print(f"  serving_bytes refuses images of more than {result.max_image_pixels} pixels "
              "(--max-image-pixels)")
    for name, signature in result.signatures.items():
        print(f"  signature {name}:")
        for role in ("inputs", "outputs"):
            for key, (dtype, shape) in signature[role].items():
                dims = ", ".join("-1" if d is None else str(d) for d in shape)
                print(f"    {role[:-1]:6} {key:13} {dtype:7} ({dims})")
    print(f"Serve with: tensorflow_model_server --rest_api_port=8501 --model_name=NAME "
          f"--model_base_path={os.path.abspath(args.outdir)}")
    return 0
