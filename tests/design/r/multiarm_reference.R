# Reference operating characteristics from rpact::getSimulationMultiArmRates for designs that
# ductal's simulator can express exactly: three treatment arms and a control, two stages,
# 20 patients per arm at stage 1 and 20 more per remaining arm at stage 2, no early stopping
# (all alpha spent at the final stage; Sidak intersection tests, whose adjusted p-values stay
# below 1, so that rpact's closed test never stops for futility at the interim), and the
# treatment arm(s) with the best effect estimate
# (p_i - p_control, i.e. the most responders at equal n; ties to the first arm as which.max)
# kept at the interim. Run from the repository root (about 8 minutes):
#   Rscript tests/design/r/multiarm_reference.R
# writes tests/design/fixtures/rpact_multiarm.json.
suppressPackageStartupMessages({
  library(rpact)
  library(jsonlite)
})

iterations <- 10000
design <- getDesignInverseNormal(kMax = 2, typeOfDesign = "asUser",
                                 userAlphaSpending = c(0, 0.025))
scenarios <- list(
  list(name = "null", control = 0.3, treatments = c(0.3, 0.3, 0.3)),
  list(name = "graded", control = 0.3, treatments = c(0.35, 0.45, 0.55))
)
out <- list()
for (selection in c("best", "rBest")) {
  for (sc in scenarios) {
    args <- list(
      design = design, activeArms = 3, typeOfShape = "userDefined",
      effectMatrix = matrix(sc$treatments, nrow = 1),
      piControl = sc$control, typeOfSelection = selection, effectMeasure = "effectEstimate",
      intersectionTest = "Sidak", plannedSubjects = c(20, 40),
      maxNumberOfIterations = iterations, seed = 20240601
    )
    if (selection == "rBest") args$rValue <- 2
    sim <- do.call(getSimulationMultiArmRates, args)
    # selectedArms[stage, scenario, arm (treatments then control)]
    out[[length(out) + 1]] <- list(
      selection = selection, keep = if (selection == "rBest") 2 else 1,
      scenario = sc$name, control = sc$control, treatments = sc$treatments,
      iterations = iterations,
      selectedStage2 = as.numeric(sim$selectedArms[2, 1, 1:3]),
      expectedNumberOfSubjects = sim$expectedNumberOfSubjects[1],
      futilityStop = sim$futilityStop[1]
    )
  }
}
timing_iterations <- 500
elapsed <- system.time(
  getSimulationMultiArmRates(
    design = design, activeArms = 3, typeOfShape = "userDefined",
    effectMatrix = matrix(c(0.35, 0.45, 0.55), nrow = 1), piControl = 0.3,
    typeOfSelection = "best", intersectionTest = "Sidak", plannedSubjects = c(20, 40),
    maxNumberOfIterations = timing_iterations, seed = 1
  )
)[["elapsed"]]
writeLines(toJSON(list(rpact = as.character(packageVersion("rpact")), cases = out),
                  digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/design/fixtures/rpact_multiarm.json")
cat("rpact iterations per second:", timing_iterations / elapsed, "\n")
