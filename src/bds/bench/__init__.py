"""`bds bench`: a grid of defenses x harmful ratios x tasks x seeds, run cell by cell
(resumable, cheapest first), reported with paired bootstrap confidence intervals."""
