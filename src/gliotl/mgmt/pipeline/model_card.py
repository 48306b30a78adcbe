"""The MGMT run's model card: cohort (patients, labels, modalities), hold-out and CV splits,
hold-out AUC with DeLong CIs per method and modality group, intended use and limits; built
from the run's own files."""

from __future__ import annotations

import json

from gliotl.core.reporting.model_card import (
    ModelCard,
    bullet_list,
    markdown_table,
    run_provenance,
)
from gliotl.core.runs.rundir import RunDir

SMALL_TEST = 100
"""Below this many hold-out patients the card warns that the AUCs are imprecise."""


def _limits(n_patients: int, n_test: int, source: str) -> list[str]:
    limits = [
        "One hold-out set from the same cohort (and scanners) as training: no external "
        "validation. Other sites, scanners or preprocessing may lower the AUC.",
        "MGMT promoter methylation from MRI is a surrogate: the reference is the tissue assay, "
        "and a prediction never replaces it.",
        "DeLong CIs reach their resolution limit at AUC near 1 on few patients; a CI of "
        "1.00-1.00 means the hold-out set was separated, not that the model is perfect.",
    ]
    if n_test < SMALL_TEST:
        limits.insert(0, f"Small n: {n_patients} patients in all and at most {n_test} in "
                         "the hold-out set, so AUCs are imprecise (see the CI widths).")
    if "phantom" in source.lower():
        limits.insert(0, "The cohort is a synthetic phantom: these numbers show that the "
                         "pipeline works, not how well MGMT can be read from real scans.")
    return limits


def mgmt_model_card(run: RunDir) -> ModelCard:
    """The card of a finished MGMT run (its config, cohort summary and metrics)."""
    from gliotl.mgmt.pipeline.report import compact_table

    config = run.config()
    metrics = json.loads(run.metrics_path.read_text(encoding="utf-8"))
    cohort = metrics.get("cohort", {})
    protocol = metrics.get("protocol", {})
    table = compact_table(run)
    n_test = int(table["n"].max()) if len(table) else 0
    card = ModelCard(f"Model card: {config['name']} (gliotl MGMT from MRI)")
    card.add("Model",
             "Binary classification of MGMT promoter methylation from MRI with a 3D ResNet-"
             f"{config['model']['depth']} (MedicalNet layout), per modality then late fusion "
             f"over modality groups (input mode {config['input_mode']}). Methods compared: "
             + ", ".join(f"`{m['name']}`" for m in config["methods"])
             + f". Reference method: `{config['reference']}`.")
    modalities = ", ".join(f"{name} ({count} patients)"
                           for name, count in cohort.get("per_modality", {}).items())
    card.add("Data", bullet_list([
        f"cohort: {cohort.get('source', config['cohort'].get('kind', '?'))}",
        f"{cohort.get('patients', '?')} labelled patients ({cohort.get('methylated', '?')} "
        f"methylated, {cohort.get('unmethylated', '?')} unmethylated) of "
        f"{cohort.get('patients_read', '?')} read",
        "excluded: " + (", ".join(f"{reason} {count}" for reason, count in
                                  cohort.get("exclusions", {}).items()) or "none"),
        f"modalities: {modalities or ', '.join(config['modalities'])}",
    ]))
    card.add("Evaluation splits",
             f"Stratified hold-out of {protocol.get('test_size')} of the patients, then "
             f"{protocol.get('n_splits')}-fold CV on the rest (`splits.csv`). Checkpoint: "
             f"{protocol.get('checkpoint')}; threshold: {protocol.get('threshold')}; "
             "everything learned from data is fitted on training folds only.")
    card.add("Metrics",
             markdown_table(table),
             "Hold-out ROC AUC with DeLong 95% CI per fused modality group; AP, sensitivity, "
             "specificity, accuracy and F1 at the validation-chosen threshold.")
    card.add("Intended use",
             "Research only: comparing fine-tuning strategies (SpotTune and baselines) for "
             "MGMT status from pre-operative MRI on small cohorts. Not for diagnosis or "
             "treatment decisions.")
    card.add("Limits", bullet_list(_limits(int(cohort.get("patients", 0) or 0), n_test,
                                           str(cohort.get("source", "")))))
    card.add("Provenance", run_provenance(run))
    return card


__all__ = ["mgmt_model_card"]
