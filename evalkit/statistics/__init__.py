"""Statistics across runs, with the persona as the unit of replication throughout.

- `mixed`: linear mixed model (REML, `reml`): omnibus F on containment df, EMMs, Holm-Sidak contrasts, ICC, R-squared;
  not estimable (NotEstimable) when too few personas or cells carry the condition effect.
- `nonparametric`: Friedman over persona blocks, the rating-count chi-square with a within-persona permutation p,
  descriptive effect sizes.
- `winrate`: persona win rates with exact sign tests and Wilson intervals; Bradley-Terry by maximum likelihood with
  intervals clustered by persona, absent under separation.
- `multiplicity`: Holm within a family of tests (primary or exploratory metrics).
- `proportion`: a share over sessions with its interval clustered by persona (the critical-failure share).
- `noninferiority`: the gate's decision over persona means, and planning in personas x replicates.
"""
