# Reference values for tests/design: group-sequential boundaries and two-arm sample sizes
# from rpact. Run from the repository root:
#   Rscript tests/design/r/design_reference.R
# writes tests/design/fixtures/rpact_boundaries.json and rpact_sample_size_rates.json.
suppressPackageStartupMessages({
  library(rpact)
  library(jsonlite)
})

boundaries <- list()
for (kMax in c(2, 3, 5)) {
  for (alpha in c(0.025, 0.05)) {
    for (beta in c(0.1, 0.2)) {
      for (type in c("OF", "P", "asOF", "asP")) {
        d <- getDesignGroupSequential(kMax = kMax, alpha = alpha, beta = beta, sided = 1,
                                      typeOfDesign = type)
        ch <- getDesignCharacteristics(d)
        boundaries[[length(boundaries) + 1]] <- list(
          looks = kMax, alpha = alpha, beta = beta, type = type,
          criticalValues = d$criticalValues,
          stageLevels = d$stageLevels,
          alphaSpent = d$alphaSpent,
          inflationFactor = ch$inflationFactor,
          shift = ch$shift,
          rejectionProbabilities = ch$rejectionProbabilities,
          power = ch$power,
          averageSampleNumber0 = ch$averageSampleNumber0,
          averageSampleNumber01 = ch$averageSampleNumber01,
          averageSampleNumber1 = ch$averageSampleNumber1
        )
      }
    }
  }
}
writeLines(toJSON(list(rpact = as.character(packageVersion("rpact")), designs = boundaries),
                  digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/design/fixtures/rpact_boundaries.json")

cases <- list(
  list(pi1 = 0.9, pi2 = 0.9, margin = 0.15, alpha = 0.025, power = 0.8),
  list(pi1 = 0.9, pi2 = 0.9, margin = 0.15, alpha = 0.025, power = 0.9),
  list(pi1 = 0.85, pi2 = 0.87, margin = 0.15, alpha = 0.025, power = 0.8),
  list(pi1 = 0.8, pi2 = 0.85, margin = 0.1, alpha = 0.025, power = 0.8),
  list(pi1 = 0.6, pi2 = 0.4, margin = 0, alpha = 0.025, power = 0.9),
  list(pi1 = 0.3, pi2 = 0.2, margin = 0, alpha = 0.05, power = 0.8)
)
rates <- lapply(cases, function(cs) {
  x <- getSampleSizeRates(groups = 2, thetaH0 = -cs$margin, pi1 = cs$pi1, pi2 = cs$pi2,
                          alpha = cs$alpha, beta = 1 - cs$power, sided = 1,
                          normalApproximation = TRUE)
  c(cs, list(nFixed1 = x$nFixed1))
})
writeLines(toJSON(list(rpact = as.character(packageVersion("rpact")), cases = rates),
                  digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "tests/design/fixtures/rpact_sample_size_rates.json")
