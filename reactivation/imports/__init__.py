"""Bulk imports of customers and activity (CSV and XLSX), fast and set-based. See docs/import.md."""
