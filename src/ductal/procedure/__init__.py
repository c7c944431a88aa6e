"""Ductoscopy and ductal lavage: checks, the procedure record, rules, course, results, sheets."""
