# Time survival::survfit (Kaplan-Meier with log CIs) on a CSV written by benchmarks/stats_km.py.
# Usage: Rscript benchmarks/r/stats_km.R DATA.csv REPEATS
# Prints the fastest elapsed time of the computation alone (CSV reading excluded), in seconds.
suppressPackageStartupMessages(library(survival))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
repeats <- as.integer(args[2])
best <- Inf
for (i in seq_len(repeats)) {
  el <- system.time(fit <- survfit(Surv(time, event) ~ 1, data = d, conf.type = "log"))[["elapsed"]]
  best <- min(best, el)
}
cat(sprintf("%.6f %d %.10f\n", best, length(fit$time), fit$surv[length(fit$surv) %/% 2]))
