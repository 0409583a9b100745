"""Seeds, confidence intervals and the "best" verdict of a study report.

A study's runs that differ only by ``seed`` are repeats of one configuration: the report shows
their mean with a 95 % Student-t interval (``n - 1`` degrees of freedom), and names a best
configuration only when it is backed by enough seeds and its interval is clear of every other
configuration's. One run per configuration cannot tell a real difference from seed noise, so a
single-seed winner is never starred: the verdict says why it is inconclusive instead.

The t quantile is computed here (regularised incomplete beta, bisection) rather than taken from
scipy, so the tests can check it against ``scipy.stats.t`` as an independent route.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from featlab.tools.study_runs import RunRecord, as_number, sort_token

SEED_KEYS = ("seed",)  # train.yaml's top-level `seed`; a sweep over it repeats one configuration
CONFIDENCE = 0.95
MIN_SEEDS = 3  # fewer cannot support a ranking (the rule), whatever the intervals say


# -- Student t ------------------------------------------------------------------------------------
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's continued fraction for the incomplete beta function (converges for x < (a+1)/(a+b+2))."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b  # I_x(a,b) = 1 - I_(1-x)(b,a)


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with ``dof`` degrees of freedom."""
    tail = 0.5 * incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, dof: float) -> float:
    """The t with P(T <= t) = p (0.5 < p < 1), by bisection on :func:`t_cdf`."""
    if not 0.5 < p < 1.0 or dof <= 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and dof > 0, got p={p}, dof={dof}")
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, dof) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and the half-width of its two-sided interval (None for one value)."""

    n: int
    mean: float
    half_width: float | None

    @property
    def low(self) -> float:
        return self.mean - (self.half_width or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half_width or 0.0)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n-1} · s / sqrt(n), s the sample standard deviation (n - 1 in its denominator)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(1, mean, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(n, mean, t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n))


# -- configurations -------------------------------------------------------------------------------
def config_keys(keys: Sequence[str]) -> list[str]:
    """The swept keys that name a configuration (every one but the seed)."""
    return [k for k in keys if k not in SEED_KEYS]


def run_seed(run: RunRecord) -> str:
    """The run's seed as given on the command line, else as recorded in its config."""
    for key in SEED_KEYS:
        if key in run.overrides:
            return str(run.overrides[key])
        if key in run.config:
            return str(run.config[key])
    return "—"


@dataclass
class ConfigGroup:
    """The runs of one configuration (equal in every swept key but the seed)."""

    values: tuple[str, ...]
    runs: list[RunRecord] = field(default_factory=list)

    def scores(self, metric: str) -> list[float]:
        scored = (as_number(r.metrics.get(metric)) for r in self.runs if r.ok)
        return [v for v in scored if v is not None]

    def interval(self, metric: str) -> Interval | None:
        scores = self.scores(metric)
        return mean_ci(scores) if scores else None

    def seeds(self, metric: str) -> list[str]:
        return [run_seed(r) for r in self.runs if r.ok and as_number(r.metrics.get(metric)) is not None]


def group_runs(runs: Sequence[RunRecord], keys: Sequence[str]) -> list[ConfigGroup]:
    """Runs grouped by configuration, in the report's order of swept values."""
    groups: dict[tuple[str, ...], ConfigGroup] = {}
    for run in runs:
        values = tuple(run.overrides.get(k, "—") for k in config_keys(keys))
        groups.setdefault(values, ConfigGroup(values)).runs.append(run)
    return sorted(groups.values(), key=lambda g: [sort_token(v) for v in g.values])


def describe_group(group: ConfigGroup, keys: Sequence[str]) -> str:
    from featlab.loggers import short_names

    names = short_names(config_keys(keys))
    return ", ".join(f"{names[k]}={v}" for k, v in zip(config_keys(keys), group.values)) or "all runs"


@dataclass(frozen=True)
class Verdict:
    """Which configuration is best, or why none can be named."""

    best: ConfigGroup | None
    text: str


def verdict(groups: Sequence[ConfigGroup], keys: Sequence[str], metric: str, mode: str,
            min_seeds: int = MIN_SEEDS) -> Verdict:
    """A best configuration only when every configuration has ``min_seeds`` distinct finished seeds
    (a failed or missing seed counts as absent, a rerun of one seed once) and the leader's interval lies entirely above (max) or below
    (min) every other configuration's."""
    scored = [(g, g.interval(metric)) for g in groups]
    scored = [(g, i) for g, i in scored if i is not None]
    if not scored:
        return Verdict(None, f"no finished run has {metric}")
    if len(scored) == 1:
        return Verdict(None, f"one configuration ({describe_group(scored[0][0], keys)}): nothing to rank")
    sign = 1.0 if mode == "max" else -1.0
    leader, lead = max(scored, key=lambda gi: sign * gi[1].mean)
    # distinct seeds: a rerun of the same seed is not a new sample; failed/missing seeds are absent
    short = [g for g in groups if len(set(g.seeds(metric))) < min_seeds]
    if short:
        return Verdict(None, f"inconclusive: fewer than {min_seeds} seeds in {len(short)} of {len(groups)} "
                             "configurations: the best mean is not a ranking")
    overlapping = [g for g, i in scored if g is not leader
                   and (i.high >= lead.low if mode == "max" else i.low <= lead.high)]
    if overlapping:
        others = "; ".join(describe_group(g, keys) for g in overlapping)
        return Verdict(None, f"inconclusive: intervals overlap (the leader {describe_group(leader, keys)} "
                             f"overlaps {others})")
    return Verdict(leader, f"{describe_group(leader, keys)}: its {CONFIDENCE:.0%} interval separates from every "
                           "other configuration's")


# -- baselines ------------------------------------------------------------------------------------
# What a result must be read against, found in results.json as ``<metric>_<suffix>`` (tasks log
# them beside the metric): bicubic upscaling, the HR-input ceiling, the backbone before training
# (random init when pretrained=false), chance level, and a fixed spatial split (slots: position-only
# regions scored on the same test images).
BASELINE_SUFFIXES = {"bicubic": "bicubic", "hr": "HR ceiling", "init": "at initialisation", "chance": "chance",
                     "fixed_split": "fixed spatial split"}
# Chance levels that need no logging: the adjusted Rand index is 0 in expectation for random labels.
KNOWN_CHANCE = {"fg_ari": 0.0, "ari": 0.0}


@dataclass(frozen=True)
class Baseline:
    label: str
    key: str
    value: float


def baselines(runs: Sequence[RunRecord], metric: str) -> list[Baseline]:
    """Reference levels for ``metric``: the mean over finished runs of each ``<metric>_<suffix>``
    (the same stage first, then the other of val/test), plus known chance levels."""
    stage, _, name = metric.rpartition("/")
    other = {"val": "test", "test": "val"}.get(stage)
    found: list[Baseline] = []
    for suffix, label in BASELINE_SUFFIXES.items():
        for prefix in (stage, other):
            if prefix is None:
                continue
            key = f"{prefix}/{name}_{suffix}" if prefix else f"{name}_{suffix}"
            values = [v for v in (as_number(r.metrics.get(key)) for r in runs if r.ok) if v is not None]
            if values:
                found.append(Baseline(label, key, math.fsum(values) / len(values)))
                break
    if name in KNOWN_CHANCE and not any(b.label == "chance" for b in found):
        found.append(Baseline("chance", f"{name} of random labels", KNOWN_CHANCE[name]))
    return found
