# Read the SAS, SPSS and Stata files ductal writes with R's haven and record what R sees:
# values, variable labels and value labels. The output is a test fixture
# (tests/exchange/fixtures/haven_baseline.json); the tests never need R.
#
#   .venv/bin/python tests/exchange/make_stat_fixture_files.py /tmp/statfiles
#   Rscript tests/exchange/r/read_stat_exports.R /tmp/statfiles tests/exchange/fixtures/haven_baseline.json
suppressMessages({library(haven); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
folder <- args[1]
describe <- function(df) {
  cols <- list()
  for (name in names(df)) {
    x <- df[[name]]
    labels <- attr(x, "labels")
    values <- if (inherits(x, "Date")) format(x, "%Y-%m-%d") else as.vector(zap_labels(x))
    cols[[name]] <- list(
      label = if (is.null(attr(x, "label"))) NA else attr(x, "label"),
      values = values,
      value_labels = if (is.null(labels)) NULL else as.list(setNames(names(labels), labels))
    )
  }
  cols
}
out <- list(
  stata = describe(read_dta(file.path(folder, "baseline.dta"))),
  spss = describe(read_sav(file.path(folder, "baseline.sav"))),
  sas = describe(read_xpt(file.path(folder, "baseline.xpt")))
)
write_json(out, args[2], auto_unbox = TRUE, na = "null", digits = NA, pretty = TRUE)
