# Times rpact::getSimulationMultiArmRates on the design that tests/design/test_rpact_multiarm.py
# shows ductal reproduces (3 treatments + control, 2 stages of 20 per arm, keep the best arm).
# Usage: Rscript benchmarks/r/design_rpact_multiarm.R [iterations]; prints "iterations_per_second N".
suppressPackageStartupMessages(library(rpact))
args <- commandArgs(trailingOnly = TRUE)
iterations <- if (length(args) > 0) as.integer(args[[1]]) else 1000
design <- getDesignInverseNormal(kMax = 2, typeOfDesign = "asUser",
                                 userAlphaSpending = c(0, 0.025))
elapsed <- system.time(
  getSimulationMultiArmRates(
    design = design, activeArms = 3, typeOfShape = "userDefined",
    effectMatrix = matrix(c(0.35, 0.45, 0.55), nrow = 1), piControl = 0.3,
    typeOfSelection = "best", effectMeasure = "effectEstimate", intersectionTest = "Sidak",
    plannedSubjects = c(20, 40), maxNumberOfIterations = iterations, seed = 1
  )
)[["elapsed"]]
cat("iterations_per_second", iterations / elapsed, "\n")
