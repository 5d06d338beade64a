"""The marketer's web app: sign-in and roles, pages built from stored results, server-side charts."""
