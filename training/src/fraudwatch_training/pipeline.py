"""Training end to end: point-in-time features, time split, models, thresholds, evaluation, MLflow logging,
registration and the promotion gate. :func:`train_and_register` is also what tests use to get a real
registered model quickly."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score

from fraudwatch.features import FEATURE_NAMES, epoch_seconds, replay
from fraudwatch.model import FraudModel, PromotionResult, compute_reference, log_model, promote_if_better
from fraudwatch_training.data import History, data_hash
from fraudwatch_training.metrics import card_precision_at_k, evaluate, recall_per_scenario
from fraudwatch_training.models import KINDS, ModelSpec, fit_estimator
from fraudwatch_training.protocol import NS_PER_DAY, epoch_ns, known_at, without_known_compromised
from fraudwatch_training.split import SplitConfig, time_split
from fraudwatch_training.thresholds import CostModel, ThresholdPolicy, choose_thresholds, expected_cost

__all__ = ["Dataset", "TrainingResult", "build_dataset", "permutation_importance", "train_and_register"]

FloatArray = npt.NDArray[np.float64]


@dataclass
class Dataset:
    """Point-in-time features of every transaction with what evaluation needs beside them."""

    X: FloatArray
    y: npt.NDArray[np.int64]
    day: npt.NDArray[np.int64]  # days since the epoch (UTC)
    card_id: npt.NDArray[Any]
    amount: FloatArray
    scenario: npt.NDArray[np.int64]
    event_time: pd.Series
    country: list[str | None] = field(default_factory=list)
    # when each transaction's label was reported (ns since the epoch; int64 max: never)
    reported_ns: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def take(self, mask: npt.NDArray[np.bool_]) -> Dataset:
        return Dataset(
            self.X[mask], self.y[mask], self.day[mask], self.card_id[mask], self.amount[mask],
            self.scenario[mask], self.event_time[mask].reset_index(drop=True),
            [c for c, m in zip(self.country, mask, strict=True) if m] if self.country else [],
            self.reported_ns[mask] if len(self.reported_ns) else self.reported_ns,
        )  # fmt: skip


def build_dataset(history: History, progress: bool = False) -> Dataset:
    """Replay the history point-in-time (labels at their reported_at) through the feature library."""
    tx = history.transactions
    feats = replay(tx, history.labels, progress=progress).features
    seconds = epoch_seconds(tx["event_time"])
    reported = history.labels.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
    reported_at = tx["transaction_id"].map(reported["reported_at"])
    return Dataset(
        X=feats.to_numpy(dtype=np.float64),
        y=tx["is_fraud"].astype(np.int64).to_numpy(),
        day=(seconds // 86400).astype(np.int64),
        card_id=tx["card_id"].astype(str).to_numpy(),
        amount=tx["amount"].astype(float).to_numpy(),
        scenario=tx["fraud_scenario"].astype(np.int64).to_numpy(),
        event_time=tx["event_time"].reset_index(drop=True),
        country=tx["country"].tolist() if "country" in tx.columns else [],
        reported_ns=epoch_ns(reported_at),
    )


def not_known_compromised(
    data: Dataset, window: npt.NDArray[np.bool_], since_day: int
) -> npt.NDArray[np.bool_]:
    """Which rows of ``window`` (in window order) the Handbook's card precision@k keeps: cards already known
    compromised (a fraud since ``since_day``, the training start, reported before the row's day) go."""
    card = pd.factorize(data.card_id)[0].astype(np.int64)
    kept = without_known_compromised(data.day, card, data.y.astype(bool), data.reported_ns, window, since_day)
    return kept[window]


def permutation_importance(
    model: FraudModel,
    X: FloatArray,
    y: npt.NDArray[np.int64],
    repeats: int = 2,
    max_rows: int = 6000,
    seed: int = 0,
) -> dict[str, float]:
    """Drop in average precision when each feature is shuffled, on a sample keeping every fraud (up to a
    third of the sample). Uses the model's own fast scorer."""
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    pos = rng.choice(pos, min(len(pos), max_rows // 3), replace=False)
    neg = rng.choice(neg, min(len(neg), max_rows - len(pos)), replace=False)
    idx = np.concatenate([pos, neg])
    Xs, ys = X[idx], y[idx]
    if ys.sum() == 0 or ys.sum() == len(ys):
        return {name: 0.0 for name in model.feature_names}
    base = average_precision_score(ys, model.score_matrix(Xs))
    out: dict[str, float] = {}
    for j, name in enumerate(model.feature_names):
        drops = []
        for _ in range(repeats):
            Xp = Xs.copy()
            Xp[:, j] = rng.permutation(Xp[:, j])
            drops.append(base - average_precision_score(ys, model.score_matrix(Xp)))
        out[name] = float(np.mean(drops))
    return out


@dataclass
class TrainingResult:
    run_id: str
    best_kind: str
    model: FraudModel
    metrics: dict[str, dict[str, float]]  # kind -> {validation_*, test_*}
    model_version: str | None
    promotion: PromotionResult | None
    validation_X: FloatArray
    validation_y: npt.NDArray[np.int64]
    bounds: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    seconds: dict[str, float]
    # the promotion gate's window (the test window: after validation, seen by neither training nor choice)
    promotion_X: FloatArray
    promotion_y: npt.NDArray[np.int64]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _noop(_: str) -> None:
    return None


def train_and_register(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    tracking_uri: str,
    *,
    model_name: str = "fraud-detector",
    experiment: str = "fraudwatch",
    kinds: Sequence[str] = KINDS,
    specs: dict[str, ModelSpec] | None = None,
    split: SplitConfig | None = None,
    policy: ThresholdPolicy | None = None,
    costs: CostModel | None = None,
    register: bool = True,
    promote: bool = True,
    importance: bool = True,
    importance_rows: int = 6000,
    plots: bool = True,
    data_source: str = "",
    scenario_names: dict[int, str] | None = None,
    progress: bool = False,
    echo: Callable[[str], None] = _noop,
) -> TrainingResult:
    """Train every kind, pick the best on validation AP, tune its thresholds, log, register, promote.

    The training target holds only the frauds reported before the validation window starts (the model's
    cut-off). The promotion gate compares the challenger and production on the test window, which comes
    after the validation window the challenger was chosen and tuned on.

    ``transactions`` need transaction_id, event_time, card_id, terminal_id, amount, is_fraud (optionally
    fraud_scenario, channel, country); ``labels`` transaction_id, terminal_id, event_time, is_fraud,
    reported_at.
    """
    import mlflow
    from mlflow import MlflowClient

    from fraudwatch.simulator import SCENARIOS

    # fraud_scenario ids are the simulator's unless the caller names another dataset's (e.g. the Handbook's)
    names = SCENARIOS if scenario_names is None else scenario_names

    timings: dict[str, float] = {}
    split, policy, costs = split or SplitConfig(), policy or ThresholdPolicy(), costs or CostModel()
    tx = transactions.copy()
    if "fraud_scenario" not in tx.columns:
        tx["fraud_scenario"] = tx["is_fraud"].astype(np.int64)
    tx = tx.sort_values("event_time", kind="stable").reset_index(drop=True)
    history = History(tx, labels)

    t0 = time.perf_counter()
    echo("building point-in-time features")
    data = build_dataset(history, progress=progress)
    timings["features_s"] = time.perf_counter() - t0
    parts = time_split(data.event_time, split)
    train, val, test = data.take(parts.train), data.take(parts.validation), data.take(parts.test)
    for name, part in (("train", train), ("validation", val), ("test", test)):
        if part.y.sum() == 0:
            raise ValueError(f"the {name} part has no fraud: use a longer history")
    # The model is fitted when the validation window starts (the end of training + the label delay): the
    # training target holds only the frauds reported by then; later ones train as genuine (nobody knows
    # them yet) and still count as frauds in validation and test.
    cutoff = parts.bounds["validation"][0]
    y_train = known_at(train.y, train.reported_ns, int(cutoff.value))
    labels_known = {
        "train_frauds": float(train.y.sum()),
        "train_frauds_unknown_at_cutoff": float(train.y.sum() - y_train.sum()),
    }
    if y_train.sum() == 0:
        raise ValueError(f"no training fraud was reported before the cut-off {cutoff}: use a longer history")
    echo(
        f"labels as known at {cutoff}: {int(labels_known['train_frauds_unknown_at_cutoff']):,} of "
        f"{int(train.y.sum()):,} training frauds not yet reported, trained as genuine"
    )
    # card precision@100 as the Handbook defines it: known-compromised cards removed, per part
    since = int(parts.bounds["train"][0].value // NS_PER_DAY)
    cp_val = not_known_compromised(data, parts.validation, since)
    cp_test = not_known_compromised(data, parts.test, since)

    def card_precision(part: Dataset, kept: npt.NDArray[np.bool_], scores: FloatArray) -> float:
        return card_precision_at_k(part.day[kept], part.card_id[kept], part.y[kept], scores[kept], 100)

    specs = specs or {}
    fitted: dict[str, FraudModel] = {}
    metrics: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for kind in kinds:
        echo(f"training {kind} on {len(train.y):,} transactions ({int(y_train.sum()):,} known frauds)")
        spec = specs.get(kind, ModelSpec(kind))
        est = fit_estimator(spec, train.X, y_train)
        model = FraudModel(est)
        val_scores = model.score_matrix(val.X)
        choice = choose_thresholds(val.y, val_scores, policy)
        model.thresholds = choice.thresholds
        fitted[kind] = model
        m = {f"validation_{k}": v for k, v in evaluate(val.y, val_scores).items()}
        m["validation_card_precision_at_100"] = card_precision(val, cp_val, val_scores)
        test_scores = model.score_matrix(test.X)
        named = (("review", choice.thresholds.review), ("decline", choice.thresholds.decline))
        m |= {f"test_{k}": v for k, v in evaluate(test.y, test_scores, thresholds=named).items()}
        m["test_card_precision_at_100"] = card_precision(test, cp_test, test_scores)
        m |= {
            f"test_{k}": v
            for k, v in expected_cost(test.y, test_scores, test.amount, choice.thresholds, costs).items()
        }
        m["threshold_review"], m["threshold_decline"] = choice.thresholds.review, choice.thresholds.decline
        for name, r in recall_per_scenario(
            test.scenario, test_scores, choice.thresholds.review, names
        ).items():
            m[f"test_recall_review_{name}"] = r
        metrics[kind] = m
    timings["training_s"] = time.perf_counter() - t0

    best_kind = max(metrics, key=lambda k: metrics[k]["validation_average_precision"])
    best = fitted[best_kind]
    t0 = time.perf_counter()
    importances = permutation_importance(best, val.X, val.y, max_rows=importance_rows) if importance else {}
    timings["importance_s"] = time.perf_counter() - t0
    best.reference = compute_reference(train.X, best.score_matrix(train.X), importances)
    best.metadata |= {
        "model_kind": best_kind,
        "data_start": str(history.start),
        "data_end": str(history.end),
        "train_start": str(parts.bounds["train"][0]),
        "train_end": str(parts.bounds["train"][1]),
        "data_hash": data_hash(tx),
        "data_source": data_source,
        "code_version": git_commit(),
        "n_train": len(train.y),
        "label_cutoff": str(cutoff),
        "threshold_policy": repr(policy),
    }
    best.apply_metadata(best.to_metadata())  # refresh reason weights from the importances

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    client = MlflowClient(tracking_uri=tracking_uri)
    version = None
    promotion = None
    with mlflow.start_run(run_name=f"train-{best_kind}") as run:
        mlflow.log_params({k: v for k, v in best.metadata.items() if k != "threshold_policy"})
        mlflow.log_params(
            {"decline_precision": policy.decline_precision, "review_recall": policy.review_recall,
             "max_review_rate": policy.max_review_rate, "kinds": ",".join(kinds),
             "split": f"val {split.validation_days} d, test {split.test_days} d, gap {split.gap_days} d"}
        )  # fmt: skip
        for kind, m in metrics.items():
            mlflow.log_metrics({f"{kind}.{k}": float(v) for k, v in m.items() if np.isfinite(v)})
        mlflow.log_metrics({k: float(v) for k, v in metrics[best_kind].items() if np.isfinite(v)})
        mlflow.log_metrics({k: float(v) for k, v in timings.items()})
        mlflow.log_metrics(labels_known)
        if importances:
            mlflow.log_dict(importances, "feature_importance.json")
        if plots:
            from fraudwatch_training import plots as p

            test_scores = {k: fitted[k].score_matrix(test.X) for k in fitted}
            figs = {
                "pr_curve.png": p.pr_plot(test.y, test_scores),
                "roc_curve.png": p.roc_plot(test.y, test_scores),
                "threshold_curve.png": p.threshold_plot(val.y, best.score_matrix(val.X), best.thresholds),
                "score_distribution.png": p.score_plot(test.y, test_scores[best_kind]),
            }
            if importances:
                figs["feature_importance.png"] = p.importance_plot(importances)
            for fname, fig in figs.items():
                mlflow.log_figure(fig, f"plots/{fname}")
            import matplotlib.pyplot as plt

            plt.close("all")
        example = pd.DataFrame(val.X[:5], columns=list(FEATURE_NAMES))
        mv = log_model(
            best, input_example=example,
            registered_model_name=model_name if register else None, client=client,
        )  # fmt: skip
        if mv is not None:
            version = str(mv.version)
            if promote:
                promotion = _gate(client, model_name, version, test, parts.bounds["test"], echo)
        run_id = run.info.run_id
    return TrainingResult(
        run_id, best_kind, best, metrics, version, promotion, val.X, val.y, parts.bounds, timings,
        test.X, test.y,
    )  # fmt: skip


def _gate(
    client: Any,
    model_name: str,
    version: str,
    window: Dataset,
    bounds: tuple[pd.Timestamp, pd.Timestamp],
    echo: Callable[[str], None],
) -> PromotionResult:
    """The promotion gate on the test window: after the challenger's validation window, so neither its
    training, its model-kind choice nor its thresholds saw it. Production normally comes from an earlier
    history; if it was trained on this window the comparison is flagged. Logs the window, both values
    and the verdict to the active MLflow run."""
    import mlflow

    from fraudwatch.model import resolve_alias

    start, end = bounds
    seen_by_production = False
    current = resolve_alias(client, model_name, "production")
    if current is not None and current.run_id:
        prod_train_end = client.get_run(current.run_id).data.params.get("train_end")
        seen_by_production = prod_train_end is not None and pd.Timestamp(prod_train_end) > start
    promotion = promote_if_better(client, model_name, version, window.X, window.y, echo=echo)
    mlflow.log_params(
        {"promotion_window_start": str(start), "promotion_window_end": str(end),
         "promotion_window_rows": len(window.y), "promotion_metric": promotion.metric}
    )  # fmt: skip
    values = {"promotion_candidate_value": promotion.candidate_value}
    if promotion.production_value is not None:
        values["promotion_production_value"] = promotion.production_value
    mlflow.log_metrics({k: float(v) for k, v in values.items()})
    mlflow.set_tags(
        {"promotion": promotion.summary(), "promotion_verdict": "promoted" if promotion.promoted else "kept",
         "promotion_window_seen_by_production": str(seen_by_production).lower()}
    )  # fmt: skip
    if seen_by_production:
        echo("warning: production was trained on data up to or past the promotion window's start")
    return promotion
