"""Statistics across runs: the analyses of published therapy-model studies.

- `data`: stored runs -> one tidy table of session-level scores, with compatibility checks.
- `mixed`: linear mixed model: omnibus Wald chi-square, EMMs, Holm-Sidak contrasts, ICC, R-squared.
- `nonparametric`: Friedman, Kruskal-Wallis, chi-square on rating counts, effect sizes.
- `winrate`: head-to-head win rates with exact sign tests and Wilson intervals; Bradley-Terry.
"""
