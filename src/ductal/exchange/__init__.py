"""Data exchange with REDCap, CDISC ODM, FHIR and statistical packages."""
