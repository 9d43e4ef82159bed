"""The promotion policy: which version is ``champion``, and why.

The gate judges what is served: the int8 ONNX graph's holdout figures. A version passes
when

- its holdout accuracy clears the floor,
- its int8 graph predicts the fp32 model's class on at least ``min_agreement`` of the
  holdout (else quantization changed the model),
- and, when a champion exists: it beats the champion's accuracy by the margin, the
  difference is significant in McNemar's exact test on the same holdout images (paired,
  two-sided, p < ``promote_significance``), and no class loses more than
  ``max_class_drop``.

Every reason is written down, pass or fail. Aliases, never stages; MLflow keeps no alias
history, so each promotion records the champion it replaced as the tag
``previous_champion`` on the new champion: that is what ``rollback`` follows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from mlcore import audit
from mlcore.registry import (
    CHALLENGER,
    CHAMPION,
    configure_mlflow,
    current_champion,
    evaluation_record,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlcore.settings import Settings
    from mlcore.storage import Lake

log = logging.getLogger(__name__)


class PromotionRefused(RuntimeError):
    """The gate said no, or there is nothing to roll back to."""


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]


@dataclass(frozen=True)
class Evidence:
    """What the gate knows of one version: its logged metrics (unprefixed = served int8)
    and, per holdout image, whether the served model was right."""

    metrics: dict[str, float]
    correct: np.ndarray | None = None
    holdout_hash: str | None = None

    @classmethod
    def of_record(cls, metrics: dict[str, float], record: dict | None) -> Evidence:
        if not record:
            return cls(metrics)
        correct = np.asarray(record["int8_predicted"]) == np.asarray(record["labels"])
        return cls(metrics, correct, record["holdout_hash"])


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs on the same images: ``better`` = only the candidate is right,
    ``worse`` = only the champion is right; ``p_value`` is the exact two-sided binomial."""

    better: int
    worse: int
    p_value: float


def mcnemar_exact(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> McNemar:
    """McNemar's exact test: under "equally good", each discordant image is a fair coin."""
    cand, champ = np.asarray(candidate_correct, bool), np.asarray(champion_correct, bool)
    if cand.shape != champ.shape:
        raise ValueError(f"paired test needs the same images: {cand.shape} vs {champ.shape}")
    better, worse = int((cand & ~champ).sum()), int((~cand & champ).sum())
    return McNemar(better, worse, binomial_two_sided(min(better, worse), better + worse))


def binomial_two_sided(k: int, n: int) -> float:
    """P(X <= k or X >= n - k) for X ~ Binomial(n, 1/2), with k <= n/2; exact integers."""
    from math import comb

    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def gate(candidate: Evidence, champion: Evidence | None, settings: Settings, *,
         num_classes: int | None = None) -> GateDecision:
    """The promotion rule on int8 (served) figures. Every reason is written down."""
    acc = candidate.metrics["holdout_accuracy"]
    reasons = []
    ok = acc >= settings.promote_floor
    reasons.append(f"int8 accuracy {acc:.4f} {'>=' if ok else '<'} floor "
                   f"{settings.promote_floor:.4f}")
    agreement = candidate.metrics.get("int8_fp32_agreement")
    if agreement is None:
        ok = False
        reasons.append("no int8/fp32 agreement recorded: not a served (ONNX) package")
    else:
        agrees = agreement >= settings.min_agreement
        ok &= agrees
        reasons.append(
            f"int8/fp32 agreement {agreement:.4f} {'>=' if agrees else '<'} "
            f"{settings.min_agreement:.4f}" + ("" if agrees else
                                              ": quantization changed the model's answers"))
    if champion is None:
        reasons.append("no champion yet")
        return GateDecision(ok, reasons)
    champ_acc = champion.metrics["holdout_accuracy"]
    beat = acc >= champ_acc + settings.promote_margin
    ok &= beat
    reasons.append(f"int8 accuracy {acc:.4f} {'>=' if beat else '<'} champion "
                   f"{champ_acc:.4f} + margin {settings.promote_margin:.4f}")
    ok &= _paired_test(candidate, champion, settings, reasons)
    if num_classes is None:
        from mlcore.task import task_of

        num_classes = task_of(settings).num_classes
    for i in range(num_classes):
        drop = champion.metrics[f"class_{i}_accuracy"] - candidate.metrics[f"class_{i}_accuracy"]
        if drop > settings.max_class_drop:
            ok = False
            reasons.append(f"class {i} accuracy drops {drop:.4f} > {settings.max_class_drop:.4f}")
    return GateDecision(ok, reasons)


def _paired_test(candidate: Evidence, champion: Evidence, settings: Settings,
                 reasons: list[str]) -> bool:
    if candidate.correct is None or champion.correct is None:
        reasons.append("paired test impossible: per-image holdout results missing (a version "
                       "registered before the ONNX package); promote by hand with --force")
        return False
    if candidate.holdout_hash != champion.holdout_hash:
        reasons.append("paired test impossible: the champion was evaluated on other holdout "
                       "images; promote by hand with --force")
        return False
    test = mcnemar_exact(candidate.correct, champion.correct)
    alpha = settings.promote_significance
    significant = test.p_value < alpha and test.better > test.worse
    reasons.append(
        f"McNemar exact p = {test.p_value:.3g} {'<' if test.p_value < alpha else '>='} "
        f"{alpha:g} ({test.better} images only the candidate gets right, {test.worse} only "
        f"the champion)" + ("" if significant else ": not significantly better"))
    return significant


def evidence(mlc: MlflowClient, run_id: str) -> Evidence:
    return Evidence.of_record(dict(mlc.get_run(run_id).data.metrics),
                              evaluation_record(mlc, run_id))


def decide_and_alias(settings: Settings, lake: Lake, version: str, *, actor: str, at: datetime,
                     mlc: MlflowClient | None = None) -> GateDecision:
    """Make the new version ``challenger``; move ``champion`` to it only if the gate passes.
    ``mlc``: the caller's configured client (a task's ``runtime().mlflow()``), else one is set up."""
    mlc = mlc or configure_mlflow(settings, lake)
    name = settings.model_name
    mlc.set_registered_model_alias(name, CHALLENGER, version)
    decision = _gate_version(settings, lake, mlc, version)
    _record_decision(settings, mlc, version, decision)
    if decision.promote:
        _move_champion(settings, lake, mlc, version, actor, at, "promote", "; ".join(decision.reasons))
    else:
        audit.record(lake, "gate_reject", f"{name}/{version}", actor=actor, at=at,
                     reason="; ".join(decision.reasons))
    log.info("version %s %s: %s", version, "promoted" if decision.promote else "not promoted",
             "; ".join(decision.reasons))
    return decision


def promote(settings: Settings, lake: Lake, version: str, *, actor: str, at: datetime,
            force: bool = False, reason: str = "") -> GateDecision:
    """Promote by hand: through the gate, or with ``force`` (needs a reason; audited)."""
    mlc = configure_mlflow(settings, lake)
    name = settings.model_name
    reason = reason.strip()
    champ = current_champion(mlc, name)
    if champ is not None and str(champ.version) == str(version):
        # Forcing it again would only write a second, misleading audit entry.
        raise PromotionRefused(f"version {version} is already champion: nothing to promote")
    decision = _gate_version(settings, lake, mlc, version)
    if force:
        if not reason:
            raise PromotionRefused("a forced promotion needs a non-blank --reason")
        mlc.set_model_version_tag(name, version, "forced_by", actor)
        mlc.set_model_version_tag(name, version, "forced_reason", reason)
        _move_champion(settings, lake, mlc, version, actor, at, "force_promote", reason,
                       gate=decision.reasons)
        forced = GateDecision(True, [f"forced by {actor}: {reason}", *decision.reasons])
        from mlcore.model_card import write_card

        write_card(settings, mlc, version, decision=forced)
        return forced
    _record_decision(settings, mlc, version, decision)
    if not decision.promote:
        raise PromotionRefused(f"version {version} does not pass the gate: "
                               + "; ".join(decision.reasons))
    _move_champion(settings, lake, mlc, version, actor, at, "promote",
                   reason or "; ".join(decision.reasons))
    return decision


def rollback(settings: Settings, lake: Lake, *, actor: str, at: datetime, reason: str) -> str:
    """Move ``champion`` back to the version it replaced; returns that version."""
    mlc = configure_mlflow(settings, lake)
    name = settings.model_name
    champ = current_champion(mlc, name)
    previous = champ.tags.get("previous_champion") if champ else None
    if not previous:
        raise PromotionRefused("no previous champion recorded: nothing to roll back to")
    mlc.set_registered_model_alias(name, CHAMPION, previous)
    mlc.set_model_version_tag(name, champ.version, "rolled_back_by", actor)
    audit.record(lake, "rollback", f"{name}/{previous}", actor=actor, at=at, reason=reason,
                 from_version=str(champ.version))
    log.info("champion rolled back from %s to %s by %s", champ.version, previous, actor)
    return previous


def _gate_version(settings: Settings, lake: Lake, mlc: MlflowClient, version: str
                  ) -> GateDecision:
    candidate_mv = mlc.get_model_version(settings.model_name, version)
    champ = current_champion(mlc, settings.model_name)
    if champ is not None and str(champ.version) == str(version):
        return GateDecision(False, [f"version {version} is already champion"])
    candidate = evidence(mlc, candidate_mv.run_id)
    if champ is None:
        return gate(candidate, None, settings)
    champion, note = on_candidates_holdout(settings, lake, champ, evidence(mlc, champ.run_id),
                                           candidate)
    decision = gate(candidate, champion, settings)
    return GateDecision(decision.promote, [note, *decision.reasons] if note else decision.reasons)


def on_candidates_holdout(settings: Settings, lake: Lake, champion_mv, champion: Evidence,
                          candidate: Evidence) -> tuple[Evidence, str | None]:
    """The champion's evidence on the candidate's holdout images, and a reason saying so.

    A task whose holdout is labeled batches gets a new holdout when a holdout batch arrives;
    the champion was evaluated on the old one, so nothing pairs. Its served graph then scores
    the holdout the candidate was judged on (sha256-checked, as scoring loads it). The
    evidence comes back unchanged when the holdouts already agree, the candidate has no
    per-image evidence, the lake's holdout is no longer the candidate's, or the champion's
    graph cannot be loaded (then with a reason saying why): the gate then refuses as before."""
    from mlcore.registry import pinned_version
    from mlcore.serving import ArtifactTampered, load_served
    from mlcore.task import task_of
    from mlcore.train import Evaluation, load_holdout

    if candidate.correct is None or champion.holdout_hash == candidate.holdout_hash:
        return champion, None
    task = task_of(settings)
    holdout = load_holdout(settings, lake, task)
    if (holdout.lineage["holdout_hash"] != candidate.holdout_hash
            or len(holdout.labels) != len(candidate.correct)):
        return champion, None
    pinned = pinned_version(settings, champion_mv)
    try:
        served = load_served(settings, lake, pinned)
    except ArtifactTampered as refused:
        return champion, f"champion v{pinned.version} not re-scored on this holdout: {refused}"
    predicted = served.predict_proba(holdout.images, settings.score_batch_size).argmax(axis=1)
    labels = holdout.labels.astype(np.int64)
    scored = Evaluation.of(predicted, labels, num_classes=task.num_classes)
    rescored = Evidence({**champion.metrics, **scored.metrics()}, predicted == labels,
                        candidate.holdout_hash)
    return rescored, (f"champion v{pinned.version} was evaluated on other holdout images: its "
                      f"served graph re-scored this holdout ({len(labels)} images), int8 "
                      f"accuracy {scored.accuracy:.4f}")


def _record_decision(settings: Settings, mlc: MlflowClient, version: str,
                     decision: GateDecision) -> None:
    from mlcore.model_card import write_card

    name = settings.model_name
    mlc.set_model_version_tag(name, version, "gate_decision",
                              "promoted" if decision.promote else "rejected")
    mlc.set_model_version_tag(name, version, "gate_reasons", json.dumps(decision.reasons))
    write_card(settings, mlc, version, decision=decision)


def _move_champion(settings: Settings, lake: Lake, mlc: MlflowClient, version: str, actor: str,
                   at: datetime, action: str, reason: str, **details) -> None:
    name = settings.model_name
    previous = current_champion(mlc, name)
    if previous is not None and str(previous.version) != str(version):
        mlc.set_model_version_tag(name, version, "previous_champion", str(previous.version))
    mlc.set_registered_model_alias(name, CHAMPION, version)
    audit.record(lake, action, f"{name}/{version}", actor=actor, at=at, reason=reason,
                 previous_champion=str(previous.version) if previous else None, **details)
