"""The report's picture: robust accuracy against epsilon, per attack."""


def plot_report(report):
    """A matplotlib figure of `report`'s epsilon sweep.

    One curve per sweep attack (accuracy in percent against epsilon), the
    clean accuracy as a dashed line and a star at epsilon 0, the evaluation
    epsilon as a dotted vertical line, and the ensemble's worst case there as
    a black diamond, each named in the legend below the panels. Budgets above
    twice the evaluation epsilon (the large epsilon of the check) go in a
    second, narrow panel so the main one keeps its scale. The title says how
    many of the checks ran and which failed (`EvaluationReport.checks_line`).

    Returns:
        A `matplotlib.figure.Figure` (drawn with the Agg backend; no display needed).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epsilon = report.threat_model["epsilon"]
    epsilons = list(report.sweep.get("epsilons", []))
    cut = 2 * epsilon if epsilon > 0 else float("inf")
    near = [i for i, e in enumerate(epsilons) if e <= cut + 1e-12]
    far = [i for i, e in enumerate(epsilons) if e > cut + 1e-12]

    figure = Figure(figsize=(8, 4.8))
    if far:
        grid = figure.add_gridspec(1, 2, width_ratios=[5, 1], wspace=0.08)
        axes = figure.add_subplot(grid[0])
        far_axes = figure.add_subplot(grid[1], sharey=axes)
    else:
        axes, far_axes = figure.add_subplot(1, 1, 1), None
    clean = 100 * report.clean_accuracy
    for curve in report.sweep.get("curves", []):
        accuracy = [100 * a for a in curve["accuracy"]]
        (line,) = axes.plot([epsilons[i] for i in near], [accuracy[i] for i in near],
                            marker="o", label=curve["name"], gid=f"sweep:{curve['name']}")
        if far_axes is not None:
            far_axes.plot([epsilons[i] for i in far], [accuracy[i] for i in far], marker="o",
                          color=line.get_color(), linestyle="none")
    axes.axhline(clean, color="grey", linestyle="--", linewidth=1,
                 label=f"clean accuracy {clean:.1f}%", gid="clean")
    axes.plot([0.0], [clean], marker="*", markersize=12, color="grey", linestyle="none",
              label="clean accuracy at epsilon 0", gid="clean_star")
    axes.axvline(epsilon, color="black", linestyle=":", linewidth=1,
                 label=f"evaluation epsilon {epsilon:g}", gid="epsilon")
    names = "+".join(a["name"] for a in report.attacks)
    axes.plot([epsilon], [100 * report.robust_accuracy], marker="D", color="black",
              linestyle="none", label=f"worst case ({names}) {100 * report.robust_accuracy:.1f}%",
              gid="worst_case")
    axes.set_xlabel(f"epsilon ({report.threat_model['norm']})")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    # Below the panels, so that no mark hides a curve.
    axes.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=2, fontsize=8,
                frameon=False)
    failed = [c.name for c in report.failed_checks]
    title = (f"{report.model.get('name')} on {report.data.get('name')} "
             f"({report.data.get('num_examples')} examples)")
    axes.set_title(f"{title}\n{report.checks_line()}", fontsize=10,
                   color="firebrick" if failed else "black")
    if far_axes is not None:
        far_axes.set_xticks([epsilons[i] for i in far])
        far_axes.tick_params(labelleft=False)
        far_axes.set_xlabel("large eps.")
        far_axes.grid(alpha=0.3)
    rows = -(-len(axes.get_legend().get_texts()) // 2)
    figure.subplots_adjust(left=0.08, right=0.97, top=0.88, bottom=0.16 + 0.045 * rows)
    return figure
