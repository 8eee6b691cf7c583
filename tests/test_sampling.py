"""The native sampler against numpy references: penalties exactly (through greedy picks), truncation and
temperature statistically (empirical frequencies over many seeded draws), and the random stream bit for bit
(a pure-Python MT19937-64 reproduces its draws)."""

import numpy as np
import pytest

from autoglm_gguf import _core

SP = _core.SamplingParams


def sampler(**kw):
    return _core.Sampler(SP(**kw))


def f32(x):
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------- numpy references


def penalize(logits, history, repeat=1.0, freq=0.0, presence=0.0, last_n=64):
    """llama.cpp's penalties sampler: each distinct token of the window once, repeat then freq/presence,
    in float32 like the C++ code."""
    out = f32(logits).copy()
    if last_n == 0 or (repeat == 1.0 and freq == 0.0 and presence == 0.0):
        return out
    window = list(history) if last_n == -1 else list(history)[max(0, len(history) - last_n):]
    ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
    r, f, p = np.float32(repeat), np.float32(freq), np.float32(presence)
    for i, c in zip(ids, counts):
        v = out[i]
        v = v * r if v <= 0 else v / r
        out[i] = v - (np.float32(c) * f + p)
    return out


def softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def kept_distribution(logits, top_k=0, top_p=1.0, min_p=0.0, temperature=1.0):
    """Our chain: top-k -> top-p -> min-p on the temperature-1 probabilities, then softmax(x / T) over
    the kept tokens."""
    x = np.asarray(logits, dtype=np.float64)
    ids = np.arange(len(x))
    keep = np.lexsort((ids, -x))  # rank: logit descending, id ascending
    if top_k > 0:
        keep = keep[:top_k]
    if top_p < 1.0:
        cum = np.cumsum(softmax(x[keep]))
        reached = cum >= np.float32(top_p)
        keep = keep[: int(np.argmax(reached)) + 1] if reached.any() else keep
    if min_p > 0.0:
        keep = keep[x[keep] >= x[keep].max() + np.log(np.float32(min_p))]
    probs = np.zeros(len(x))
    probs[keep] = softmax(x[keep] / np.float32(temperature))
    return probs


def empirical(s, logits, n=20000, history=()):
    counts = np.bincount([s.sample(logits, list(history)) for _ in range(n)], minlength=len(logits))
    return counts / n


# ---------------------------------------------------------------- greedy and penalties


def test_greedy_is_argmax_lowest_id_on_ties():
    rng = np.random.default_rng(0)
    s = sampler()  # the defaults are greedy
    for _ in range(50):
        x = f32(rng.standard_normal(1000))
        assert s.sample(x, []) == int(np.argmax(x))
    x = f32([0.5, 3.0, -1.0, 3.0, 3.0])
    assert s.sample(x, []) == 1
    assert s.sample(f32(np.zeros(7)), []) == 0


@pytest.mark.parametrize("last_n", [-1, 0, 1, 3, 8, 64, 1000])
@pytest.mark.parametrize("repeat,freq,presence", [
    (1.3, 0.0, 0.0), (0.7, 0.0, 0.0), (1.0, 0.4, 0.0), (1.0, 0.0, 0.9), (1.5, 0.3, 0.5), (1.0, -0.5, -0.2),
])
def test_penalties_match_numpy_reference(last_n, repeat, freq, presence):
    """Greedy after penalties must equal argmax of the numpy-penalized logits, over many random cases
    where the penalties change the winner often."""
    rng = np.random.default_rng(abs(hash((last_n, repeat, freq, presence))) % 2**32)
    s = sampler(repeat_penalty=repeat, frequency_penalty=freq, presence_penalty=presence,
                penalty_last_n=last_n)
    changed = 0
    for _ in range(300):
        n_vocab = int(rng.integers(2, 40))
        x = f32(rng.standard_normal(n_vocab) * 2)
        history = rng.integers(0, n_vocab, int(rng.integers(0, 30))).tolist()
        ref = penalize(x, history, repeat, freq, presence, last_n)
        top2 = np.sort(ref)[-2:]
        if n_vocab > 1 and top2[1] - top2[0] < 1e-5:
            continue  # a near tie could round either way
        got = s.sample(x, history)
        assert got == int(np.argmax(ref)), (x, history, ref)
        changed += got != int(np.argmax(x))
    if last_n != 0:
        assert changed > 3  # the cases really exercised the penalties


def test_penalty_hand_computed():
    # window of 3 = [0, 1, 0]: token 0 twice, token 1 once; token 2 only before the window
    x = f32([2.0, -1.0, 1.9, 0.5])
    history = [2, 0, 1, 0]
    ref = penalize(x, history, repeat=2.0, freq=0.25, presence=0.5, last_n=3)
    np.testing.assert_allclose(ref, [2.0 / 2 - (2 * 0.25 + 0.5), -1.0 * 2 - (0.25 + 0.5), 1.9, 0.5])
    kw = {"repeat_penalty": 2.0, "frequency_penalty": 0.25, "presence_penalty": 0.5}
    assert sampler(penalty_last_n=3, **kw).sample(x, history) == 2
    # over the whole history token 2 is hit too: 1.9 / 2 - 0.75 = 0.2 < 0.5
    assert sampler(penalty_last_n=-1, **kw).sample(x, history) == 3
    assert sampler(penalty_last_n=0, **kw).sample(x, history) == 0  # disabled
    assert sampler(repeat_penalty=100.0, penalty_last_n=1).sample(x, history) == 2  # 2 / 100 = 0.02
    # negative logits are multiplied: -1 * 0.5 = -0.5 beats -0.9
    assert sampler(repeat_penalty=0.5).sample(f32([-1.0, -0.9]), [0]) == 0


def test_penalties_apply_before_sampling():
    x = f32([5.0, 4.9, -10.0])
    s = sampler(temperature=1.0, top_k=1, presence_penalty=1.0, seed=1)
    assert {s.sample(x, [0]) for _ in range(50)} == {1}


# ---------------------------------------------------------------- truncation and temperature


@pytest.mark.parametrize("cfg", [
    {"top_k": 5},
    {"top_p": 0.7},
    {"min_p": 0.2},
    {"top_k": 12, "top_p": 0.9, "min_p": 0.05},
    {"top_k": 8, "temperature": 0.6},
    {"top_p": 0.8, "temperature": 1.7},
    {"top_k": 20, "top_p": 0.95, "min_p": 0.05, "temperature": 0.8},  # llama.cpp's usual defaults
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_truncation_distribution(cfg):
    rng = np.random.default_rng(7)
    x = f32(rng.standard_normal(40) * 1.5)
    cfg = {"temperature": 1.0, **cfg}
    want = kept_distribution(x, **cfg)
    got = empirical(sampler(seed=123, **cfg), x)
    assert np.all(got[want == 0] == 0), "a token outside the kept set was drawn"
    assert np.abs(got - want).max() < 0.02
    assert (want > 0).sum() < len(x)  # the case really truncated


@pytest.mark.parametrize("n_vocab,cfg", [
    (3000, {"top_k": 37}),                    # heap selection
    (200, {"top_k": 150}),                    # large k: nth_element
    (3000, {"top_p": 0.5}),                   # top-p by mass quickselect over the unranked vocabulary
    (3000, {"top_p": 0.9}),
    (3000, {"top_p": 0.97}),
    (3000, {"min_p": 0.02}),
    (3000, {"top_k": 60, "top_p": 0.8, "min_p": 0.01}),
    (3000, {"top_p": 0.95, "min_p": 0.005}),
], ids=lambda c: str(c))
def test_kept_set_exact(n_vocab, cfg):
    """A huge temperature makes every kept token equally likely, so enough draws reveal the kept set,
    which must equal the numpy reference exactly."""
    rng = np.random.default_rng(n_vocab + len(cfg))
    for trial in range(3):
        x = f32(rng.standard_normal(n_vocab) * 4)
        x[rng.integers(0, n_vocab, 5)] = x.max()  # ties at the top: ranked by id
        if trial == 2:
            x = f32(np.round(x * 4) / 4)  # ties everywhere, so also at the cut
        want = np.nonzero(kept_distribution(x, **cfg))[0]
        assert 1 < len(want) <= 300
        s = sampler(temperature=1e30, seed=trial, **cfg)
        got = np.unique([s.sample(x, []) for _ in range(max(2000, 25 * len(want)))])
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("temperature", [0.25, 0.5, 1.0, 2.0, 5.0])
def test_temperature_scales_logits(temperature):
    x = f32(np.linspace(-2, 2, 12))
    want = softmax(x / np.float32(temperature))
    got = empirical(sampler(temperature=temperature, seed=5), x)
    assert np.abs(got - want).max() < 0.02


def test_truncation_happens_before_temperature():
    """top-p cuts on the temperature-1 distribution: a hot temperature must not bring back cut tokens."""
    x = f32([3.0, 2.0, 0.0, -1.0])  # p(T=1) = .705 .259 .035 .013: top_p 0.9 keeps {0, 1}
    s = sampler(temperature=10.0, top_p=0.9, seed=2)
    got = empirical(s, x, n=5000)
    assert set(np.nonzero(got)[0]) == {0, 1}
    np.testing.assert_allclose(got[:2], softmax(x[:2] / 10.0), atol=0.03)


def test_single_candidate_edges():
    rng = np.random.default_rng(3)
    for seed in range(20):
        x = f32(rng.standard_normal(500))
        best = int(np.argmax(x))
        assert sampler(temperature=1.5, top_k=1, seed=seed).sample(x, []) == best
        assert sampler(temperature=1.5, top_p=1e-6, seed=seed).sample(x, []) == best
        assert sampler(temperature=1.5, min_p=1.0, seed=seed).sample(x, []) == best
    assert sampler(temperature=1.0).sample(f32([4.2]), []) == 0
    # top_k beyond the vocabulary is no truncation
    assert sampler(temperature=1.0, top_k=1000, seed=1).sample(f32([0.0, 0.0]), []) in (0, 1)


def test_tiny_temperature_is_greedy_and_huge_is_uniform():
    x = f32([0.0, 1.0, 0.999, -3.0])
    assert {sampler(temperature=1e-40, seed=s).sample(x, []) for s in range(30)} == {1}
    got = empirical(sampler(temperature=1e30, seed=9), x, n=8000)
    assert np.abs(got - 0.25).max() < 0.03


# ---------------------------------------------------------------- NaN / inf


def test_nan_logits_never_chosen():
    x = f32([np.nan, 1.0, np.nan, 0.5, np.nan])
    assert sampler().sample(x, []) == 1
    for cfg in [{}, {"top_k": 3}, {"top_p": 0.99}, {"min_p": 0.01}]:
        got = empirical(sampler(temperature=1.0, seed=4, **cfg), x, n=3000)
        assert got[[0, 2, 4]].sum() == 0
    with pytest.raises(ValueError, match="NaN or -inf"):
        sampler().sample(f32([np.nan, -np.inf]), [])
    with pytest.raises(ValueError, match="NaN or -inf"):
        sampler(temperature=1.0).sample(f32([np.nan, np.nan]), [])


def test_infinite_logits():
    x = f32([0.0, np.inf, 5.0, np.inf, -np.inf])
    assert sampler().sample(x, []) == 1
    got = empirical(sampler(temperature=1.0, seed=8), x, n=4000)
    assert set(np.nonzero(got)[0]) == {1, 3}
    assert abs(got[1] - 0.5) < 0.03
    got = empirical(sampler(temperature=1.0, seed=8), f32([0.0, -np.inf, 0.0]), n=2000)
    assert got[1] == 0


# ---------------------------------------------------------------- randomness


def test_seeds_and_reseed():
    x = f32(np.random.default_rng(11).standard_normal(300))
    cfg = {"temperature": 1.0, "top_k": 50}

    def run(s, n=200):
        return [s.sample(x, []) for _ in range(n)]

    a = run(sampler(seed=42, **cfg))
    assert run(sampler(seed=42, **cfg)) == a
    assert run(sampler(seed=43, **cfg)) != a
    s = sampler(seed=7, **cfg)
    run(s, 50)
    s.reseed(42)
    assert s.params.seed == 42
    assert run(s) == a


class MT19937_64:
    """The generator the C++ standard specifies for std::mt19937_64, in pure Python."""

    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.mt = [seed & self.MASK]
        for i in range(1, 312):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & self.MASK)
        self.i = 312

    def __call__(self):
        if self.i >= 312:
            mt, lower = self.mt, (1 << 31) - 1
            for k in range(312):
                x = (mt[k] & ~lower & self.MASK) | (mt[(k + 1) % 312] & lower)
                mt[k] = mt[(k + 156) % 312] ^ (x >> 1) ^ (0xB5026F5AA96619E9 if x & 1 else 0)
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK


def test_draws_are_reproducible_bit_for_bit():
    """Each draw = inverse CDF at (raw 64-bit output >> 11) * 2^-53 over softmax in id order, nothing
    implementation-defined: a pure-Python MT19937-64 predicts every token."""
    ref = MT19937_64(5489)
    for _ in range(9999):
        ref()
    assert ref() == 9981545732273789042  # the value the C++ standard requires of the 10000th output

    x = f32(np.random.default_rng(1).standard_normal(64))
    w = np.exp(x.astype(np.float64) - np.float64(x.max()))  # temperature 1, no truncation: id order
    cum = np.cumsum(w)
    rng, s = MT19937_64(2024), sampler(temperature=1.0, seed=2024)
    for _ in range(500):
        u = (rng() >> 11) * 2.0**-53
        assert s.sample(x, []) == int(np.argmax(cum > u * w.sum()))


def test_every_sample_consumes_one_draw():
    """Even a single surviving candidate consumes a draw, so the stream never depends on truncation."""
    x = f32(np.random.default_rng(2).standard_normal(64))
    a = sampler(temperature=1.0, seed=9)
    a.sample(f32([1.0]), [])
    ref = MT19937_64(9)
    ref()
    w = np.exp(x.astype(np.float64) - np.float64(x.max()))
    assert a.sample(x, []) == int(np.argmax(np.cumsum(w) > (ref() >> 11) * 2.0**-53 * w.sum()))


# ---------------------------------------------------------------- validation and the binding


@pytest.mark.parametrize("name,value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_k", -1), ("top_p", 0.0), ("top_p", 1.01), ("top_p", float("nan")),
    ("min_p", -0.01), ("min_p", 1.5), ("repeat_penalty", 0.0), ("repeat_penalty", -1.0),
    ("repeat_penalty", float("inf")), ("frequency_penalty", float("nan")),
    ("presence_penalty", float("-inf")),
    ("penalty_last_n", -2),
])
def test_invalid_parameters(name, value):
    with pytest.raises(ValueError, match=f"{name} = .* expected"):
        SP(**{name: value})
    p = SP()
    setattr(p, name, value)  # fields are writable: Sampler validates again
    with pytest.raises(ValueError, match=name):
        _core.Sampler(p)
    with pytest.raises(ValueError, match=name):
        p.validate()


def test_params_defaults_and_fields():
    p = SP()
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.0, 0, 1.0, 0.0)
    assert (p.repeat_penalty, p.frequency_penalty, p.presence_penalty) == (1.0, 0.0, 0.0)
    assert (p.penalty_last_n, p.seed) == (64, 0)
    p = SP(temperature=0.5, top_k=3, seed=2**64 - 1, penalty_last_n=-1)
    assert (p.temperature, p.top_k, p.seed, p.penalty_last_n) == (0.5, 3, 2**64 - 1, -1)
    assert "top_k=3" in repr(p)
    with pytest.raises(TypeError):
        SP(0.5)  # keyword-only
    assert _core.Sampler(p).params.top_k == 3


def test_bad_inputs():
    s = sampler()
    for bad in [np.zeros(4, np.float64), np.zeros((2, 4), np.float32), np.zeros(8, np.float32)[::2],
                np.zeros(4, ">f4"), np.zeros(0, np.float32)]:
        with pytest.raises(ValueError, match="logits|n_vocab"):
            s.sample(bad, [])
    with pytest.raises(ValueError, match=r"history\[1\] = 4 .*n_vocab = 4"):
        s.sample(np.zeros(4, np.float32), [0, 4])
    with pytest.raises(ValueError, match=r"history\[0\] = -1"):
        s.sample(np.zeros(4, np.float32), [-1])
    # any float32 buffer works, and the array is read in place, not modified
    import array
    assert s.sample(array.array("f", [0.0, 2.0, 1.0]), []) == 1
    x = f32([1.0, np.nan, 3.0])
    x.setflags(write=False)
    sampler(temperature=1.0, repeat_penalty=3.0).sample(x, [0, 2])
    np.testing.assert_array_equal(x, f32([1.0, np.nan, 3.0]))


def test_threads():
    """sample() releases the GIL; samplers in threads give their sequential streams, and a shared one is
    serialized (the same multiset of tokens as one thread drawing them all)."""
    from concurrent.futures import ThreadPoolExecutor

    x = f32(np.random.default_rng(4).standard_normal(20000))
    cfg = {"temperature": 1.0, "top_p": 0.9}

    def run(s, n=100):
        return [s.sample(x, [1, 2, 3]) for _ in range(n)]

    want = [run(sampler(seed=i, **cfg)) for i in range(4)]
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(lambda i: run(sampler(seed=i, **cfg)), range(4))) == want
        shared = sampler(seed=99, **cfg)
        got = [token for tokens in ex.map(lambda _: run(shared), range(4)) for token in tokens]
    assert sorted(got) == sorted(run(sampler(seed=99, **cfg), 400))
