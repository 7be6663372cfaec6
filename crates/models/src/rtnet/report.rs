//! INT8 report.
