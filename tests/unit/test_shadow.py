"""Shadow scoring: the challenger scored from the champion's read, committed beside it."""

import pyarrow.compute as pc
import pytest

from mlcore.predictions import SHADOW, partition_commit, read_partition, read_rows
from mlcore.runtime import runtime_for
from mlcore.score import score_run
from mlcore.shadow import SHADOW_TABLE, ShadowAgreement, commit_shadow
from tests.unit.test_score import (
    CHALLENGER,
    START,
    _counting_runtime,
    _curate,
    _other_model,
    _run,
)


@pytest.fixture
def model():
    return _other_model(seed=0)


def test_the_challengers_agreement_folded_from_the_shards_equals_the_join_of_both_tables(
        lake, settings, model):
    for b in range(2):
        _curate(lake, settings, n=300, labeled=20, batch=f"batch-{b}")
    rt = _counting_runtime(settings)
    run = _run(challenger=CHALLENGER)
    # Two untrained models: seeds whose predictions on these images agree only in part.
    result = score_run(rt, run, model=model, challenger_model=_other_model(seed=3))
    agreement = commit_shadow(rt, run, scored=result.scored, shards=result.shards)

    columns = ["image_id", "predicted_class"]
    joined = read_partition(lake, START.date(), columns=columns).join(
        read_partition(lake, START.date(), table=SHADOW, columns=columns), "image_id",
        right_suffix="_challenger")
    agree = pc.sum(pc.equal(joined.column("predicted_class"),
                            joined.column("predicted_class_challenger"))).as_py()
    assert joined.num_rows == result.commit.rows == 560
    assert 0 < agree < joined.num_rows  # two different models: a figure worth checking
    assert agreement == ShadowAgreement(START.date(), "3", "4", 560, agree / 560)
    [row] = read_rows(lake, SHADOW_TABLE, day=START.date()).to_pylist()
    assert row == {"champion_version": "3", "challenger_version": "4", "rows": 560,
                   "agreement": agree / 560}
    shadow = partition_commit(lake, START.date(), table=SHADOW)
    assert shadow.metadata["model"]["version"] == "4" and shadow.rows == 560
    assert rt.lake.pixel_reads(result.shards) == dict.fromkeys(result.shards, 1)  # one for both


def test_without_a_challenger_nothing_is_shadowed(lake, settings, model):
    _curate(lake, settings)
    rt = runtime_for(settings)
    result = score_run(rt, _run(), model=model)
    assert all(s.shadow is None for s in result.scored)
    assert commit_shadow(rt, _run(), scored=result.scored, shards=result.shards) is None
    assert not lake.exists(f"{SHADOW}/_delta_log/00000000000000000000.json")


def test_a_challenger_that_refuses_to_load_never_costs_the_champions_partition(lake, settings,
                                                                                model):
    from mlcore.serving import ArtifactTampered
    from mlcore.validation import ValidationFailed

    class Tampered:
        """What loading a challenger whose graph no longer matches its checksum gives."""

        def predict_proba(self, images, batch_size=256):
            raise ArtifactTampered("model checksum does not match the registered one")

    _curate(lake, settings)
    rt = runtime_for(settings)
    run = _run(challenger=CHALLENGER)
    result = score_run(rt, run, model=model, challenger_model=Tampered())
    assert read_partition(lake, START.date()).num_rows == result.commit.rows == 5
    with pytest.raises(ValidationFailed, match="row_count"):
        commit_shadow(rt, run, scored=result.scored, shards=result.shards)
