"""The public contract of Tidepool: CRD types, label keys, condition vocabulary. No I/O here."""
