import pytest
from conftest import make_records

from bds.data.mixer import mix_finetune_set, sample_alignment
from bds.errors import BDSInputError

BENIGN = make_records(300, "benign")
HARMFUL = make_records(120, "harmful")


@pytest.mark.parametrize(
    "n,p", [(100, 0.1), (100, 0.2), (200, 0.5), (57, 0.33), (10, 0.0), (10, 1.0)]
)
def test_exact_mix_has_exact_counts(n, p):
    mix = mix_finetune_set(BENIGN, HARMFUL, n, p, "exact", seed=3)
    sources = [r.source for r in mix.records]
    assert len(mix.records) == n
    assert sources.count("harmful") == round(p * n) == mix.n_harmful
    assert sources.count("benign") == n - round(p * n) == mix.n_benign
    assert len({r.id for r in mix.records}) == n  # no sample drawn twice


def test_mix_is_deterministic_for_a_seed_and_changes_with_it():
    a = mix_finetune_set(BENIGN, HARMFUL, 100, 0.2, "exact", seed=7)
    b = mix_finetune_set(BENIGN, HARMFUL, 100, 0.2, "exact", seed=7)
    c = mix_finetune_set(BENIGN, HARMFUL, 100, 0.2, "exact", seed=8)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert [r.id for r in a.records] != [r.id for r in c.records]


def test_exact_mix_is_shuffled_not_blocked():
    mix = mix_finetune_set(BENIGN, HARMFUL, 100, 0.5, "exact", seed=0)
    first_half = [r.source for r in mix.records[:50]]
    assert 10 < first_half.count("harmful") < 40


def test_interleave_is_probabilistic_and_reproducible():
    counts = [
        mix_finetune_set(BENIGN, HARMFUL, 1000 // 5, 0.1, "interleave", seed=s).n_harmful
        for s in range(20)
    ]
    assert len(set(counts)) > 1  # not an exact count
    assert 10 < sum(counts) / len(counts) < 30  # about p * N = 20
    a = mix_finetune_set(BENIGN, HARMFUL, 200, 0.1, "interleave", seed=1)
    b = mix_finetune_set(BENIGN, HARMFUL, 200, 0.1, "interleave", seed=1)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert sum(r.source == "harmful" for r in a.records) == a.n_harmful


def test_ids_are_kept_not_reindexed():
    mix = mix_finetune_set(BENIGN, HARMFUL, 50, 0.2, "exact", seed=0)
    originals = {r.id: r for r in BENIGN + HARMFUL}
    for r in mix.records:
        assert originals[r.id] is r


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_ratio_out_of_range_is_rejected(p):
    with pytest.raises(BDSInputError, match="harmful_ratio"):
        mix_finetune_set(BENIGN, HARMFUL, 10, p)


def test_n_larger_than_sources_is_a_clear_error():
    with pytest.raises(
        BDSInputError, match=r"needs 200 harmful samples but the harmful source holds 120"
    ):
        mix_finetune_set(BENIGN, HARMFUL, 400, 0.5)
    with pytest.raises(BDSInputError, match=r"benign source holds 300"):
        mix_finetune_set(BENIGN, HARMFUL, 1000, 0.1)


def test_alignment_sample_is_seeded_subset():
    safe = make_records(40, "safe")
    a = sample_alignment(safe, 10, seed=1)
    assert len(a) == 10 and len({r.id for r in a}) == 10
    assert [r.id for r in a] == [r.id for r in sample_alignment(safe, 10, seed=1)]
    assert sample_alignment(safe, None) == safe
    with pytest.raises(BDSInputError, match="n_alignment=41"):
        sample_alignment(safe, 41)
