# Reference values for ductal's statistics tests, computed by R.
#
# Run from the repository root:  Rscript tests/stats/r/make_fixtures.R
# Needs Debian's r-base-core, r-cran-survival, r-cran-cmprsk and r-cran-jsonlite.
# Writes the datasets as CSV and every reference value into tests/stats/fixtures/.
# The test suite reads only these files; it never runs R.

suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
  library(jsonlite)
})

out_dir <- "tests/stats/fixtures"
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
write_data <- function(df, name) {
  write.csv(df, file.path(out_dir, paste0(name, ".csv")), row.names = FALSE, na = "")
}
num <- function(x) as.numeric(unname(x))

# ---------------------------------------------------------------- datasets
aml_df <- data.frame(time = aml$time, status = aml$status, x = as.character(aml$x))
ovarian_df <- ovarian
mg <- mgus2[complete.cases(mgus2), ]
mgus2_df <- data.frame(
  id = mg$id, age = mg$age, male = as.integer(mg$sex == "M"), hgb = mg$hgb,
  creat = mg$creat, mspike = mg$mspike, futime = mg$futime, death = mg$death,
  etime = ifelse(mg$pstat == 0, mg$futime, mg$ptime),
  event = ifelse(mg$pstat == 0, 2L * mg$death, 1L)
)
mgus2_df$sex <- ifelse(mgus2_df$male == 1, "M", "F")

# A synthetic, heavily censored set with ties at every time and some zero times.
set.seed(20261121)
n <- 240
grp <- sample(c("A", "B", "C"), n, replace = TRUE)
x1 <- round(rnorm(n), 3)
x2 <- rbinom(n, 1, 0.4)
rate <- 0.08 * exp(0.4 * x1 + 0.5 * x2 + ifelse(grp == "B", 0.3, 0))
t_event <- rexp(n, rate)
t_cens <- runif(n, 0, 14)
time <- pmin(floor(pmin(t_event, t_cens)), 12)
event <- as.integer(t_event <= t_cens & floor(t_event) <= 12)
status <- ifelse(event == 1, ifelse(runif(n) < 0.7, 1L, 2L), 0L)
tied_df <- data.frame(
  id = seq_len(n), time = time, event = as.integer(status == 1), status = status,
  group = grp, stratum = sample(c("s1", "s2"), n, replace = TRUE), x1 = x1, x2 = x2
)
# Binary response for logistic regression.
age <- round(rnorm(n, 35, 7))
lp <- -1 + 0.04 * (age - 35) + 0.8 * x2 - 0.5 * x1
tied_df$age <- age
tied_df$cr <- rbinom(n, 1, plogis(lp + 1.5))

write_data(aml_df, "aml")
write_data(ovarian_df, "ovarian")
write_data(mgus2_df, "mgus2")
write_data(tied_df, "tied")

ref <- list()

# ---------------------------------------------------------------- proportions
prop_cases <- list(c(30, 32, 0.63), c(0, 10, 0.2), c(10, 10, 0.9), c(5, 20, 0.1), c(1, 1, 0.5),
                   c(17, 40, 0.5), c(59, 69, 0.8), c(62, 71, 0.87), c(3, 150, 0.01))
ref$proportions <- lapply(prop_cases, function(cc) {
  x <- cc[1]; nn <- cc[2]; p0 <- cc[3]
  bt <- function(alt) binom.test(x, nn, p0, alternative = alt)
  wil <- suppressWarnings(prop.test(x, nn, correct = FALSE)$conf.int)
  # prop.test's continuity correction equals Newcombe's only when |x - n/2| >= 1/2.
  wcc <- suppressWarnings(prop.test(x, nn, correct = TRUE)$conf.int)
  list(x = x, n = nn, p0 = p0,
       cp_lower = bt("two.sided")$conf.int[1], cp_upper = bt("two.sided")$conf.int[2],
       cp90_lower = binom.test(x, nn, conf.level = 0.9)$conf.int[1],
       cp90_upper = binom.test(x, nn, conf.level = 0.9)$conf.int[2],
       p_two_sided = bt("two.sided")$p.value, p_greater = bt("greater")$p.value,
       p_less = bt("less")$p.value,
       wilson_lower = wil[1], wilson_upper = wil[2],
       wilson_cc_lower = wcc[1], wilson_cc_upper = wcc[2],
       wilson_cc_valid = abs(x - nn / 2) >= 0.5)
})

# ---------------------------------------------------------------- two proportions
wilson <- function(x, n, z) {
  p <- x / n
  c((2 * n * p + z^2 - z * sqrt(z^2 + 4 * n * p * (1 - p))) / (2 * (n + z^2)),
    (2 * n * p + z^2 + z * sqrt(z^2 + 4 * n * p * (1 - p))) / (2 * (n + z^2)))
}
two_cases <- list(c(59, 69, 62, 71), c(56, 70, 48, 80), c(9, 10, 3, 10), c(6, 7, 2, 7),
                  c(5, 56, 0, 29), c(30, 32, 25, 31), c(12, 40, 20, 41))
ref$two_proportions <- lapply(two_cases, function(cc) {
  x1 <- cc[1]; n1 <- cc[2]; x2 <- cc[3]; n2 <- cc[4]
  z <- qnorm(0.975)
  p1 <- x1 / n1; p2 <- x2 / n2; d <- p1 - p2
  # Wald interval without continuity correction, as prop.test(correct = FALSE) reports it.
  pt <- suppressWarnings(prop.test(c(x1, x2), c(n1, n2), correct = FALSE))
  w1 <- wilson(x1, n1, z); w2 <- wilson(x2, n2, z)
  newc <- c(d - sqrt((p1 - w1[1])^2 + (w2[2] - p2)^2), d + sqrt((w1[2] - p1)^2 + (p2 - w2[1])^2))
  res <- list(x1 = x1, n1 = n1, x2 = x2, n2 = n2, diff = d,
              wald_lower = pt$conf.int[1], wald_upper = pt$conf.int[2],
              newcombe_lower = newc[1], newcombe_upper = newc[2], chisq_p = pt$p.value)
  if (x1 > 0 && x2 > 0 && x1 < n1 && x2 < n2) {
    # Risk ratio and odds ratio with their Wald (log-scale) intervals, from saturated GLMs.
    g <- factor(c("a", "b"), levels = c("b", "a"))
    yy <- cbind(c(x1, x2), c(n1 - x1, n2 - x2))
    tight <- glm.control(epsilon = 1e-13, maxit = 200)
    lr <- glm(yy ~ g, family = binomial(link = "log"), control = tight)
    lo <- glm(yy ~ g, family = binomial, control = tight)
    res$rr <- exp(coef(lr)[2]); ci <- exp(confint.default(lr)[2, ])
    res$rr_lower <- ci[1]; res$rr_upper <- ci[2]
    res$or <- exp(coef(lo)[2]); ci <- exp(confint.default(lo)[2, ])
    res$or_lower <- ci[1]; res$or_upper <- ci[2]
  }
  se <- sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
  res$ni_margin <- -0.15
  res$ni_p_value <- pnorm((d + 0.15) / se, lower.tail = FALSE)
  lapply(res, num)
})

# ---------------------------------------------------------------- Kaplan-Meier
km_ref <- function(formula, data, conf_type, label) {
  fit <- survfit(formula, data = data, conf.type = conf_type)
  strata_names <- if (is.null(fit$strata)) "all" else names(fit$strata)
  sizes <- if (is.null(fit$strata)) length(fit$time) else fit$strata
  idx <- rep(seq_along(sizes), sizes)
  q <- quantile(fit, probs = c(0.25, 0.5, 0.75))
  qrow <- function(m, i) if (is.matrix(m)) num(m[i, ]) else num(m)
  tab <- summary(fit, rmean = "individual")$table
  if (!is.matrix(tab)) tab <- matrix(tab, nrow = 1, dimnames = list(NULL, names(tab)))
  groups <- lapply(seq_along(sizes), function(i) {
    w <- idx == i
    list(name = strata_names[i], time = fit$time[w], n_risk = fit$n.risk[w],
         n_event = fit$n.event[w], n_censor = fit$n.censor[w], surv = fit$surv[w],
         std_err_log = fit$std.err[w], lower = fit$lower[w], upper = fit$upper[w],
         quantile = qrow(q$quantile, i), quantile_lower = qrow(q$lower, i),
         quantile_upper = qrow(q$upper, i),
         table_median = num(tab[i, "median"]),
         rmean = num(tab[i, "rmean"]), rmean_se = num(tab[i, "se(rmean)"]))
  })
  list(label = label, conf_type = conf_type, groups = groups)
}
km_specs <- list(
  list(Surv(time, status) ~ 1, aml_df, "aml"),
  list(Surv(time, status) ~ x, aml_df, "aml_by_x"),
  list(Surv(futime, fustat) ~ 1, ovarian_df, "ovarian"),
  list(Surv(futime, fustat) ~ rx, ovarian_df, "ovarian_by_rx"),
  list(Surv(time, event) ~ 1, tied_df, "tied"),
  list(Surv(time, event) ~ group, tied_df, "tied_by_group"),
  list(Surv(futime, death) ~ sex, mgus2_df, "mgus2_by_sex")
)
ref$km <- list()
for (s in km_specs) for (ct in c("log", "log-log", "plain")) {
  ref$km[[length(ref$km) + 1]] <- km_ref(s[[1]], s[[2]], ct, s[[3]])
}
# Restricted mean at a fixed horizon, and estimates at given times (extend = TRUE).
rm_fit <- survfit(Surv(time, status) ~ 1, data = aml_df)
ref$km_rmean <- lapply(c(10, 30, 48, 100), function(tau) {
  tab <- summary(rm_fit, rmean = tau)$table
  list(tau = tau, rmean = num(tab["rmean"]), se = num(tab["se(rmean)"]))
})
at_fit <- survfit(Surv(futime, fustat) ~ 1, data = ovarian_df)
at_times <- c(0, 100, 365, 500.5, 730, 1000)
sm <- summary(at_fit, times = at_times, extend = TRUE)
ref$km_at <- list(times = at_times, surv = sm$surv, std_err = sm$std.err, lower = sm$lower,
                  upper = sm$upper, n_risk = sm$n.risk)

# ---------------------------------------------------------------- log-rank
lr_ref <- function(formula, data, label) {
  sd <- survdiff(formula, data = data)
  list(label = label, chisq = num(sd$chisq), df = length(sd$n) - 1,
       p = pchisq(sd$chisq, length(sd$n) - 1, lower.tail = FALSE),
       observed = num(if (is.matrix(sd$obs)) rowSums(sd$obs) else sd$obs),
       expected = num(if (is.matrix(sd$exp)) rowSums(sd$exp) else sd$exp))
}
ref$logrank <- list(
  lr_ref(Surv(time, status) ~ x, aml_df, "aml_by_x"),
  lr_ref(Surv(futime, fustat) ~ rx, ovarian_df, "ovarian_by_rx"),
  lr_ref(Surv(time, event) ~ group, tied_df, "tied_by_group"),
  lr_ref(Surv(time, event) ~ group + strata(stratum), tied_df, "tied_by_group_strata"),
  lr_ref(Surv(futime, death) ~ sex, mgus2_df, "mgus2_by_sex")
)

# ---------------------------------------------------------------- cumulative incidence
ci_ref <- function(ftime, fstatus, group, label, strata = NULL) {
  fit <- if (is.null(strata)) cuminc(ftime, fstatus, group) else cuminc(ftime, fstatus, group, strata)
  tests <- fit$Tests
  fit$Tests <- NULL
  times <- sort(unique(ftime))
  tp <- timepoints(fit, times)
  curves <- lapply(names(fit), function(nm) {
    k <- which(rownames(tp$est) == nm)
    list(name = nm, time = times, est = num(tp$est[k, ]), var = num(tp$var[k, ]))
  })
  list(label = label, curves = curves,
       tests = if (is.null(tests)) NULL else list(
         cause = rownames(tests), stat = num(tests[, "stat"]), pv = num(tests[, "pv"]),
         df = num(tests[, "df"])))
}
ref$cuminc <- list(
  ci_ref(mgus2_df$etime, mgus2_df$event, mgus2_df$sex, "mgus2_by_sex"),
  ci_ref(tied_df$time, tied_df$status, tied_df$group, "tied_by_group"),
  ci_ref(tied_df$time, tied_df$status, tied_df$group, "tied_by_group_strata", tied_df$stratum),
  ci_ref(tied_df$time, tied_df$status, rep("all", n), "tied")
)

# ---------------------------------------------------------------- Cox
cox_ref <- function(formula, df, label) {
  fit <- coxph(formula, data = df, ties = "efron", model = TRUE, x = TRUE, y = TRUE,
               control = coxph.control(eps = 1e-11, iter.max = 100))
  zph <- cox.zph(fit)
  cc <- concordance(fit)
  list(label = label, coef = num(coef(fit)), se = num(sqrt(diag(vcov(fit)))),
       names = names(coef(fit)),
       loglik = num(fit$loglik), lrt = num(2 * diff(fit$loglik)),
       score = num(fit$score), wald = num(fit$wald.test),
       concordance = num(cc$concordance), concordance_se = num(sqrt(cc$var)),
       zph_chisq = num(zph$table[, "chisq"]), zph_df = num(zph$table[, "df"]),
       zph_p = num(zph$table[, "p"]), zph_names = rownames(zph$table))
}
ref$cox <- list(
  cox_ref(Surv(futime, fustat) ~ age + ecog.ps + rx, ovarian_df, "ovarian"),
  cox_ref(Surv(futime, death) ~ age + male + hgb, mgus2_df, "mgus2"),
  cox_ref(Surv(time, event) ~ x1 + x2, tied_df, "tied"),
  cox_ref(Surv(time, status) ~ age, within(aml_df, age <- seq_along(time) %% 5), "aml_small")
)

# ---------------------------------------------------------------- Fine-Gray
crr_ref <- function(ftime, fstatus, cov, label, failcode = 1) {
  fit <- crr(ftime, fstatus, cov, failcode = failcode, cencode = 0, gtol = 1e-10, maxiter = 100)
  list(label = label, failcode = failcode, names = colnames(cov), coef = num(fit$coef),
       se = num(sqrt(diag(fit$var))), loglik = num(fit$loglik), converged = fit$converged)
}
ref$finegray <- list(
  crr_ref(mgus2_df$etime, mgus2_df$event, as.matrix(mgus2_df[, c("age", "male")]), "mgus2"),
  crr_ref(mgus2_df$etime, mgus2_df$event, as.matrix(mgus2_df[, c("age", "male")]), "mgus2_cause2", 2),
  crr_ref(tied_df$time, tied_df$status, as.matrix(tied_df[, c("x1", "x2")]), "tied")
)

# ---------------------------------------------------------------- logistic
lg <- glm(cr ~ age + x1 + x2, family = binomial, data = tied_df,
          control = glm.control(epsilon = 1e-14, maxit = 100))
ci <- confint.default(lg)
ref$logistic <- list(names = names(coef(lg)), coef = num(coef(lg)),
                     se = num(sqrt(diag(vcov(lg)))),
                     p = num(summary(lg)$coefficients[, 4]),
                     lower = num(ci[, 1]), upper = num(ci[, 2]),
                     deviance = num(lg$deviance), null_deviance = num(lg$null.deviance))

ref$meta <- list(R = R.version.string, survival = as.character(packageVersion("survival")),
                 cmprsk = as.character(packageVersion("cmprsk")))
writeLines(toJSON(ref, digits = NA, na = "null", auto_unbox = TRUE, null = "null"),
           file.path(out_dir, "r_reference.json"))
cat("wrote", file.path(out_dir, "r_reference.json"), "\n")
