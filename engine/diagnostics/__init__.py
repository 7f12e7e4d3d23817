"""Diagnostics: store reports (inspect, verify); bundles, audit log and anomalies come later."""
