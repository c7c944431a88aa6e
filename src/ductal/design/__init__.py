"""Pure trial design: sample size, two-stage designs, boundaries, adaptive simulation."""
