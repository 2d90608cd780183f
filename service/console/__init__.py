"""The console: a small web app on ``server.admin_bind`` (never on a public listener)."""
