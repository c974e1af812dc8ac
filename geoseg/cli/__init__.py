"""Command-line interface (`geoseg ...`)."""
