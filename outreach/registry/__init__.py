"""The contact registry: municipalities, people in office, suppressions; import and audience selection."""
