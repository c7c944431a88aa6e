# Time survival::coxph (Efron ties) on a CSV written by benchmarks/stats_cox.py.
# Usage: Rscript benchmarks/r/stats_cox.R DATA.csv REPEATS
# Prints the fastest elapsed time of the fit alone (CSV reading excluded), in seconds,
# and the coefficients so the two fits can be compared.
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
repeats <- as.integer(args[2])
best <- Inf
for (i in seq_len(repeats)) {
  el <- system.time(fit <- coxph(Surv(time, event) ~ x1 + x2 + x3, data = d, ties = "efron"))[["elapsed"]]
  best <- min(best, el)
}
cat(sprintf("%.6f %s\n", best, paste(sprintf("%.10f", coef(fit)), collapse = " ")))
