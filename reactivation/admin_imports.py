"""Admin for bulk imports (ImportJob and the import pages). Imported by reactivation/admin.py."""
